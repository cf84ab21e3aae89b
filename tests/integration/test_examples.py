"""Every ``examples/*.py`` runs, as a user would run it, and says what it promised.

The examples are found by glob, so that a new example is tested as soon as it
is added: it must run with no arguments in a fresh directory, exit 0, print
something, explain itself in its module docstring and be listed in
``examples/README.md``.  The examples below also have their key lines checked.
"""

import ast
import json
import os
import re
import subprocess
import sys
import urllib.request

import pytest
from helpers import ROOT
from helpers.serve import start_serve, stop_serve

EXAMPLES_DIR = ROOT / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.py"))

#: optional modules an example needs (skipped, not failed, when one is absent)
REQUIRES = {
    "device_telemetry.py": ("uvicorn", "starlette", "scipy"),
    "cloud_merge.py": ("uvicorn", "starlette", "scipy"),
    "assign_file.py": ("scipy",),
    "sklearn_pipeline.py": ("sklearn",),
    "dask_fit.py": ("dask", "distributed"),
}

#: lines the output must contain (regular expressions, searched in stdout)
EXPECTED = {
    "device_telemetry.py": [
        r"published version 1 \(active, k=6\) from 1440 readings",
        r"device: pulled centroid version 1; the edge filter is on",
        r"rows read: 5,760 \(7 readings each\)",
        r"telemetry summaries: \d+ \([\d,]+ bytes for 4,320 readings\)",
        r"uploaded in all: [\d,]+ bytes = \d+\.\d% of the float32 readings",
        r"device accounting: ingested 5760, acknowledged 5760, pending 0, rejected 0",
        r"aggregator: merged weight 5760 from this run",
        r"every reading accounted for: yes",
    ],
    "cloud_merge.py": [
        r"4 devices registered",
        r"total weight 49,097 == points ingested 49,097: True",
        r"published version 1 \(active\): k=10",
        r"merged from 4 devices \(version 1\) +\S+ +\(1\.0\d\d x batch\)",
    ],
    "assign_file.py": [
        r"published version 1 ",
        r"assigned 9,097 rows of readings\.csv to version 1",
        r"score > 1 \(beyond the cluster's 99th percentile\): \d+ points",
        r"wrote the same file: True",
    ],
    "dask_fit.py": [
        r"total weight 49,097 == rows 49,097: True",
        r"same seed and partitions, same centres: True",
        r"seed pushed: 1 frame\(s\), aggregator total weight 49,097",
        r"published version 1 \(active, k=10\) trained on 49,097 points",
    ],
    "sklearn_pipeline.py": [
        r"predicted 9,097 new points",
        r"adjusted Rand index, 1 = same partition\): 0\.9\d\d",
        r"n_clusters=12: -\d",
    ],
}


def _missing(name):
    missing = []
    for module in REQUIRES.get(name, ()):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    return missing


def _run(args, cwd, timeout=120, env=None):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def _check_clean(proc):
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Warning:" not in proc.stderr, proc.stderr


def test_the_examples_are_found():
    names = {p.name for p in EXAMPLES}
    assert set(EXPECTED) <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, tmp_path):
    missing = _missing(path.name)
    if missing:
        pytest.skip(f"{path.name} needs {', '.join(missing)}")
    proc = _run([str(path)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_clean(proc)
    assert proc.stdout.strip(), f"{path.name} printed nothing"
    for pattern in EXPECTED.get(path.name, ()):
        assert re.search(pattern, proc.stdout), f"{pattern!r} not in:\n{proc.stdout}"
    assert not any(tmp_path.iterdir()), "an example left files in the working directory"


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_explains_itself_and_is_listed(path):
    docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert docstring and len(docstring.split()) >= 40, f"{path.name} needs a module docstring"
    assert f"python examples/{path.name}" in docstring, "the docstring says how to run it"
    readme = (EXAMPLES_DIR / "README.md").read_text(encoding="utf-8")
    assert f"examples/{path.name}" in readme, f"{path.name} is not listed in examples/README.md"


def test_sklearn_example_without_sklearn_says_how_to_install_and_exits_2(tmp_path):
    path = EXAMPLES_DIR / "sklearn_pipeline.py"
    hide = ("import sys, runpy; sys.modules['sklearn'] = None; "     # import sklearn fails
            f"runpy.run_path({str(path)!r}, run_name='__main__')")
    proc = _run(["-c", hide], cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "pip install scikit-learn" in proc.stderr
    assert "Traceback" not in proc.stderr


def _get(url, token=None):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
        return json.loads(r.read())


def test_examples_against_a_running_edgekm_serve(tmp_path):
    """``--server``: the two device examples work with an aggregator run by ``edgekm serve``."""
    for name in ("device_telemetry.py", "cloud_merge.py"):
        if _missing(name):
            pytest.skip(f"{name} needs {', '.join(_missing(name))}")
    db, token = str(tmp_path / "served.db"), "test-admin-token"
    env = dict(os.environ, EDGEKM_ADMIN_TOKEN=token)
    keys = {}
    for device in ("pi-1", "dev-a", "dev-b"):
        added = _run(["-m", "edgekm", "devices", "add", device, "--db", db, "--json"],
                     cwd=tmp_path)
        assert added.returncode == 0, added.stderr
        keys[device] = json.loads(added.stdout)["key"]
    server, url = start_serve(db, env=env, cwd=tmp_path)
    try:
        assert _get(url + "/healthz")["status"] == "ok"
        telemetry = _run([str(EXAMPLES_DIR / "device_telemetry.py"), "--server", url,
                          "--device", "pi-1", "--key", keys["pi-1"]], cwd=tmp_path, env=env)
        assert telemetry.returncode == 0, telemetry.stdout + telemetry.stderr
        _check_clean(telemetry)
        assert "aggregator: merged weight 5760 from this run" in telemetry.stdout
        merge = _run([str(EXAMPLES_DIR / "cloud_merge.py"), "--server", url,
                      "--device", f"dev-a:{keys['dev-a']}", "--device", f"dev-b:{keys['dev-b']}"],
                     cwd=tmp_path, env=env)
        assert merge.returncode == 0, merge.stdout + merge.stderr
        _check_clean(merge)
        assert "total weight 49,097 == points ingested 49,097: True" in merge.stdout
        # what the examples did is on the server, not only in their output
        assert _get(url + "/v1/models/household-power", token)["total_weight"] == 5760
        shuttle = _get(url + "/v1/models/shuttle", token)
        assert shuttle["total_weight"] == 49097 and shuttle["devices"] == 2
        versions = _get(url + "/v1/models/shuttle/versions", token)
        assert [v["version"] for v in versions["versions"]] == [1]
    finally:
        err = stop_serve(server)
    assert server.returncode == 0, err
