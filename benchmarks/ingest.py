"""Aggregator ingest benchmark: durable frames per second and accept latency.

Starts ``python -m edgekm serve`` (uvicorn) on loopback with a fresh
database, then ``--processes`` client processes of ``--threads`` threads
each; every thread is its own device (own key, own keep-alive connection)
and posts distinct signed frames of ``--m`` points in ``--d`` float32
features, back to back, for ``--seconds`` after ``--warmup`` seconds.
A frame counts when the server answered 200 "accepted": with
``--durability full`` (the default) it was then fsynced in the WAL.
Afterwards the database is reopened and its frame count checked against the
clients' count.

Prints one JSON object and writes it to ``benchmarks/results/ingest.json``::

    python benchmarks/ingest.py [--seconds 20] [--processes 2] [--threads 8]
"""

import argparse
import json
import multiprocessing as mp
import os
import platform
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

import msgpack
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
MODEL = "bench"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with status {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the server did not become healthy")


class _Connection:
    """A minimal HTTP/1.1 keep-alive client, so that the clients' own CPU cost
    (http.client parses every response header with the email package) takes
    as little as possible from the server on a small machine."""

    def __init__(self, port):
        self.port = port
        self.sock = None
        self.buf = b""

    def request(self, path, headers, body):
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.buf = b""
        head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.sock.sendall(f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                          f"content-length: {len(body)}\r\n{head}\r\n".encode() + body)
        while b"\r\n\r\n" not in self.buf:
            self._recv()
        header, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = header.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self._recv()
        payload, self.buf = self.buf[:length], self.buf[length:]
        return status, payload

    def _recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        self.buf += chunk

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def _client_thread(port, device, key, m, d, seed, start_at, warm_until, stop_at, out):
    from edgekm.sync.wire.auth import signed_headers

    rng = np.random.default_rng(seed)
    pool = [rng.normal(size=(m, d)).astype("<f4").tobytes() for _ in range(8)]
    weights = np.ones(m, dtype="<f8").tobytes()
    path = f"/v1/models/{MODEL}/frames"
    conn = _Connection(port)
    latencies, accepted, errors, seq = [], 0, {}, 0
    while time.time() < start_at:
        time.sleep(0.001)
    while True:
        now = time.time()
        if now >= stop_at:
            break
        pb = pool[seq % len(pool)]
        frame = {"v": 1, "kind": "coreset", "model": MODEL, "device": device, "boot": 1,
                 "seq": seq, "span": [seq * m, seq * m + m - 1], "n": m, "d": d,
                 "dtype": "<f4", "points": pb, "weights": weights, "total": float(m),
                 "level": 0, "created": now, "crc32": zlib.crc32(weights, zlib.crc32(pb))}
        body = msgpack.packb(frame, use_bin_type=True)
        headers = signed_headers(key, "POST", path, body, device)
        headers["content-type"] = "application/msgpack"
        t0 = time.perf_counter()
        try:
            status, payload = conn.request(path, headers, body)
        except OSError as exc:
            status, payload = type(exc).__name__, b""
            conn.close()
        dt = time.perf_counter() - t0
        seq += 1
        ok = status == 200 and json.loads(payload)["status"] == "accepted"
        if now >= warm_until:
            if ok:
                accepted += 1
                latencies.append(dt)
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1
        elif not ok:
            errors[f"warmup-{status}"] = errors.get(f"warmup-{status}", 0) + 1
        if not ok and status == 503:
            time.sleep(0.01)
    conn.close()
    out.append((accepted, latencies, errors, seq))


def _client_process(port, devices, m, d, start_at, warm_until, stop_at, queue):
    import threading

    out = []
    threads = [threading.Thread(target=_client_thread,
                                args=(port, dev, key, m, d, i, start_at, warm_until, stop_at, out))
               for i, (dev, key) in enumerate(devices)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = sum(o[0] for o in out)
    latencies = [x for o in out for x in o[1]]
    errors = {}
    for o in out:
        for k, v in o[2].items():
            errors[k] = errors.get(k, 0) + v
    queue.put((accepted, latencies, errors, sum(o[3] for o in out)))


def run(seconds=20.0, warmup=3.0, processes=2, threads=8, m=200, d=16, durability="full",
        coreset_size=200, server_args=()):
    from edgekm.sync.cloud.aggregator import Aggregator

    tmp = tempfile.mkdtemp(prefix="edgekm-ingest-")
    db = os.path.join(tmp, "ingest.db")
    n_devices = processes * threads
    with Aggregator(db) as agg:
        keys = [(f"bench-{i}", agg.add_device(f"bench-{i}")) for i in range(n_devices)]
    port = _free_port()
    cmd = [sys.executable, "-m", "edgekm", "serve", "--db", db, "--port", str(port),
           "--durability", durability, "--coreset-size", str(coreset_size),
           "--log-level", "warning", *server_args]
    server = subprocess.Popen(cmd)
    try:
        _wait_healthy(port, server)
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        start_at = time.time() + 2.0            # after the clients have started
        warm_until = start_at + warmup
        stop_at = warm_until + seconds
        procs = [ctx.Process(target=_client_process,
                             args=(port, keys[i * threads:(i + 1) * threads], m, d, start_at,
                                   warm_until, stop_at, queue))
                 for i in range(processes)]
        for p in procs:
            p.start()
        cpu0 = _proc_cpu(server.pid)
        results = [queue.get(timeout=seconds + warmup + 120) for _ in procs]
        cpu1 = _proc_cpu(server.pid)
        for p in procs:
            p.join()
    finally:
        server.send_signal(signal.SIGTERM)
        status = server.wait(timeout=60)
    accepted = sum(r[0] for r in results)
    lat = np.array([x for r in results for x in r[1]]) * 1000.0
    errors = {}
    for r in results:
        for k, v in r[2].items():
            errors[k] = errors.get(k, 0) + v
    conn = sqlite3.connect(db)
    stored = conn.execute("SELECT count(*) FROM frames").fetchone()[0]
    integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    sent = sum(r[3] for r in results)
    result = {
        "benchmark": "ingest",
        "frames_per_second": round(accepted / seconds, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2) if len(lat) else None,
        "p99_ms": round(float(np.percentile(lat, 99)), 2) if len(lat) else None,
        "max_ms": round(float(lat.max()), 2) if len(lat) else None,
        "accepted_in_window": accepted,
        "errors": errors,
        "frames_stored": stored,
        "frames_sent": sent,
        "db_integrity": integrity,
        "server_exit_status": status,
        "server_cpu_seconds_per_frame_ms": (round((cpu1 - cpu0) / max(sent, 1) * 1000, 3)
                                            if cpu0 is not None and cpu1 is not None else None),
        "seconds": seconds, "warmup_seconds": warmup,
        "client_processes": processes, "threads_per_process": threads,
        "m": m, "d": d, "dtype": "float32", "durability": durability,
        "coreset_size": coreset_size,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "loadavg": list(os.getloadavg())},
        "server_args": list(server_args),
        # uvicorn picks these when they are importable (the server inherits this environment)
        "uvicorn_http": "httptools" if _importable("httptools") else "h11",
        "uvicorn_loop": "uvloop" if _importable("uvloop") else "asyncio",
    }
    return result


def _importable(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _proc_cpu(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks
    except (OSError, IndexError, ValueError):
        return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--m", type=int, default=200)
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--durability", choices=("full", "normal"), default="full")
    ap.add_argument("--coreset-size", type=int, default=200)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "ingest.json"))
    args = ap.parse_args(argv)
    result = run(args.seconds, args.warmup, args.processes, args.threads, args.m, args.d,
                 args.durability, args.coreset_size)
    text = json.dumps(result, indent=2)
    print(text)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
