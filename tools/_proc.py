"""Helpers shared by the reliability harnesses: a real ``edgekm serve`` process and its checks.

Nothing here is part of edgekm; the harnesses in ``tools/`` and the fast
variants in ``tests/`` import it.
"""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request

PYTHON = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env():
    """The environment of a child process: the repository on its path, one thread per BLAS."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Server:
    """``python -m edgekm serve`` on a loopback port with a file database; restartable."""

    def __init__(self, db, port=None, *, admin_token=None, log_dir=None, extra=(),
                 name="server"):
        self.db = os.fspath(db)
        self.name = name
        self.port = port or free_port()
        self.admin_token = admin_token
        self.log_dir = log_dir or os.path.dirname(self.db)
        self.extra = list(extra)
        self.proc = None
        self.starts = 0

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout=60.0):
        cmd = [PYTHON, "-m", "edgekm", "serve", "--db", self.db, "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warning", *self.extra]
        if self.admin_token:
            cmd += ["--admin-token", self.admin_token]
        self.starts += 1
        log = open(os.path.join(self.log_dir, f"{self.name}-{self.starts}.log"), "wb")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env())
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with status {self.proc.returncode}; "
                                   f"see {self.log_dir}/{self.name}-{self.starts}.log")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("the server did not become healthy")
            time.sleep(0.05)

    def kill(self):
        """SIGKILL the server and reap it; returns the time of the kill."""
        t = time.time()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()
        return t

    def stop(self, timeout=60.0):
        """SIGTERM (graceful) and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def rss_kib(self):
        """``(VmRSS, VmHWM)`` of the server process, in KiB."""
        out = {}
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    out[line.split(":")[0]] = int(line.split()[1])
        return out.get("VmRSS"), out.get("VmHWM")

    def admin(self, method, path, payload=None, timeout=120.0):
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "authorization": f"Bearer {self.admin_token}", "content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())


def register_devices(db, device_ids):
    """Create the database (if needed) and register devices; returns ``{device: key}``."""
    from edgekm.sync.cloud.aggregator import Aggregator

    with Aggregator(db, checkpoint_interval=None) as agg:
        return {d: agg.add_device(d) for d in device_ids}


def u64(value):
    """The uint64 boot id from the two's complement int64 SQLite stores."""
    return value + (1 << 64) if value < 0 else value


def aggregator_frames(db, model):
    """``{(device, boot, seq): weight}`` of the frame records, and the model's row and
    the integrity check, read from the database file alone (or a PostgreSQL database,
    whose integrity is its own: ``ok`` once it answers)."""
    from edgekm.sync.cloud.postgres import PgConnection, is_postgres_url

    postgres = is_postgres_url(db)
    conn = PgConnection(db) if postgres else sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        integrity = ([(conn.execute("SELECT 'ok'").fetchone()[0],)] if postgres
                     else conn.execute("PRAGMA integrity_check").fetchall())
        row = conn.execute("SELECT model_id, total_weight, n_frames FROM models WHERE name = ?",
                           (model,)).fetchone()
        if row is None:
            return {}, None, integrity
        mid = row[0]
        frames = {(d, u64(b), s): w for d, b, s, w in conn.execute(
            "SELECT device_id, boot, seq, weight FROM frames WHERE model_id = ?", (mid,))}
        windows = conn.execute("SELECT coalesce(sum(total_weight), 0), coalesce(sum(n_frames), 0) "
                               "FROM windows WHERE model_id = ?", (mid,)).fetchone()
        info = {"total_weight": row[1], "n_frames": row[2], "windows_weight": windows[0],
                "windows_frames": windows[1]}
        return frames, info, integrity
    finally:
        conn.close()
