"""A real ``python -m edgekm serve`` process for the tests that go through the command line."""

import json
import signal
import subprocess
import sys


def start_serve(db, *args, env=None, cwd=None):
    """Start ``edgekm serve --db DB --port 0 --json ARGS`` and wait until it accepts connections.

    Returns ``(proc, url)``.  The server announces itself with one JSON line on
    stdout once its port answers; a server that exits first fails the test
    with its output.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekm", "serve", "--db", str(db), "--port", "0", "--json",
         "--log-level", "warning", *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    line = proc.stdout.readline()
    if not line:
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"edgekm serve exited with {proc.returncode}: {out}{err}")
    return proc, json.loads(line)["url"]


def stop_serve(proc, timeout=30):
    """SIGTERM, then wait for a graceful exit; returns its stderr (kills it on a timeout)."""
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return err
