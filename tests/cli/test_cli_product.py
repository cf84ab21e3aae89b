"""The device loop as a user runs it, against a real ``edgekm serve`` (issue 14).

A mistyped ``--db`` is refused; real sensor files (a text timestamp, ``;``)
are read; a device with a wrong key recovers its frames with
``--requeue-rejected``; a device pulls the version meant for it and scores
its points; a version exported to a file assigns the same labels as the one
in the database.
"""

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.serve import start_serve, stop_serve

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

TIMEOUT = 120
POWER = Path(__file__).resolve().parents[2] / "examples" / "data" / "household_power_4days.csv.gz"


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKM_")}
    env.update(extra)
    return env


def run(*argv, env=None, input=None):
    return subprocess.run([sys.executable, "-m", "edgekm", *map(str, argv)], input=input,
                          capture_output=True, timeout=TIMEOUT, text=not isinstance(input, bytes),
                          env=clean_env() if env is None else env)


def ok(proc):
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc


def ok_json(proc):
    import json

    return json.loads(ok(proc).stdout)


def usage_error(proc, *fragments):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("edgekm: error:"), proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr)
    assert "Traceback" not in proc.stderr


def power_rows():
    with gzip.open(POWER, "rt") as f:
        return f.read().splitlines()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("product")
    db = root / "agg.db"
    keys = {d: ok_json(run("devices", "add", d, "--db", db, "--json"))["key"]
            for d in ("meter-1", "meter-2", "meter-3")}
    proc, url = start_serve(db, env=clean_env())
    try:
        yield {"db": db, "url": url, "keys": keys, "root": root}
    finally:
        err = stop_serve(proc)
    assert proc.returncode == 0 and "Traceback" not in err, err
    # no admin token given: serve said so
    assert "warning: no --admin-token (or EDGEKM_ADMIN_TOKEN)" in err, err


def test_serve_on_a_port_in_use_says_so(server, tmp_path):
    port = server["url"].rsplit(":", 1)[1]
    proc = run("serve", "--db", tmp_path / "other.db", "--port", port)      # no --json
    assert proc.returncode == 1 and "the port is in use" in proc.stderr, proc.stderr
    assert "--port 0 picks a free one" in proc.stderr and "Traceback" not in proc.stderr


def device(server, device_id, state, *args, key=None):
    return run("device", "--server", server["url"], "--model", "power", "--device-id",
               device_id, "--state-dir", state, "--key", key or server["keys"][device_id],
               "--no-progress", "--seed", 0, *args)


# ---------------------------------------------------------------- --db


@pytest.mark.parametrize("argv", [
    ("versions", "list", "--model", "power"),
    ("versions", "export", "--model", "power", "-o", "v.msgpack"),
    ("devices", "list"),
    ("devices", "revoke", "d1"),
    ("models", "list"),
    ("models", "add", "m", "--n-features", 2),
    ("assign", "--model", "power", "x.npy"),
], ids=lambda a: " ".join(map(str, a[:2])))
def test_a_missing_database_is_refused(tmp_path, argv):
    db = tmp_path / "nosuch.db"
    usage_error(run(*argv, "--db", db), f"no database {str(db)!r}")
    assert not db.exists() and list(tmp_path.iterdir()) == []


def test_devices_add_creates_the_database(tmp_path):
    db = tmp_path / "new.db"
    ok(run("devices", "add", "d1", "--db", db))
    assert db.exists()
    assert [d["device_id"] for d in ok_json(run("devices", "list", "--db", db, "--json"))] \
        == ["d1"]


# ---------------------------------------------------------------- files


def test_fit_reads_the_household_power_example_with_no_flag(tmp_path):
    out = ok_json(run("fit", POWER, "--k", 4, "-o", tmp_path / "c.json", "--json",
                      "--no-progress"))
    assert out["n_samples"] == len(power_rows()) - 1 and out["n_features"] == 7
    assert out["skipped_columns"] == ["'timestamp'"]
    text = ok(run("fit", POWER, "--k", 4, "--output", tmp_path / "c.npy", "--no-progress"))
    assert "skipped non-numeric column(s) 'timestamp'" in text.stderr


def test_columns_by_name_or_number_and_delimiters(tmp_path):
    rows = power_rows()
    semi = tmp_path / "power.csv"
    semi.write_text("\n".join(r.replace(",", ";") for r in rows[:500]) + "\n")
    by_name = ok_json(run("fit", semi, "--k", 2, "-o", tmp_path / "a.npy", "--json",
                          "--columns", "Voltage,Global_intensity", "--no-progress"))
    assert by_name["n_features"] == 2 and by_name["n_samples"] == 499
    assert by_name["skipped_columns"] == []
    by_number = ok_json(run("fit", semi, "--k", 2, "-o", tmp_path / "b.npy", "--json",
                            "--columns", "4,5", "--delimiter", ";", "--no-progress"))
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert by_number["n_features"] == 2
    usage_error(run("fit", semi, "--k", 2, "-o", tmp_path / "c.npy", "--columns", "volts"),
                "no column 'volts'", "'Voltage'")
    usage_error(run("fit", semi, "--k", 2, "-o", tmp_path / "c.npy", "--columns", "9"),
                "there is no column 9 (columns are numbered 1..8)")
    # a ';' file read with ',' has one text column: the message says what to do
    usage_error(run("fit", semi, "--k", 2, "-o", tmp_path / "c.npy", "--delimiter", ","),
                "no numeric column", "--delimiter")
    usage_error(run("fit", semi, "--k", 2, "-o", tmp_path / "c.npy", "--delimiter", "ab"),
                "the delimiter must be one character")
    assert not (tmp_path / "c.npy").exists()


def test_tab_delimiter_on_stdin(tmp_path):
    lines = "".join(f"{i}\t{i % 3}.5\n" for i in range(50))
    out = ok_json(run("fit", "-", "--k", 2, "-o", tmp_path / "t.npy", "--json",
                      "--delimiter", "\\t", input=lines))
    assert out["n_samples"] == 50 and out["n_features"] == 2


# ---------------------------------------------------------------- the device loop


def test_sensor_csv_then_pull_and_score(server, tmp_path):
    """A real sensor CSV goes up; once a version is published the device pulls and scores."""
    first = ok_json(device(server, "meter-1", tmp_path / "s1", "--input", POWER,
                           "--sync-every", 2000, "--k", 4, "--json"))
    n = len(power_rows()) - 1
    assert first["points"] == n and first["ok"] is True and first["weight_acked"] == n
    assert first["skipped_columns"] == ["'timestamp'"]
    assert first["version"] is None and first["points_scored"] == 0
    assert first["anomalies"] == 0 and first["max_drift_score"] is None
    published = ok_json(run("versions", "publish", "--db", server["db"], "--model", "power",
                            "--k", 4, "--json"))
    assert published["version"] == 1 and published["status"] == "active"

    again = ok_json(device(server, "meter-1", tmp_path / "s1", "--input", POWER,
                           "--sync-every", 2000, "--json"))
    assert again["version"] == 1 and again["ok"] is True
    assert again["points_scored"] == n                 # pulled at the start: every point
    assert 0 <= again["anomalies"] < n and again["telemetry_windows"] >= 1
    assert again["max_drift_score"] is not None and again["max_drift_score"] >= 0
    text = ok(device(server, "meter-2", tmp_path / "s2", "--input", POWER))
    assert "version 1: " in text.stdout and f"{n} points scored" in text.stdout
    assert "anomalies, max drift score" in text.stdout


def test_wrong_key_then_requeue(server, tmp_path):
    state = tmp_path / "state"
    X = np.random.default_rng(3).normal(size=(700, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    wrong = device(server, "meter-3", state, "--input", tmp_path / "x.npy", "--max-retries", 0,
                   key="ab" * 32)
    assert wrong.returncode == 1, wrong.stderr
    assert "401" in wrong.stderr and "--key" in wrong.stderr
    assert "rerun with --requeue-rejected" in wrong.stderr
    # the right key alone sends only the new points
    right = ok_json(device(server, "meter-3", state, "--input", tmp_path / "x.npy", "--json"))
    assert right["weight_acked"] == 700 and right["frames_requeued"] == 0
    fixed = ok_json(device(server, "meter-3", state, "--input", tmp_path / "x.npy", "--json",
                           "--requeue-rejected"))
    assert fixed["frames_requeued"] == 1 and fixed["ok"] is True
    assert fixed["weight_acked"] == 3 * 700              # the stranded frame was delivered
    assert fixed["frames_pending"] == 0 and fixed["frames_rejected"] == 0


# ---------------------------------------------------------------- versions as files


def test_export_then_assign(server, tmp_path):
    if not ok_json(run("versions", "list", "--db", server["db"], "--model", "power",
                       "--json"))["versions"]:
        test_sensor_csv_then_pull_and_score(server, tmp_path)
    db = server["db"]
    exported = ok_json(run("versions", "export", "--db", db, "--model", "power",
                           "-o", tmp_path / "v.msgpack", "--json"))
    assert exported["version"] == 1 and exported["bytes"] == (tmp_path / "v.msgpack").stat().st_size
    from_file = ok(run("assign", "--version", tmp_path / "v.msgpack", POWER, "-o",
                       tmp_path / "a.csv", "--no-progress"))
    assert "skipped non-numeric column(s) 'timestamp'" in from_file.stderr
    # the active version of the database, to standard output
    from_db = ok(run("assign", "--db", db, "--model", "power", POWER, "--no-progress"))
    assert from_db.stdout == (tmp_path / "a.csv").read_text()
    assert from_db.stdout.startswith("label,sqdist,score,version\n")
    assert len(from_db.stdout.splitlines()) == len(power_rows())
    assert "to version 1 of 'power'" in from_db.stderr
    # exported to standard output: the same bytes
    piped = run("versions", "export", "--db", db, "--model", "power", input=b"")
    assert piped.returncode == 0 and piped.stdout == (tmp_path / "v.msgpack").read_bytes()
    usage_error(run("versions", "export", "--db", db, "--model", "power", "--version-id", 7,
                    "-o", tmp_path / "w.msgpack"), "7")
    assert not (tmp_path / "w.msgpack").exists()


def test_assign_without_an_active_version(tmp_path):
    db = tmp_path / "empty.db"
    ok(run("devices", "add", "d1", "--db", db))
    ok(run("models", "add", "m", "--n-features", 2, "--db", db))
    np.save(tmp_path / "x.npy", np.zeros((3, 2), np.float32))
    usage_error(run("assign", "--db", db, "--model", "m", tmp_path / "x.npy"),
                "model 'm' has no active version; give --version-id")


# ---------------------------------------------------------------- the CLI as a whole


def _parsers():
    from edgekm import cli

    todo = [("edgekm", cli.build_parser())]
    while todo:
        name, parser = todo.pop()
        yield name, parser
        for action in parser._actions:
            for child_name, child in getattr(action, "choices", None).items() \
                    if isinstance(getattr(action, "choices", None), dict) else ():
                todo.append((f"{name} {child_name}", child))


def test_every_argument_has_help():
    import argparse

    missing = [f"{name}: {action.dest}" for name, parser in _parsers()
               for action in parser._actions
               if not isinstance(action, argparse._SubParsersAction)
               and action.help in (None, "") and action.dest != "help"]
    assert missing == []


def test_one_seed_default_everywhere():
    from edgekm.cli._common import DEFAULT_SEED

    every = ok_json(run("config", "--json"))["commands"]
    seeds = {c: o["seed"] for c, o in every.items() if "seed" in o}
    assert set(seeds) >= {"device", "fit", "versions publish", "demo", "bench"}
    assert {s["value"] for s in seeds.values()} == {DEFAULT_SEED}, seeds
    assert "default 0, as in every edgekm command" in " ".join(ok(run("device", "--help")).stdout.split())


def test_devices_rotate_and_readd(server, tmp_path):
    db = server["db"]
    ok(run("devices", "add", "meter-9", "--db", db))
    old_key = None
    usage_error(run("devices", "add", "meter-9", "--db", db),
                "already exists; 'edgekm devices rotate meter-9' gives it a new key")
    X = np.random.default_rng(5).normal(size=(50, 7)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    rotated = ok_json(run("devices", "rotate", "meter-9", "--db", db, "--json"))
    new_key = rotated["key"]
    assert len(bytes.fromhex(new_key)) == 32
    old_key = ok_json(run("devices", "rotate", "meter-9", "--db", db, "--json"))["key"]
    stale = device(server, "meter-9", tmp_path / "a", "--input", tmp_path / "x.npy",
                   "--max-retries", 0, key=new_key)          # rotated away: refused
    assert stale.returncode == 1 and "401" in stale.stderr, stale.stderr
    fresh = ok_json(device(server, "meter-9", tmp_path / "a", "--input", tmp_path / "x.npy",
                           "--json", "--requeue-rejected", key=old_key))
    assert fresh["ok"] is True and fresh["weight_acked"] == 100
    ok(run("devices", "revoke", "meter-9", "--db", db))
    usage_error(run("devices", "add", "meter-9", "--db", db),
                "was revoked at", "register the device under a new id")
    usage_error(run("devices", "rotate", "meter-9", "--db", db), "is revoked")
    usage_error(run("devices", "rotate", "nobody", "--db", db), "no device 'nobody'")


def test_versions_in_user_terms(server, tmp_path):
    db = server["db"]
    if not ok_json(run("versions", "list", "--db", db, "--model", "power",
                       "--json"))["versions"]:
        test_sensor_csv_then_pull_and_score(server, tmp_path)
    usage_error(run("versions", "publish", "--db", db, "--model", "power", "--k", 100000),
                "cannot fit --k 100000: the aggregate of model 'power' over all time holds",
                "device point(s); publish with --k")
    listed = ok_json(run("versions", "list", "--db", db, "--model", "power", "--json"))
    v = listed["versions"][0]
    assert v["cost_per_point"] == pytest.approx(v["cost"] / v["training_weight"])
    text = ok(run("versions", "list", "--db", db, "--model", "power")).stdout
    assert "cost/point" in text and f"{v['cost_per_point']:.4g}" in text
    drift = ok(run("versions", "drift", "--db", db, "--model", "power")).stdout
    assert "compression: the telemetry is" in drift and "None" not in drift
    assert not any(len(num) > 12 for num in
                   __import__("re").findall(r"\d+\.\d+", drift)), drift   # no raw reprs


def test_automatic_publishing_from_the_command_line(tmp_path):
    db = tmp_path / "auto.db"
    ok(run("devices", "add", "d1", "--db", db))
    ok(run("models", "add", "m", "--n-features", 2, "--db", db))
    m = ("--db", db, "--model", "m")
    assert ok_json(run("versions", "auto", *m, "--json"))["policy"] is None
    usage_error(run("versions", "auto", *m, "--every-weight", 1000),
                "give --k: model 'm' has no version yet")
    policy = ok_json(run("versions", "auto", *m, "--every-weight", 1000, "--k", 3,
                         "--json"))["policy"]
    assert policy["every_weight"] == 1000 and policy["n_clusters"] == 3
    assert ok_json(run("versions", "auto", *m, "--json"))["policy"] == policy
    assert "automatic publishing" in ok(run("versions", "auto", *m)).stdout
    usage_error(run("versions", "auto", *m, "--off", "--every-seconds", 5), "give it alone")
    assert ok_json(run("versions", "auto", *m, "--off", "--json"))["policy"] is None
