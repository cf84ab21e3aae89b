"""Every ``edgekm`` command through its real entry point: a subprocess, exit code and output.

One aggregator (``edgekm serve`` on a free port) is shared by the whole module;
the version tests run in order on its database.
"""

import json
import os
import shutil
import subprocess
import sys
import urllib.request

import numpy as np
import pytest
from helpers.serve import stop_serve

from edgekm import cli

pytest.importorskip("uvicorn")
pytest.importorskip("starlette")

TIMEOUT = 120


def clean_env(**extra):
    """The environment without any EDGEKM_ variable of the caller, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEKM_")}
    env.update(extra)
    return env


def run(*argv, env=None, input=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgekm", *map(str, argv)], input=input,
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=cwd,
                          env=clean_env() if env is None else env)


def ok_json(proc):
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)


def usage_error(proc, fragment):
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "edgekm: error:" in proc.stderr and fragment in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def blobs(n, d=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0]], dtype=np.float64)[:, :d]
    return (centres[rng.integers(3, size=n)] + rng.normal(size=(n, d))).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    X = blobs(3000)
    np.savetxt(root / "x.csv", X, delimiter=",", header="a,b,c", comments="", fmt="%.6g")
    np.save(root / "x.npy", X)
    return root


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real ``edgekm serve --json --port 0`` and two registered devices."""
    root = tmp_path_factory.mktemp("server")
    db = root / "agg.db"
    keys = {d: ok_json(run("devices", "add", d, "--db", db, "--json"))["key"]
            for d in ("dev-1", "dev-2")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgekm", "serve", "--db", str(db), "--port", "0", "--json",
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
    try:
        line = proc.stdout.readline()          # printed once the port accepts connections
        assert line, proc.communicate(timeout=30)
        hello = json.loads(line)
        yield {"proc": proc, "hello": hello, "db": db, "keys": keys, "url": hello["url"],
               "root": root}
    finally:
        err = stop_serve(proc)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


# ---------------------------------------------------------------- help and usage


def _command_paths():
    parser = cli.build_parser()
    tree = cli._config.Tree(parser)
    return sorted({p[:i] for p in tree.options for i in range(len(p) + 1)})


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "edgekm")
def test_help_for_every_command(path, capsys):
    # In process (a subprocess costs ~0.4 s and every command has one below); the
    # subprocess path of --help is test_help_through_the_entry_point.
    assert cli.main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: edgekm {' '.join(path)}".rstrip())
    if path in ((), ("devices",), ("models",), ("versions",)):     # a group: its commands
        assert "COMMAND ..." in out or "ACTION ..." in out
    else:
        assert "--json" in out and "--config" in out


def test_help_through_the_entry_point():
    proc = run("--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: edgekm")
    for command in ("demo", "serve", "devices", "versions", "device", "fit", "assign", "bench",
                    "config"):
        assert f"\n    {command} " in proc.stdout, command
    proc = run("versions", "publish", "--help")
    assert proc.returncode == 0 and "--windows" in proc.stdout


def test_usage_errors():
    usage_error(run(), "a command is required")
    usage_error(run("frobnicate"), "invalid choice")
    usage_error(run("fit", "x.csv", "--k", "0", "--output", "c.npy"), "--k")
    usage_error(run("versions", "list", "--model", "m"), "--db")     # required, from no source


def test_console_script_and_version():
    exe = shutil.which("edgekm") or os.path.join(os.path.dirname(sys.executable), "edgekm")
    assert os.path.exists(exe), "the edgekm console script is not installed"
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=TIMEOUT,
                          env=clean_env())
    assert proc.returncode == 0 and proc.stdout.startswith("edgekm ")
    proc = subprocess.run([exe, "fit", "missing.csv", "--k", "2", "--output", "c.npy"],
                          capture_output=True, text=True, timeout=TIMEOUT, env=clean_env())
    usage_error(proc, "data file not found: missing.csv")


# ---------------------------------------------------------------- serve, devices, models


def test_serve_announces_itself_and_answers(server):
    hello = server["hello"]
    assert hello["listening"] is True and hello["host"] == "127.0.0.1"
    assert hello["db"] == str(server["db"]) and "config" not in hello
    with urllib.request.urlopen(server["url"] + "/healthz", timeout=10) as r:
        assert json.loads(r.read()) == {"status": "ok", "db": "ok"}


def test_serve_errors(tmp_path, server):
    port = server["hello"]["port"]
    proc = run("serve", "--db", tmp_path / "other.db", "--port", port, "--json")
    assert proc.returncode == 1 and "already listens there" in proc.stderr, proc.stderr
    usage_error(run("serve", "--db", tmp_path / "x.db", "--port", "70000"), "0..65535")


def test_devices_add_list_revoke(server):
    db = server["db"]
    added = ok_json(run("devices", "add", "dev-3", "--db", db, "--json"))
    assert added["device_id"] == "dev-3" and len(bytes.fromhex(added["key"])) == 32
    assert "config" not in added
    usage_error(run("devices", "add", "dev-3", "--db", db), "already exists")
    assert ok_json(run("devices", "revoke", "dev-3", "--db", db, "--json"))["revoked"] is True
    listed = ok_json(run("devices", "list", "--db", db, "--json"))
    status = {d["device_id"]: d["revoked"] is None for d in listed}
    assert status == {"dev-1": True, "dev-2": True, "dev-3": False}
    text = run("devices", "list", "--db", db)
    assert text.returncode == 0 and "revoked" in text.stdout and added["key"] not in text.stdout
    usage_error(run("devices", "revoke", "nobody", "--db", db), "no device")


def test_models_add_and_list(tmp_path):
    db = tmp_path / "models.db"
    ok_json(run("devices", "add", "d0", "--db", db, "--json"))    # creates the database
    info = ok_json(run("models", "add", "m9", "--n-features", "4", "--db", db, "--json"))
    assert info["n_features"] == 4
    assert [m["model"] for m in ok_json(run("models", "list", "--db", db, "--json"))] == ["m9"]
    usage_error(run("models", "add", "m9", "--n-features", "5", "--db", db), "m9")


# ---------------------------------------------------------------- device


def test_device_uploads_a_csv_file(server, data, tmp_path):
    env = clean_env(EDGEKM_DEVICE_KEY=server["keys"]["dev-1"], EDGEKM_SERVER=server["url"])
    out = ok_json(run("device", "--model", "meters", "--device-id", "dev-1",
                      "--state-dir", tmp_path / "state", "--input", data / "x.csv",
                      "--sync-every", 1000, "--k", 3, "--json", env=env))
    assert out["points"] == 3000 and out["syncs"] == 3 and out["ok"] is True
    assert out["frames_sent"] == out["frames_accepted"] == 3
    assert out["frames_pending"] == 0 and out["frames_rejected"] == 0
    assert out["weight_acked"] == 3000 and out["bytes_uploaded"] > 0
    assert out["server"] == server["url"]


def test_device_reads_stdin_lines(server, tmp_path):
    lines = "".join(f"{x},{y},{z}\n" for x, y, z in blobs(300, seed=1).tolist())
    env = clean_env(EDGEKM_DEVICE_KEY=server["keys"]["dev-2"])
    proc = run("device", "--server", server["url"], "--model", "meters", "--device-id", "dev-2",
               "--state-dir", tmp_path / "state", "--sync-every", 100, env=env, input=lines)
    assert proc.returncode == 0, proc.stderr
    assert "device dev-2: 300 points, 3 frames sent" in proc.stdout


def test_device_failures_keep_the_frames(server, data, tmp_path):
    key = server["keys"]["dev-1"]
    common = ("--model", "meters", "--device-id", "dev-1", "--input", data / "x.npy",
              "--max-retries", 0)
    proc = run("device", "--server", "http://127.0.0.1:9", "--key", key,
               "--state-dir", tmp_path / "down", *common)
    assert proc.returncode == 1, proc.stderr
    assert "1 frame(s) not acknowledged, kept in" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("device", "--server", server["url"], "--key", "ab" * 32,     # not dev-1's key
               "--state-dir", tmp_path / "wrong", *common)
    assert proc.returncode == 1 and "refused 1 frame(s)" in proc.stderr, proc.stderr
    assert "401" in proc.stderr
    usage_error(run("device", "--server", server["url"], "--key", "not-hex",
                    "--state-dir", tmp_path / "bad", *common), "key must be the device secret")
    usage_error(run("device", "--server", server["url"], "--key", key,
                    "--state-dir", tmp_path / "bad", "--model", "meters", "--device-id", "dev-1",
                    "--input", data / "missing.csv"), "data file not found")


# ---------------------------------------------------------------- versions


def test_versions_publish_canary_promote_rollback_pin(server, data, tmp_path):
    db = server["db"]
    test_device_uploads_a_csv_file(server, data, tmp_path)   # the model has data
    v = ["versions"]
    m = ("--db", db, "--model", "meters", "--json")
    first = ok_json(run(*v, "publish", "--k", 3, *m))
    assert first["version"] == 1 and first["status"] == "active"
    second = ok_json(run(*v, "publish", "--k", 3, "--seed", 1, *m))
    assert second["version"] == 2 and second["status"] == "candidate"
    assert ok_json(run(*v, "canary", 2, "--percent", 25, *m))["percent"] == 25
    promoted = ok_json(run(*v, "promote", 2, *m))
    assert promoted["active"] == 2 and promoted["retired"] == 1
    rolled = ok_json(run(*v, "rollback", *m))
    assert rolled["active"] == 1 and rolled["retired"] == 2
    assert ok_json(run(*v, "canary", 2, "--percent", 10, *m))["status"] == "canary"
    aborted = ok_json(run(*v, "abort", *m))
    assert aborted["aborted"] == 2 and aborted["active"] == 1
    usage_error(run(*v, "abort", *m), "no canary")
    pinned = ok_json(run(*v, "pin", "dev-2", 1, *m))
    assert pinned["device"] == "dev-2" and pinned["version"] == 1
    listed = ok_json(run(*v, "list", *m))
    assert [x["version"] for x in listed["versions"]] == [1, 2]
    assert listed["pins"] == {"dev-2": 1} and "config" not in listed
    drift = ok_json(run(*v, "drift", *m))
    assert drift["active"] == 1
    events = ok_json(run(*v, "events", *m))
    assert [e["action"] for e in events][:2] == ["publish", "publish"]
    assert "abort" in [e["action"] for e in events]
    text = run(*v, "list", "--db", db, "--model", "meters")
    assert text.returncode == 0 and "pinned: dev-2 -> 1" in text.stdout
    usage_error(run(*v, "promote", 9, *m), "version 9")
    usage_error(run(*v, "list", "--db", db, "--model", "nope"), "no model 'nope'")

    # the served version, read back from the database, assigns a file
    out = ok_json(run("assign", "--db", db, "--model", "meters", "--version-id", 1,
                      data / "x.npy", "-o", tmp_path / "a.csv", "--json", "--no-progress"))
    assert out["n_points"] == 3000 and out["version"] == 1


# ---------------------------------------------------------------- fit and assign


@pytest.mark.parametrize("suffix", [".msgpack", ".json"])
def test_fit_then_assign(data, tmp_path, suffix):
    centroids = tmp_path / f"c{suffix}"
    fit = ok_json(run("fit", data / "x.csv", "--k", 3, "--chunk-rows", 500, "--output", centroids,
                      "--json", "--no-progress"))
    assert fit["n_samples"] == 3000 and fit["output"] == str(centroids)
    assert fit["inertia"] > 0 and fit["seconds"] >= 0 and "config" not in fit
    assert fit["largest_chunk_bytes"] == 500 * 3 * 4
    out = ok_json(run("assign", "--version", centroids, data / "x.npy", "-o", tmp_path / "a.csv",
                      "--json", "--batch-size", 1000))
    assert out["n_points"] == 3000 and sum(out["counts"]) == 3000
    assert min(out["counts"]) > 800          # three blobs of ~1000 points, each found
    rows = (tmp_path / "a.csv").read_text().splitlines()
    assert rows[0] == "label,sqdist,score,version" and len(rows) == 3001


def test_fit_and_assign_errors(data, tmp_path):
    usage_error(run("fit", data / "x.csv", "--k", 3, "--output", tmp_path / "c.txt"),
                "must end with one of .npy, .json, .msgpack")
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,x\n")
    usage_error(run("fit", bad, "--k", 1, "--output", tmp_path / "c.npy"),
                "line 3, column 2: 'x' is not a number")
    usage_error(run("fit", data / "x.csv", "--k", 5000, "--output", tmp_path / "c.npy"),
                "fewer than k=5000")
    proc = run("fit", data / "x.npy", "--k", 2, "--output", tmp_path / "c.npy")
    assert proc.returncode == 0 and "fitted k=2 on 3000 points" in proc.stdout
    usage_error(run("assign", "--version", tmp_path / "c.npy", data / "x.csv",
                    "-o", tmp_path / "a.csv"), "centres only")
    usage_error(run("assign", "--version", tmp_path / "none.msgpack", data / "x.csv",
                    "-o", tmp_path / "a.csv"), "cannot read")


# ---------------------------------------------------------------- configuration


def test_config_precedence_flag_env_file_default(data, tmp_path):
    conf = tmp_path / "edgekm.toml"
    conf.write_text('k = 2\nchunk_rows = 700\n[fit]\nk = 3\nalgorithm = "ct"\n')

    def k_of(*flags, **env):
        shown = ok_json(run("config", "fit", *flags, "--json", env=clean_env(**env)))
        return shown["commands"]["fit"]["k"], shown

    setting, shown = k_of("--k", 7, "--config", conf, EDGEKM_K="5")
    assert setting == {"value": 7, "source": "flag", "from": "--k"}
    assert shown["config"] == str(conf) and shown["config_from"] == "flag"
    setting, _ = k_of(EDGEKM_K="5", EDGEKM_CONFIG=str(conf))
    assert setting == {"value": 5, "source": "env", "from": "EDGEKM_K"}
    setting, shown = k_of(EDGEKM_CONFIG=str(conf))
    assert setting["value"] == 3 and setting["source"] == "file" and "[fit]" in setting["from"]
    assert shown["commands"]["fit"]["chunk_rows"]["value"] == 700       # top-level key
    assert shown["config_from"] == "env"
    setting, _ = k_of()
    assert setting == {"value": None, "source": "default", "from": None}

    # a real run uses them and says which file it read
    fit = ok_json(run("fit", data / "x.npy", "--output", tmp_path / "c.npy", "--json",
                      env=clean_env(EDGEKM_CONFIG=str(conf), EDGEKM_SEED="4")))
    assert fit["n_clusters"] == 3 and fit["algorithm"] == "ct" and fit["chunk_rows"] == 700
    assert fit["config"] == str(conf)
    text = run("config", "fit", env=clean_env(EDGEKM_CONFIG=str(conf), EDGEKM_DEVICE_KEY="ab"))
    assert text.returncode == 0 and f"config file: {conf} (from EDGEKM_CONFIG)" in text.stdout
    every = ok_json(run("config", "--json", env=clean_env(EDGEKM_DEVICE_KEY="ab" * 16)))
    assert every["commands"]["device"]["key"] == {"value": "***", "source": "env",
                                                  "from": "EDGEKM_DEVICE_KEY"}
    assert set(every["commands"]) >= {"serve", "fit", "versions publish", "devices add"}


def test_config_errors(data, tmp_path):
    conf = tmp_path / "bad.toml"
    conf.write_text("[fit]\nk = 3\nchunk_size = 10\n")
    usage_error(run("fit", data / "x.npy", "--output", tmp_path / "c.npy", "--config", conf),
                f"{conf}: unknown key 'chunk_size' at [fit]")
    conf.write_text("[fitt]\nk = 3\n")
    usage_error(run("config", "--config", conf), "unknown table [fitt]")
    conf.write_text("[serve]\nport = 70000\n")
    usage_error(run("serve", "--db", tmp_path / "x.db", "--config", conf),
                f"{conf} [serve] port: must be in 0..65535, got 70000")
    conf.write_text("k = [\n")
    usage_error(run("config", env=clean_env(EDGEKM_CONFIG=str(conf))), "not valid TOML")
    usage_error(run("config", "--config", tmp_path / "missing.toml"), "cannot read the config")
    usage_error(run("fit", data / "x.npy", "--output", tmp_path / "c.npy",
                    env=clean_env(EDGEKM_K="three")),
                "EDGEKM_K='three' (environment): expected an integer, got 'three'")
    usage_error(run("bench", "--limit", 500, env=clean_env(EDGEKM_NO_PROGRESS="maybe")),
                "EDGEKM_NO_PROGRESS='maybe' (environment): expected a boolean")


def test_admin_token_from_the_environment_still_works(tmp_path):
    shown = ok_json(run("config", "serve", "--json",
                        env=clean_env(EDGEKM_ADMIN_TOKEN="s3cret", EDGEKM_PORT="9999")))
    serve = shown["commands"]["serve"]
    assert serve["admin_token"] == {"value": "***", "source": "env",
                                    "from": "EDGEKM_ADMIN_TOKEN"}
    assert serve["port"]["value"] == 9999


# ---------------------------------------------------------------- bench and demo


def test_bench(tmp_path):
    out = ok_json(run("bench", "--limit", 800, "--k", 3, "--algorithms", "cc",
                      "--baselines", "none", "--json", "--no-progress"))
    assert out["ok"] is True and out["n_samples"] == 800 and "config" not in out
    assert list(out["algorithms"]) == ["cc"] and out["baselines"] == {}
    usage_error(run("bench", "--baselines", "kmeans"), "unknown baseline 'kmeans'")


def test_demo_runs_a_small_fleet(tmp_path):
    report = tmp_path / "report.html"
    out = ok_json(run("demo", "--devices", 2, "--points", 4000, "--k", 4, "--report", report,
                      "--json", "--no-progress"))
    assert out["ok"] is True and out["failures"] == [] and "config" not in out
    assert report.exists()
    usage_error(run("demo", "--devices", 0), "--devices")


# ---------------------------------------------------------------- internal errors


def test_internal_errors_are_one_line_unless_debugging(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli.models, "run", broken)
    monkeypatch.delenv("EDGEKM_DEBUG", raising=False)
    assert cli.main(["models", "list", "--db", "x.db"]) == 1
    err = capsys.readouterr().err
    assert err == ("edgekm: internal error: RuntimeError: boom (set EDGEKM_DEBUG=1 for the "
                   "traceback)\n")
    monkeypatch.setenv("EDGEKM_DEBUG", "1")
    assert cli.main(["models", "list", "--db", "x.db"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: boom" in err


def test_fit_dtype_float64_survives_a_large_offset(tmp_path):
    """``edgekm fit --dtype float64`` reads and stores float64: 3 clusters 0.5
    apart at an offset of 1e7 come back apart; float32 chunks would round
    them onto float32's spacing of 1.0 there.  The JSON reports the dtype."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]]) + 1e7
    X = centres[rng.integers(0, 3, 3000)] + rng.normal(scale=0.05, size=(3000, 2))
    np.save(tmp_path / "far.npy", X)
    out = tmp_path / "c.json"
    fit = ok_json(run("fit", tmp_path / "far.npy", "--k", 3, "--dtype", "float64",
                      "--chunk-rows", 500, "--out", out, "--json", "--no-progress"))
    assert fit["dtype"] == "float64" and fit["largest_chunk_bytes"] == 500 * 2 * 8
    got = np.array(json.loads(out.read_text())["centers"])
    assert np.abs(np.sort(got, axis=0) - np.sort(centres, axis=0)).max() < 0.05
    usage = run("fit", tmp_path / "far.npy", "--k", 3, "--dtype", "float16", "--out", out)
    assert usage.returncode != 0
