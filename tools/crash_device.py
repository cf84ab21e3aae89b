"""Device power-cut harness: SIGKILL a DeviceAgent at hundreds of points, check after each.

One device's ``state_dir`` lives through many runs of a child process.
Each run opens a :class:`~edgekm.sync.device.agent.DeviceAgent`, then for
``--steps`` steps ingests ``--points`` points, flushes them into the
outbox, syncs, and every other step pulls the centroid version, from a
real ``edgekm serve`` on loopback.  Every third run is offline (the URL
points at a closed port), so that frames pile up beyond ``max_pending=3``
and the outbox merges them.

The child counts *kill points* and SIGKILLs itself at the N-th:

- every SQL statement the outbox runs (``BEGIN``, each ``INSERT``/``UPDATE``/
  ``DELETE``, ``COMMIT``), labelled with the outbox method: ``append``,
  ``_merge_one_pair``, ``mark_attempted``, ``ack``, ``save_snapshot``...;
- every ``os.write``, ``os.fsync`` and ``os.replace`` of the agent (the
  version store) and of the outbox (its directory fsync).  At an
  ``os.write`` the child first writes half of the bytes, so the file is
  torn;
- before each HTTP request, and after its answer has arrived but before
  the agent has acted on it (the acknowledgement is lost).

A calibration run without a kill counts the points of one run; each
killed run picks N uniformly in [1, count].  Every fifth run is killed by
the harness at a random moment instead.  After every kill the harness
checks, from the files alone:

- the outbox passes ``PRAGMA integrity_check`` and every stored frame
  decodes and matches its row (seq, boot, weight, point count);
- ``weight_ingested == weight_acked + pending weight + rejected weight``,
  exactly;
- ``weight_ingested`` is the weight the child had logged as durable, or that
  plus the one flush the kill interrupted;
- ``version.current``, when present, decodes and passes its digest; the
  version the agent will load is the one it used before the kill or the
  active version it was pulling, never another one.

At the end a last run drains the outbox, and the weight the device counts as
acknowledged must equal the weight of its frame records at the aggregator,
frame for frame.

Long variant (docs/reliability.md)::

    python tools/crash_device.py --kill-points 400

Prints one JSON object; exit status 1 if a check fails.
"""

import argparse
import collections
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tools._proc import PYTHON, Server, child_env, free_port, register_devices, u64  # noqa: E402

MODEL = "power"
DEVICE = "dev-pc"
N_FEATURES = 2
ADMIN = "crash-device-admin"


# ---------------------------------------------------------------- the child
class _Killer:
    """Counts kill points; SIGKILLs this process at the ``nth`` point of ``family``
    (``sql:append``, ``os.replace:_store_version``, ...; None: never)."""

    def __init__(self, family, nth, log_fd, trace=False):
        self.family = family
        self.nth = nth
        self.count = 0
        self.seen = 0
        self.log_fd = log_fd
        self.trace = trace

    def point(self, label, before_kill=None):
        self.count += 1
        if self.trace:
            log_event(self.log_fd, {"event": "point", "point": self.count, "label": label})
        if self.family is None or _family(label) != self.family:
            return
        self.seen += 1
        if self.seen == self.nth:
            if before_kill is not None:
                before_kill()
            log_event(self.log_fd, {"event": "kill", "point": self.count, "label": label})
            os.kill(os.getpid(), signal.SIGKILL)


def log_event(fd, record):
    """One JSON line, written with a single os.write on an O_APPEND fd (survives SIGKILL)."""
    os.write(fd, (json.dumps(record) + "\n").encode())


def _caller(module_file):
    """The name of the first function of ``module_file`` on the stack, past the helpers."""
    f = sys._getframe(2)
    while f is not None:
        code = f.f_code
        if code.co_filename == module_file and code.co_name not in (
                "_transaction", "_get", "_set", "_add", "_insert", "__enter__", "__exit__",
                "<dictcomp>", "<listcomp>", "<genexpr>"):
            return code.co_name
        f = f.f_back
    return "?"


def install_hooks(killer):
    """Route the outbox's SQLite and the agent's file operations through ``killer``."""
    import sqlite3 as real_sqlite3

    from edgekm.sync.device import agent as agent_mod
    from edgekm.sync.device import client as client_mod
    from edgekm.sync.device import outbox as outbox_mod

    outbox_file = outbox_mod.__file__
    agent_file = agent_mod.__file__

    class Connection:
        def __init__(self, conn):
            self._conn = conn

        def execute(self, sql, *args):
            word = sql.split(None, 1)[0].upper()
            killer.point(f"sql:{_caller(outbox_file)}:{word}")
            return self._conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._conn, name)

    class Sqlite:
        def __getattr__(self, name):
            return getattr(real_sqlite3, name)

        @staticmethod
        def connect(*args, **kwargs):
            return Connection(real_sqlite3.connect(*args, **kwargs))

    class Os:
        def __init__(self, where):
            self._where = where

        def __getattr__(self, name):
            return getattr(os, name)

        def write(self, fd, data):
            view = memoryview(data)
            half = view[:max(1, len(view) // 2)]
            killer.point(f"os.write:{_caller(self._where)}",
                         before_kill=lambda: os.write(fd, half))
            return os.write(fd, data)

        def fsync(self, fd):
            killer.point(f"os.fsync:{_caller(self._where)}")
            return os.fsync(fd)

        def replace(self, src, dst):
            killer.point(f"os.replace:{_caller(self._where)}:{os.path.basename(dst)}")
            return os.replace(src, dst)

    outbox_mod.sqlite3 = Sqlite()
    outbox_mod.os = Os(outbox_file)
    agent_mod.os = Os(agent_file)
    send = client_mod.SignedClient._send

    def _send(self, request):
        killer.point(f"http:before:{request.get_method()}")
        answer = send(self, request)
        killer.point(f"http:answered:{request.get_method()}:{answer[0]}")
        return answer
    client_mod.SignedClient._send = _send


def child_main(argv):
    p = argparse.ArgumentParser(prog="crash_device.py child")
    for name in ("url", "key", "state", "log"):
        p.add_argument("--" + name, required=True)
    p.add_argument("--kill-family", default=None)
    p.add_argument("--kill-nth", type=int, default=0)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--points", type=int, default=25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drain", action="store_true")
    p.add_argument("--trace", action="store_true", help="log every kill point")
    args = p.parse_args(argv)
    fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    killer = _Killer(args.kill_family, args.kill_nth, fd, args.trace)
    install_hooks(killer)

    import numpy as np

    from edgekm.sync.device.agent import DeviceAgent

    rng = np.random.default_rng(args.seed)
    agent = DeviceAgent(args.url, MODEL, DEVICE, args.key, args.state, n_clusters=2,
                        coreset_size=8, max_pending=3, timeout=5.0, max_retries=0,
                        backoff_base=0.01, backoff_max=1.0, random_state=args.seed)
    doc = agent._version_doc
    stats = agent.stats()
    durable = stats["weight_ingested"]
    log_event(fd, {"event": "start", "stats": stats, "version": agent.version,
                   "digest": None if doc is None else doc.digest})
    if args.drain:
        for _ in range(100):
            report = agent.sync()
            if report["pending"] == 0 and report["error"] is None:
                break
            time.sleep(0.1)
    for step in range(0 if args.drain else args.steps):
        agent.ingest(rng.normal(size=(args.points, N_FEATURES)) + (step % 2) * 4.0)
        log_event(fd, {"event": "flushing", "durable": durable, "weight": args.points})
        agent.flush()
        durable += args.points
        log_event(fd, {"event": "flushed", "durable": durable})
        agent.sync()
        if step % 2 == 1:
            doc = agent._version_doc
            log_event(fd, {"event": "pull", "digest": None if doc is None else doc.digest})
            agent.pull()
            doc = agent._version_doc
            log_event(fd, {"event": "pulled", "digest": None if doc is None else doc.digest,
                           "error": agent.last_pull.get("error")})
    stats = agent.stats()
    agent.close()
    log_event(fd, {"event": "end", "points": killer.count, "stats": stats})
    return 0


# ---------------------------------------------------------------- checks
def read_log(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def check_state(state_dir, events, allowed_digests, points, previous=None):
    """Check a state_dir after a kill; returns ``(failures, loaded digest)``.

    ``previous``: the digest this check loaded after the last kill (a run
    killed before it logs anything still has that version in use).
    """
    from edgekm.sync.wire.frame import FrameError, decode_frame
    from edgekm.sync.wire.version import VersionError, decode_version

    failures = []
    db = os.path.join(state_dir, "outbox.sqlite3")
    conn = sqlite3.connect(db)
    try:
        integrity = conn.execute("PRAGMA integrity_check").fetchall()
        if integrity != [("ok",)]:
            failures.append(f"outbox integrity_check: {integrity[:3]}")
        state = dict(conn.execute("SELECT key, value FROM state"))
        pending = conn.execute("SELECT seq, boot, body, weight, n_points FROM frames").fetchall()
        rejected = conn.execute("SELECT seq, boot, body, weight, n_points FROM rejected"
                                ).fetchall()
    finally:
        conn.close()
    for table, rows in (("frames", pending), ("rejected", rejected)):
        for seq, boot, body, weight, n in rows:
            try:
                f = decode_frame(bytes(body))
            except FrameError as exc:
                failures.append(f"{table} seq {seq} does not decode: {exc}")
                continue
            if (f.seq, f.boot, f.total_weight, len(f.weights), f.model, f.device) != (
                    seq, u64(boot), weight, n, MODEL, DEVICE):
                failures.append(f"{table} seq {seq}: the body does not match its row")
    ingested = state["weight_ingested"]
    held = state["weight_acked"] + sum(r[3] for r in pending) + sum(r[3] for r in rejected)
    if ingested != held:
        failures.append(f"weight_ingested {ingested!r} != acked + pending + rejected {held!r}")
    # the durable weight the child logged, plus at most the flush that was cut
    logged = [e for e in events if e["event"] in ("start", "flushing", "flushed")]
    last = logged[-1] if logged else None
    if last is not None:
        if last["event"] == "start":
            ok = {last["stats"]["weight_ingested"]}
        elif last["event"] == "flushed":
            ok = {last["durable"]}
        else:
            ok = {last["durable"], last["durable"] + last["weight"]}
        if ingested not in ok:
            failures.append(f"weight_ingested {ingested!r}, expected one of {sorted(ok)}")
    # the centroid version: current decodes; what loads is the old one or the new one
    current = os.path.join(state_dir, "version.current")
    loaded = None
    for name in ("version.current", "version.previous"):
        path = os.path.join(state_dir, name)
        if not os.path.exists(path):
            continue
        try:
            with open(path, "rb") as fh:
                loaded = decode_version(fh.read()).digest
            break
        except VersionError as exc:
            if path == current:
                failures.append(f"version.current is not a whole version: {exc}")
    in_use = [e for e in events if e["event"] in ("start", "pull", "pulled")]
    old = {in_use[-1]["digest"] if in_use else None, previous}
    if loaded not in old and loaded not in allowed_digests:
        failures.append(f"the stored version {loaded} is neither the old one ({old}) nor the "
                        f"new one ({sorted(allowed_digests)})")
    if loaded is not None and loaded not in old and not (in_use and in_use[-1]["event"] == "pull"):
        failures.append("the stored version changed outside a pull")
    return failures, loaded


def _versions(db):
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT version, digest, status FROM versions ORDER BY version"
                            ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


# ---------------------------------------------------------------- the harness
def run(kill_points=40, *, steps=4, points=25, seed=0, workdir=None, keep=False):
    rnd = random.Random(seed)
    own = workdir is None
    workdir = tempfile.mkdtemp(prefix="edgekm-power-cut-") if own else workdir
    os.makedirs(workdir, exist_ok=True)
    db = os.path.join(workdir, "agg.db")
    key = register_devices(db, [DEVICE])[DEVICE]
    server = Server(db, admin_token=ADMIN)
    server.start()
    state = os.path.join(workdir, "state")
    offline_url = f"http://127.0.0.1:{free_port()}"
    labels = collections.Counter()
    failures, runs, published = [], 0, 0
    history = []                # every run's events, in order: the ledger and versions in use
    started = time.monotonic()

    def child(kill, url, extra=(), random_kill=None):
        nonlocal runs
        runs += 1
        log = os.path.join(workdir, f"run-{runs:04d}.jsonl")
        cmd = [PYTHON, os.path.abspath(__file__), "child", "--url", url, "--key", key,
               "--state", state, "--log", log, "--steps", str(steps),
               "--points", str(points), "--seed", str(runs), *extra]
        if kill is not None:
            cmd += ["--kill-family", kill[0], "--kill-nth", str(kill[1])]
        with open(os.path.join(workdir, "child.stderr"), "ab") as err:
            proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.DEVNULL, stderr=err)
        if random_kill is not None:
            try:
                proc.wait(random_kill)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
        rc = proc.wait(120)
        events = read_log(log) if os.path.exists(log) else []
        history.extend(events)
        return rc, events

    def publish():
        nonlocal published
        info = server.admin("POST", f"/v1/models/{MODEL}/versions", {"n_clusters": 2})
        if info["status"] != "active":
            server.admin("POST", f"/v1/models/{MODEL}/versions/{info['version']}/promote", {})
        published += 1

    try:
        rc, events = child(None, server.url)                    # a first boot
        if rc != 0 or events[-1]["event"] != "end":
            raise RuntimeError(f"the first run failed ({rc}); see {workdir}")
        publish()
        # one traced run per mode: where the kill points are (the label of each index)
        traces, run_seconds = {}, 0.0
        for mode, url in (("online", server.url), ("offline", offline_url)):
            t0 = time.monotonic()
            rc, events = child(None, url, extra=("--trace",))
            run_seconds = max(run_seconds, time.monotonic() - t0)
            if rc != 0:
                raise RuntimeError(f"the traced {mode} run failed ({rc}); see {workdir}")
            counts = collections.Counter(_family(e["label"]) for e in events
                                         if e["event"] == "point")
            traces[mode] = dict(counts)
        per_run = {mode: sum(t.values()) for mode, t in traces.items()}
        publish()
        killed = attempt = 0
        loaded = None
        while killed < kill_points:
            i = attempt
            attempt += 1
            mode = "offline" if i % 3 == 1 else "online"
            url = offline_url if mode == "offline" else server.url
            if i % 5 == 4:
                rc, events = child(None, url, random_kill=rnd.uniform(0.05, run_seconds))
                label = "random time"
            else:
                # a family of kill points at random, then one of its points: rare families
                # (version store, HTTP, merges) get as many kills as the frequent ones
                family = rnd.choice(sorted(traces[mode]))
                if mode == "online":
                    publish()                     # so that every online run stores a version
                rc, events = child((family, rnd.randint(1, traces[mode][family])), url)
                kills = [e for e in events if e["event"] == "kill"]
                label = kills[-1]["label"] if kills else None
            if rc != -signal.SIGKILL:
                if rc != 0:
                    failures.append(f"run {runs}: exit status {rc}")
                continue                                      # finished before its kill point
            killed += 1
            labels[_family(label)] += 1
            active = {d for _, d, s in _versions(db) if s == "active"}
            found, loaded = check_state(state, history, active, points, loaded)
            failures += [f"run {runs} (killed at {label}): {f}" for f in found]
        rc, events = child(None, server.url, extra=("--drain",))   # drain, then compare
        end = events[-1] if events else {}
        if rc != 0 or end.get("event") != "end":
            failures.append(f"the drain run failed ({rc})")
            stats = {}
        else:
            stats = end["stats"]
        server.stop()
    finally:
        server.kill()
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    agg_weight, agg_frames = conn.execute(
        "SELECT coalesce(sum(weight), 0), count(*) FROM frames WHERE device_id = ?",
        (DEVICE,)).fetchone()
    integrity = conn.execute("PRAGMA integrity_check").fetchall()
    conn.close()
    if stats:
        if stats["pending"] or stats["rejected"]:
            failures.append(f"not drained: {stats['pending']} pending, "
                            f"{stats['rejected']} rejected")
        if not stats["weight_ingested"] == stats["weight_acked"] == agg_weight:
            failures.append(f"device ingested {stats['weight_ingested']}, acked "
                            f"{stats['weight_acked']}, aggregator holds {agg_weight}")
        if stats["frames_acked"] != agg_frames:
            failures.append(f"device acked {stats['frames_acked']} frames, the aggregator "
                            f"holds {agg_frames}")
    result = {
        "ok": not failures, "failures": failures[:20], "kills": killed,
        "kill_points_per_run": per_run, "runs": runs,
        "families": {m: len(t) for m, t in traces.items()}, "kills_by_family": dict(labels),
        "versions_published": published,
        "weight_ingested": stats.get("weight_ingested"),
        "weight_acked": stats.get("weight_acked"), "aggregator_weight": agg_weight,
        "frames_acked": stats.get("frames_acked"), "aggregator_frames": agg_frames,
        "frames_merged_on_device": stats.get("frames_merged"),
        "aggregator_integrity": [r[0] for r in integrity],
        "seconds": round(time.monotonic() - started, 1),
        "workdir": workdir if keep or not own or failures else None,
    }
    if own and not keep and not failures:
        shutil.rmtree(workdir, ignore_errors=True)
    return result


def _family(label):
    """``sql:append:INSERT`` -> ``sql:append``; ``os.replace:_store_version:x`` -> its first two."""
    if label is None:
        return "?"
    return ":".join(label.split(":")[:2])


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        return child_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kill-points", type=int, default=400)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir")
    args = p.parse_args(argv)
    result = run(args.kill_points, steps=args.steps, seed=args.seed, workdir=args.workdir)
    result["loadavg"] = os.getloadavg()
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
