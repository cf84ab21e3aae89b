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

Replicas (``--replicas 2``): a PostgreSQL server (``initdb``/``pg_ctl`` in a temporary
folder, ``fsync=on``) and that many ``edgekm serve`` processes on it; each device is
given every replica's URL and fails over between them; each kill SIGKILLs one replica
chosen at random, and ``--pg-kills`` times the PostgreSQL server itself is stopped
(``pg_ctl -m immediate``, which is a crash for PostgreSQL) and started again while the
replicas keep running (they answer 503 meanwhile)::

    python tools/crash_aggregator.py --replicas 2 --devices 20 --kills 24 --pg-kills 2 \
        --min-frames 1200

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
    for name in ("device", "key", "state", "log", "stop", "summary"):
        p.add_argument("--" + name, required=True)
    p.add_argument("--url", required=True, action="append", help="repeated: replicas")
    p.add_argument("--points", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drain-seconds", type=float, default=120.0)
    args = p.parse_args(argv)

    import numpy as np

    from edgekm.sync.device.agent import DeviceAgent

    log = open(args.log, "a", buffering=1)

    class LoggingAgent(DeviceAgent):
        def _post(self, pending):
            t0, url = time.time(), self.current_server
            outcome = super()._post(pending)
            log.write(json.dumps({"url": url,
                "device": self.device_id, "boot": pending.boot, "seq": pending.seq,
                "weight": pending.weight, "t0": t0, "t1": time.time(), "kind": outcome.kind,
                "duplicate": outcome.duplicate, "status": outcome.status}) + "\n")
            return outcome

    rng = np.random.default_rng(args.seed)
    centre = rng.normal(scale=5.0, size=N_FEATURES)
    agent = LoggingAgent(args.url if len(args.url) > 1 else args.url[0], MODEL, args.device, args.key, args.state, n_clusters=3,
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


def _storm(servers, rnd, kills, pg, pg_kills, kill_log):
    """SIGKILL the servers ``kills`` times (one at random; on one SQLite server every
    other kill during a WAL write) and crash PostgreSQL ``pg_kills`` times among them."""
    pg_at = set(rnd.sample(range(kills), min(pg_kills, kills))) if pg is not None else set()
    for k in range(kills):
        server = rnd.choice(servers)
        if k % 2 == 0 or pg is not None:
            time.sleep(rnd.uniform(0.1, 1.5))
            t, hit = server.kill(), None
            mode = "random"
        else:
            time.sleep(rnd.uniform(0.05, 0.5))
            t, hit = _kill_during_commit(server)
            mode = "wal-write"
        kill_log.append({"t": t, "mode": mode, "wal_changed": hit, "server": server.name})
        time.sleep(rnd.uniform(0.0, 0.5))       # down for a while: devices fail, retry
        server.start()
        if k in pg_at:
            time.sleep(rnd.uniform(0.1, 1.0))
            kill_log.append({"t": time.time(), "mode": "postgres", "wal_changed": None,
                             "server": "postgres"})
            pg.stop("immediate")
            time.sleep(rnd.uniform(0.5, 1.5))   # the replicas answer 503 meanwhile
            pg.start()


def run(n_devices=4, kills=5, min_frames=150, *, points=20, seed=0, workdir=None,
        keep=False, max_seconds=600.0, drain_seconds=120.0, replicas=0, pg_kills=0):
    """Run the storm; returns a dict of figures and ``ok`` (every check passed).

    ``replicas=0``: one server on a SQLite file; ``replicas=n``: n servers on one
    PostgreSQL (:mod:`tools._pg`), which is crashed ``pg_kills`` times."""
    rnd = random.Random(seed)
    own = workdir is None
    workdir = tempfile.mkdtemp(prefix="edgekm-crash-agg-") if own else workdir
    os.makedirs(workdir, exist_ok=True)
    pg = None
    if replicas:
        from tools._pg import PostgresServer

        pg = PostgresServer(fsync=True)
        db = pg.new_database("crash")
    else:
        db = os.path.join(workdir, "agg.db")
    devices = [f"dev-{i:02d}" for i in range(n_devices)]
    keys = register_devices(db, devices)
    servers = [Server(db, log_dir=workdir, name=f"replica-{i}" if replicas else "server")
               for i in range(max(1, replicas))]
    for server in servers:
        server.start()
    stop = os.path.join(workdir, "stop")
    procs, logs, summaries = [], [], []
    started = time.monotonic()
    kill_log = []
    try:
        for i, dev in enumerate(devices):
            logs.append(os.path.join(workdir, f"{dev}.jsonl"))
            summaries.append(os.path.join(workdir, f"{dev}.summary.json"))
            urls = [s.url for s in servers]
            urls = urls[i % len(urls):] + urls[:i % len(urls)]     # spread the devices
            procs.append(_popen_device(urls, dev, keys[dev], workdir, logs[-1], stop,
                                       summaries[-1], points, seed * 1000 + i, drain_seconds))
        time.sleep(1.0)                              # let the devices start uploading
        _storm(servers, rnd, kills, pg, pg_kills, kill_log)
        while _count_acks(logs) < min_frames and time.monotonic() - started < max_seconds:
            time.sleep(0.5)
        open(stop, "w").close()
        for proc in procs:
            proc.wait(timeout=drain_seconds + 30)
        storm_seconds = time.monotonic() - started
        for server in servers:
            server.stop()
        result = check(db, logs, summaries, kill_log, [p.returncode for p in procs])
    finally:
        open(stop, "w").close()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for server in servers:
            server.kill()
        if pg is not None:
            pg.close()
    result.update(devices=n_devices, storm_seconds=round(storm_seconds, 1),
                  replicas=replicas, postgres_kills=sum(k["mode"] == "postgres"
                                                        for k in kill_log),
                  server_starts=sum(s.starts for s in servers),
                  workdir=workdir if keep or not own else None)
    if own and not keep and result["ok"]:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _popen_device(urls, dev, key, workdir, log, stop, summary, points, seed, drain_seconds):
    import subprocess

    state = os.path.join(workdir, dev)
    cmd = [PYTHON, os.path.abspath(__file__), "device", *[a for u in urls for a in ("--url", u)],
           "--device", dev,
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

    # devices moving to another replica, and the 503s of a database that was down
    failovers, last_url = 0, {}
    for a in sorted(attempts, key=lambda a: a["t0"]):
        url = a.get("url")
        failovers += a["device"] in last_url and last_url[a["device"]] != url
        last_url[a["device"]] = url

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
        "failovers": failovers,
        "answers_503": sum(1 for a in attempts if a["status"] == 503),
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
    p.add_argument("--replicas", type=int, default=0,
                   help="serve on PostgreSQL with this many replicas (default 0: one server "
                        "on a SQLite file)")
    p.add_argument("--pg-kills", type=int, default=0,
                   help="with --replicas: crash the PostgreSQL server this many times")
    p.add_argument("--workdir", help="keep everything here (default: a temp dir, "
                                     "removed when the checks pass)")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    result = run(args.devices, args.kills, args.min_frames, points=args.points, seed=args.seed,
                 workdir=args.workdir, replicas=args.replicas, pg_kills=args.pg_kills)
    result["seconds"] = round(time.monotonic() - t0, 1)
    result["loadavg"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
