"""Load test: many simulated devices against one aggregator, with exact weight accounting.

Starts ``python -m edgekm serve`` on loopback with a fresh database and
``--devices`` registered devices, then runs them all in one asyncio client
process for ``--seconds``.  Each device has its own keep-alive connection
and posts signed frames (``edgekm.sync.wire.frame.encode_frame`` and
``edgekm.sync.wire.auth.signed_headers``, as a DeviceAgent does) of ``--m``
points with integer weights, back to back.  A 503 or 429 is the designed
backpressure: the device sleeps ``Retry-After`` and sends the same frame
again (a fresh signature, the same bytes); a dropped connection is retried
the same way.  Any other answer is an error.  When the time is up each
device finishes the frame it holds, so that every frame is acknowledged
or counted as an error.

Afterwards the database must hold exactly the frames and the weight the
devices saw acknowledged.  Reports frames per second, the p50/p99 latency
of the attempt that was accepted and of the whole frame (first attempt to
acknowledgement, with the backpressure waits), the answers by status, and
the server's resident memory (VmRSS, and the peak VmHWM) after the load::

    python benchmarks/load.py [--devices 200] [--seconds 60]
    python benchmarks/load.py --replicas 2      # on PostgreSQL, devices spread over 2 replicas

Prints one JSON object and writes it to ``benchmarks/results/load.json``.
"""

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from tools._proc import Server, aggregator_frames, register_devices  # noqa: E402

MODEL = "load"


async def _request(state, path, headers, body):
    """One POST on the device's connection; returns (status, headers dict, payload)."""
    if state.get("writer") is None:
        state["reader"], state["writer"] = await asyncio.open_connection("127.0.0.1",
                                                                         state["port"])
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    state["writer"].write(f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: "
                          f"{len(body)}\r\n{head}\r\n".encode() + body)
    await state["writer"].drain()
    reader = state["reader"]
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split()[1])
    hdrs = {}
    while True:
        line = await reader.readuntil(b"\r\n")
        if line == b"\r\n":
            break
        name, _, value = line.decode("latin-1").partition(":")
        hdrs[name.strip().lower()] = value.strip()
    payload = await reader.readexactly(int(hdrs.get("content-length", "0")))
    return status, hdrs, payload


def _close(state):
    writer = state.pop("writer", None)
    state.pop("reader", None)
    if writer is not None:
        writer.close()


async def _device(port, device, key, m, d, seed, stop_at, drain_until, out):
    from edgekm.sync.wire.auth import signed_headers
    from edgekm.sync.wire.frame import encode_frame

    rng = np.random.default_rng(seed)
    path = f"/v1/models/{MODEL}/frames"
    state = {"port": port}
    boot, seq, point = int(rng.integers(2**62)), 0, 0
    rec = out[device] = {"acked": 0, "weight": 0.0, "accepted": 0, "duplicates": 0,
                         "attempt_latency": [], "frame_latency": [], "answers": {},
                         "errors": 0, "unfinished": 0, "backpressured": 0}
    while time.monotonic() < stop_at:
        weights = rng.integers(1, 4, size=m).astype(np.float64)
        body = encode_frame(model=MODEL, device=device, boot=boot, seq=seq,
                            span=(point, point + int(weights.sum()) - 1),
                            points=rng.normal(size=(m, d)).astype(np.float32),
                            weights=weights, level=0, created=time.time())
        first = time.perf_counter()
        pushed_back = False
        while True:
            if time.monotonic() > drain_until:
                rec["unfinished"] += 1
                break
            headers = signed_headers(key, "POST", path, body, device)
            headers["content-type"] = "application/msgpack"
            t0 = time.perf_counter()
            try:
                status, hdrs, payload = await _request(state, path, headers, body)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                _close(state)
                rec["answers"]["network"] = rec["answers"].get("network", 0) + 1
                await asyncio.sleep(0.1)
                continue
            rec["answers"][str(status)] = rec["answers"].get(str(status), 0) + 1
            if hdrs.get("connection", "").lower() == "close":
                _close(state)
            if status == 200:
                answer = json.loads(payload)
                done = time.perf_counter()
                rec["attempt_latency"].append(done - t0)
                rec["frame_latency"].append(done - first)
                rec["acked"] += 1
                rec["weight"] += answer["weight"]
                rec["accepted" if answer["status"] == "accepted" else "duplicates"] += 1
                break
            if status in (429, 503):
                rec["backpressured"] += not pushed_back
                pushed_back = True
                retry = hdrs.get("retry-after", "1")
                await asyncio.sleep(float(retry) if retry.isdigit() else 1.0)
                continue
            rec["errors"] += 1
            break
        seq += 1
        point += int(weights.sum())
    _close(state)


async def _run_devices(ports, keys, m, d, seconds, drain):
    out = {}
    stop_at = time.monotonic() + seconds
    drain_until = stop_at + drain
    await asyncio.gather(*(_device(ports[i % len(ports)], dev, key, m, d, i, stop_at,
                                   drain_until, out)
                           for i, (dev, key) in enumerate(keys.items())))
    return out


def _pct(values, q):
    return round(float(np.percentile(values, q)) * 1000, 2) if values else None


def _latency(values):
    return {"p50": _pct(values, 50), "p99": _pct(values, 99), "p99.9": _pct(values, 99.9),
            "max": _pct(values, 100)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", type=int, default=200)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--m", type=int, default=20, help="points per frame")
    p.add_argument("--d", type=int, default=4, help="features")
    p.add_argument("--drain", type=float, default=30.0,
                   help="seconds the devices get to finish their last frame")
    p.add_argument("--replicas", type=int, default=0,
                   help="serve on a PostgreSQL (tools/_pg.py) with this many replicas "
                        "(default 0: one server on a SQLite file)")
    p.add_argument("--output", default=None,
                   help="default benchmarks/results/load.json (load-replicas.json)")
    args = p.parse_args(argv)
    if args.output is None:
        args.output = os.path.join(HERE, "results", "load-replicas.json" if args.replicas
                                   else "load.json")
    if not (1 <= args.devices <= 1000 and 0 < args.seconds <= 600):
        p.error("--devices must be in [1, 1000] and --seconds in (0, 600]")
    workdir = tempfile.mkdtemp(prefix="edgekm-load-")
    pg = None
    if args.replicas:
        from tools._pg import PostgresServer

        pg = PostgresServer(fsync=True)
        db = pg.new_database("load")
    else:
        db = os.path.join(workdir, "load.db")
    keys = register_devices(db, [f"dev-{i:03d}" for i in range(args.devices)])
    servers = [Server(db, log_dir=workdir, name=f"replica-{i}")
               for i in range(max(1, args.replicas))]
    try:
        for server in servers:
            server.start()
        load_before = os.getloadavg()
        t0 = time.monotonic()
        out = asyncio.run(_run_devices([s.port for s in servers], keys, args.m, args.d,
                                       args.seconds, args.drain))
        elapsed = time.monotonic() - t0
        rss, hwm = (sum(x) for x in zip(*(s.rss_kib() for s in servers)))
        load_after = os.getloadavg()
        for server in servers:
            server.stop()
        frames, info, integrity = aggregator_frames(db, MODEL)
    finally:
        for server in servers:
            server.kill()
        if pg is not None:
            pg.close()
    recs = list(out.values())
    attempt = [x for r in recs for x in r["attempt_latency"]]
    whole = [x for r in recs for x in r["frame_latency"]]
    answers = {}
    for r in recs:
        for k, v in r["answers"].items():
            answers[k] = answers.get(k, 0) + v
    acked = sum(r["acked"] for r in recs)
    weight = sum(r["weight"] for r in recs)
    errors = sum(r["errors"] for r in recs)
    unfinished = sum(r["unfinished"] for r in recs)
    result = {
        "devices": args.devices, "replicas": args.replicas, "seconds": args.seconds, "m": args.m, "d": args.d,
        "elapsed_with_drain": round(elapsed, 1),
        "frames_acknowledged": acked, "frames_per_second": round(acked / elapsed, 1),
        "points_weight_per_second": round(weight / elapsed, 1),
        "accepted": sum(r["accepted"] for r in recs),
        "duplicates": sum(r["duplicates"] for r in recs),
        "answers": answers, "errors": errors, "unfinished_frames": unfinished,
        "frames_that_met_backpressure": sum(r["backpressured"] for r in recs),
        "attempt_latency_ms": _latency(attempt),
        "frame_latency_ms": _latency(whole),
        "weight_acknowledged": weight,
        "weight_merged": None if info is None else info["total_weight"],
        "frames_merged": len(frames),
        "server_rss_kib_after": rss, "server_peak_rss_kib": hwm,
        "integrity_check": [r[0] for r in integrity],
        "loadavg_before": load_before, "loadavg_after": load_after,
        "nproc": os.cpu_count(),
    }
    result["ok"] = (errors == 0 and unfinished == 0 and info is not None
                    and weight == info["total_weight"] and acked == len(frames)
                    and set(answers) <= {"200", "429", "503"}
                    and result["integrity_check"] == ["ok"])
    text = json.dumps(result, indent=2)
    print(text)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        fh.write(text + "\n")
    if result["ok"]:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"the database is kept in {workdir}", file=sys.stderr)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
