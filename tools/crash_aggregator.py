"""Aggregator crash harness: SIGKILL a real ``edgekm serve`` under load, again and again.

Device processes (``DeviceAgent``, each with its own ``state_dir``) ingest
points and sync one frame at a time to an aggregator served by
``python -m edgekm serve`` on a loopback port with a file database.  The
harness SIGKILLs the server ``--kills`` times and restarts it each time.
Half of the kills come at a random moment; the other half come as soon as
the database's write-ahead log changes, that is while the writer thread is
writing a commit.  Every device logs each HTTP attempt (frame id, weight,
send and answer times, outcome) to a JSON-lines file.  Once the kills are
done and enough frames are acknowledged, the devices stop producing, drain
their outboxes and exit.  The harness then checks:

- the set of frames the devices saw acknowledged equals the set of frame
  records in the database;
- no frame was answered "accepted" twice (a retry gets "duplicate");
- the merged weight (``models.total_weight``, the sum of the frame records,
  the sum of the windows and the weight of the all-time aggregate that
  the centroids are fitted on) equals the weight the devices ingested,
  exactly;
- ``PRAGMA integrity_check`` answers ``ok``.

It also counts the kills that cut an upload in flight (a request sent, no
answer yet), and the frames whose retry was answered "duplicate": those were
committed just before a kill, whose answer was lost.

Long variant (docs/reliability.md)::

    python tools/crash_aggregator.py --devices 20 --kills 24 --min-frames 1200

Prints one JSON object; exit status 1 if a check fails.
"""

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools._proc import PYTHON, Server, aggregator_frames, child_env, register_devices  # noqa: E402

MODEL = "crash"
N_FEATURES = 3


# ---------------------------------------------------------------- the device process
def device_main(argv):
    """One device: ingest, sync, log every attempt; drain and summarise once ``stop`` exists."""
    p = argparse.ArgumentParser(prog="crash_aggregator.py device")
    for name in ("url", "device", "key", "state", "log", "stop", "summary"):
        p.add_argument("--" + name, required=True)
    p.add_argument("--points", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drain-seconds", type=float, default=120.0)
    args = p.parse_args(argv)

    import numpy as np

    from edgekm.sync.device.agent import DeviceAgent

    log = open(args.log, "a", buffering=1)

    class LoggingAgent(DeviceAgent):
        def _post(self, pending):
            t0 = time.time()
            outcome = super()._post(pending)
            log.write(json.dumps({
                "device": self.device_id, "boot": pending.boot, "seq": pending.seq,
                "weight": pending.weight, "t0": t0, "t1": time.time(), "kind": outcome.kind,
                "duplicate": outcome.duplicate, "status": outcome.status}) + "\n")
            return outcome

    rng = np.random.default_rng(args.seed)
    centre = rng.normal(scale=5.0, size=N_FEATURES)
    agent = LoggingAgent(args.url, MODEL, args.device, args.key, args.state, n_clusters=3,
                         coreset_size=16, timeout=5.0, max_retries=1, backoff_base=0.05,
                         backoff_max=2.0, random_state=args.seed)
    ingested = 0
    try:
        while not os.path.exists(args.stop):
            agent.ingest(centre + rng.normal(size=(args.points, N_FEATURES)))
            ingested += args.points
            report = agent.sync()
            time.sleep(0.02 + 0.03 * rng.random() + (0.2 if report["error"] else 0.0))
        deadline = time.monotonic() + args.drain_seconds
        while True:
            report = agent.sync()
            if report["pending"] == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        stats = agent.stats()
    finally:
        agent.close()
        log.close()
    with open(args.summary, "w") as fh:
        json.dump({"device": args.device, "ingested": ingested, "stats": stats}, fh)
    return 0


# ---------------------------------------------------------------- the harness
def _wal_state(db):
    try:
        st = os.stat(db + "-wal")
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _kill_during_commit(server, timeout=5.0):
    """SIGKILL as soon as the WAL changes (a commit is being written); returns (time, hit)."""
    before = _wal_state(server.db)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _wal_state(server.db) != before:
            return server.kill(), True
        time.sleep(0.0002)
    return server.kill(), False


def _count_acks(logs):
    n = 0
    for path in logs:
        try:
            with open(path) as fh:
                n += sum(1 for line in fh if '"kind": "ack"' in line)
        except OSError:
            pass
    return n


def run(n_devices=4, kills=5, min_frames=150, *, points=20, seed=0, workdir=None,
        keep=False, max_seconds=600.0, drain_seconds=120.0):
    """Run the storm; returns a dict of figures and ``ok`` (every check passed)."""
    rnd = random.Random(seed)
    own = workdir is None
    workdir = tempfile.mkdtemp(prefix="edgekm-crash-agg-") if own else workdir
    os.makedirs(workdir, exist_ok=True)
    db = os.path.join(workdir, "agg.db")
    devices = [f"dev-{i:02d}" for i in range(n_devices)]
    keys = register_devices(db, devices)
    server = Server(db)
    server.start()
    stop = os.path.join(workdir, "stop")
    procs, logs, summaries = [], [], []
    started = time.monotonic()
    kill_log = []
    try:
        for i, dev in enumerate(devices):
            logs.append(os.path.join(workdir, f"{dev}.jsonl"))
            summaries.append(os.path.join(workdir, f"{dev}.summary.json"))
            procs.append(_popen_device(server.url, dev, keys[dev], workdir, logs[-1], stop,
                                       summaries[-1], points, seed * 1000 + i, drain_seconds))
        time.sleep(1.0)                              # let the devices start uploading
        for k in range(kills):
            if k % 2 == 0:
                time.sleep(rnd.uniform(0.1, 1.5))
                t, hit = server.kill(), None
                mode = "random"
            else:
                time.sleep(rnd.uniform(0.05, 0.5))
                t, hit = _kill_during_commit(server)
                mode = "wal-write"
            kill_log.append({"t": t, "mode": mode, "wal_changed": hit})
            time.sleep(rnd.uniform(0.0, 0.5))       # down for a while: devices fail, retry
            server.start()
        while _count_acks(logs) < min_frames and time.monotonic() - started < max_seconds:
            time.sleep(0.5)
        open(stop, "w").close()
        for proc in procs:
            proc.wait(timeout=drain_seconds + 30)
        storm_seconds = time.monotonic() - started
        server.stop()
    finally:
        open(stop, "w").close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        server.kill()
    result = check(db, logs, summaries, kill_log, [p.returncode for p in procs])
    result.update(devices=n_devices, storm_seconds=round(storm_seconds, 1),
                  server_starts=server.starts, workdir=workdir if keep or not own else None)
    if own and not keep and result["ok"]:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _popen_device(url, dev, key, workdir, log, stop, summary, points, seed, drain_seconds):
    import subprocess

    state = os.path.join(workdir, dev)
    cmd = [PYTHON, os.path.abspath(__file__), "device", "--url", url, "--device", dev,
           "--key", key, "--state", state, "--log", log, "--stop", stop, "--summary", summary,
           "--points", str(points), "--seed", str(seed), "--drain-seconds", str(drain_seconds)]
    err = open(os.path.join(workdir, f"{dev}.stderr"), "wb")
    try:
        return subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=err)
    finally:
        err.close()


def check(db, logs, summaries, kill_log, returncodes):
    """Compare what the devices saw acknowledged with what the database holds."""
    attempts = []
    for path in logs:
        with open(path) as fh:
            attempts += [json.loads(line) for line in fh if line.strip()]
    acked, accepted_answers, duplicate_answers = {}, {}, 0
    for a in attempts:
        if a["kind"] != "ack":
            continue
        fid = (a["device"], a["boot"], a["seq"])
        acked[fid] = a["weight"]
        if a["duplicate"]:
            duplicate_answers += 1
        else:
            accepted_answers[fid] = accepted_answers.get(fid, 0) + 1
    accepted_twice = sum(1 for n in accepted_answers.values() if n > 1)
    acked_twice = sum(1 for a in attempts if a["kind"] == "ack") - len(acked)

    ingested, leftovers = 0.0, []
    for path in summaries:
        with open(path) as fh:
            s = json.load(fh)
        ingested += s["ingested"]
        st = s["stats"]
        if st["pending"] or st["rejected"] or st["window_weight"]:
            leftovers.append(s["device"])
        if st["weight_ingested"] != s["ingested"]:
            leftovers.append(s["device"] + ":ingested")

    frames, info, integrity = aggregator_frames(db, MODEL)
    from edgekm.sync.cloud.aggregator import Aggregator

    with Aggregator(db, checkpoint_interval=None) as agg:
        aggregate_weight = agg.aggregate(MODEL).total_weight

    # kills that cut an upload in flight, and frames whose answer a kill lost
    in_flight_kills, cut_attempts = 0, []
    for k in kill_log:
        cut = [a for a in attempts if a["t0"] <= k["t"] <= a["t1"] and a["kind"] == "retry"]
        in_flight_kills += bool(cut)
        cut_attempts += cut
    dup_after_cut = 0
    for c in cut_attempts:
        later = [a for a in attempts if (a["device"], a["boot"], a["seq"]) ==
                 (c["device"], c["boot"], c["seq"]) and a["t0"] > c["t1"] and a["kind"] == "ack"]
        dup_after_cut += bool(later and later[0]["duplicate"])

    frame_sum = sum(frames.values())
    checks = {
        "devices_exited_0": all(rc == 0 for rc in returncodes),
        "outboxes_drained": not leftovers,
        "acked_equals_merged": set(acked) == set(frames),
        "no_frame_accepted_twice": accepted_twice == 0,
        "weights_match": (info is not None and info["total_weight"] == frame_sum == ingested
                          == info["windows_weight"] == aggregate_weight
                          == sum(acked.values())),
        "integrity_ok": integrity == [("ok",)],
    }
    return {
        "ok": all(checks.values()), "checks": checks,
        "kills": len(kill_log),
        "kills_at_wal_write": sum(1 for k in kill_log if k["wal_changed"]),
        "kills_with_upload_in_flight": in_flight_kills,
        "uploads_cut_by_a_kill": len(cut_attempts),
        "cut_then_answered_duplicate": dup_after_cut,
        "attempts": len(attempts),
        "frames_acknowledged": len(acked), "frames_merged": len(frames),
        "acknowledged_not_merged": len(set(acked) - set(frames)),
        "merged_not_acknowledged": len(set(frames) - set(acked)),
        "duplicate_answers": duplicate_answers, "frames_accepted_twice": accepted_twice,
        "frames_acked_twice": acked_twice,
        "weight_ingested": ingested, "weight_acknowledged": sum(acked.values()),
        "weight_merged": None if info is None else info["total_weight"],
        "weight_frame_records": frame_sum,
        "weight_windows": None if info is None else info["windows_weight"],
        "weight_aggregate": aggregate_weight,
        "integrity_check": [r[0] for r in integrity],
        "devices_not_drained": leftovers,
    }


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["device"]:
        return device_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--kills", type=int, default=24)
    p.add_argument("--min-frames", type=int, default=1200)
    p.add_argument("--points", type=int, default=20, help="points per frame")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="keep everything here (default: a temp dir, "
                                     "removed when the checks pass)")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    result = run(args.devices, args.kills, args.min_frames, points=args.points, seed=args.seed,
                 workdir=args.workdir)
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["loadavg"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
