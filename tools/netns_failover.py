"""Hosts, not just processes: devices and two replicas in separate network namespaces.

Three network namespaces stand for three hosts on this machine: ``ekm-dev`` (the device
host) and ``ekm-r0``, ``ekm-r1`` (one aggregator replica each), joined by two veth pairs from
iproute2 (10.77.0.0/24 to r0, 10.77.1.0/24 to r1).  PostgreSQL runs in the root namespace on
a Unix socket, which the replicas reach through the file system (a database host of its
own would be one more veth pair).  The device processes of ``tools/crash_aggregator.py``
run in ``ekm-dev``, each given both replicas' URLs.  Midway the link to r0 is cut (the veth
end on the device host is set down) for ``--cut-seconds``, then restored.  The harness's
checks then compare the devices' logs with the database: every acknowledged frame merged,
none twice, the weights equal::

    python tools/netns_failover.py --devices 6 --seconds 20 --cut-seconds 8

Needs root (``ip netns``); prints one JSON object, exit status 1 if a check fails.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools import crash_aggregator  # noqa: E402
from tools._pg import PostgresServer  # noqa: E402
from tools._proc import PYTHON, child_env, register_devices  # noqa: E402

DEVICE_NS = "ekm-dev"
PORT = 8750


def ip(*args, ns=None):
    argv = ["ip", *(("netns", "exec", ns, "ip") if ns else ()), *args]
    subprocess.run(argv, check=True)


def make_hosts(n_replicas):
    """The namespaces and veth pairs; returns the replicas' URLs."""
    urls = []
    ip("netns", "add", DEVICE_NS)
    ip("link", "set", "lo", "up", ns=DEVICE_NS)
    for i in range(n_replicas):
        ns = f"ekm-r{i}"
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", ns=ns)
        ip("link", "add", f"ekmd{i}", "type", "veth", "peer", "name", f"ekmr{i}")
        ip("link", "set", f"ekmd{i}", "netns", DEVICE_NS)
        ip("link", "set", f"ekmr{i}", "netns", ns)
        ip("addr", "add", f"10.77.{i}.1/24", "dev", f"ekmd{i}", ns=DEVICE_NS)
        ip("addr", "add", f"10.77.{i}.2/24", "dev", f"ekmr{i}", ns=ns)
        ip("link", "set", f"ekmd{i}", "up", ns=DEVICE_NS)
        ip("link", "set", f"ekmr{i}", "up", ns=ns)
        urls.append(f"http://10.77.{i}.2:{PORT}")
    return urls


def drop_hosts(n_replicas):
    for ns in [DEVICE_NS] + [f"ekm-r{i}" for i in range(n_replicas)]:
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)


def start_replica(i, db, workdir):
    log = open(os.path.join(workdir, f"replica-{i}.log"), "wb")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", f"ekm-r{i}", PYTHON, "-m", "edgekm", "serve", "--db", db,
         "--host", f"10.77.{i}.2", "--port", str(PORT), "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=child_env())
    log.close()
    probe = (f"import urllib.request; urllib.request.urlopen("
             f"'http://10.77.{i}.2:{PORT}/healthz', timeout=1)")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if subprocess.run(["ip", "netns", "exec", DEVICE_NS, PYTHON, "-c", probe],
                          stderr=subprocess.DEVNULL).returncode == 0:
            return proc
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"replica {i} did not become healthy")


def run(n_devices=6, seconds=20.0, cut_seconds=8.0, workdir=None):
    workdir = workdir or tempfile.mkdtemp(prefix="edgekm-netns-")
    pg = PostgresServer(fsync=True, port=55437)
    replicas, procs = [], []
    drop_hosts(2)
    try:
        db = pg.new_database("netns")
        devices = [f"dev-{i:02d}" for i in range(n_devices)]
        keys = register_devices(db, devices)
        urls = make_hosts(2)
        replicas = [start_replica(i, db, workdir) for i in range(2)]
        stop = os.path.join(workdir, "stop")
        logs, summaries = [], []
        for i, dev in enumerate(devices):
            logs.append(os.path.join(workdir, f"{dev}.jsonl"))
            summaries.append(os.path.join(workdir, f"{dev}.summary.json"))
            order = urls if i % 2 == 0 else urls[::-1]
            argv = ["ip", "netns", "exec", DEVICE_NS, PYTHON,
                    os.path.abspath(crash_aggregator.__file__), "device",
                    *[a for u in order for a in ("--url", u)], "--device", dev,
                    "--key", keys[dev], "--state", os.path.join(workdir, dev),
                    "--log", logs[-1], "--stop", stop, "--summary", summaries[-1],
                    "--seed", str(i), "--drain-seconds", "60"]
            procs.append(subprocess.Popen(argv, env=child_env(), stdout=subprocess.DEVNULL,
                                          stderr=open(os.path.join(workdir, f"{dev}.err"),
                                                      "wb")))
        time.sleep(max(0.0, (seconds - cut_seconds) / 2))
        t_cut = time.time()
        ip("link", "set", "ekmd0", "down", ns=DEVICE_NS)       # r0 cut off from the devices
        time.sleep(cut_seconds)
        ip("link", "set", "ekmd0", "up", ns=DEVICE_NS)
        t_restore = time.time()
        time.sleep(max(0.0, (seconds - cut_seconds) / 2))
        open(stop, "w").close()
        for proc in procs:
            proc.wait(timeout=120)
        for proc in replicas:
            proc.terminate()
            proc.wait(timeout=60)
        result = crash_aggregator.check(db, logs, summaries, [],
                                        [p.returncode for p in procs])
    finally:
        for proc in procs + replicas:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        drop_hosts(2)
        pg.close()
    attempts = []
    for path in logs:
        with open(path) as fh:
            attempts += [json.loads(line) for line in fh if line.strip()]
    during = [a for a in attempts if t_cut <= a["t0"] <= t_restore]
    result.update(
        devices=n_devices, seconds=seconds, cut_seconds=cut_seconds,
        acks_during_cut={u: sum(1 for a in during if a["kind"] == "ack" and a["url"] == u)
                         for u in urls},
        acks_by_replica={u: sum(1 for a in attempts if a["kind"] == "ack" and a["url"] == u)
                         for u in urls})
    if result["ok"]:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        result["workdir"] = workdir
    return result


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=6)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--cut-seconds", type=float, default=8.0)
    args = p.parse_args(argv)
    result = run(args.devices, args.seconds, args.cut_seconds)
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
