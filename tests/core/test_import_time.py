"""The device path imports only the standard library, numpy and msgpack.

``python -X importtime`` lists every module that an import loads (one line per
module on stderr).  The device path (the estimator, assignment, the edge
filter and the device agent) must load none of the aggregator's dependencies
and not Dask: a device installs only numpy and msgpack.
"""

import importlib.util
import subprocess
import sys

import pytest

#: Top-level packages a device never needs; the aggregator, Dask and test tools.
FORBIDDEN = frozenset({
    "starlette", "uvicorn", "uvloop", "httptools", "anyio", "httpx", "scipy",
    "prometheus_client", "dask", "distributed", "pandas", "pyarrow", "sklearn",
    "river", "msgspec", "hypothesis", "pytest", "tomllib", "tomli",
})

#: Third-party packages a device does need.
ALLOWED_THIRD_PARTY = frozenset({"numpy", "msgpack"})

DEVICE_PATH = [
    "import edgekm",
    "import edgekm; edgekm.StreamingKMeans(n_clusters=2)",
    # the dict (river-style) path and a not-fitted error load neither river nor pandas nor sklearn
    "import edgekm; m = edgekm.StreamingKMeans(n_clusters=2)\n"
    "try: m.predict_one({'a': 0.0})\nexcept edgekm.NotFittedError: pass\n"
    "m.learn_one({'a': 1.0}); m.learn_one({'a': 2.0}); m.predict_one({'a': 1.5})",
    "import edgekm.assign, edgekm.filter",
    "import edgekm.sync",
    "import edgekm.sync.device.agent, edgekm.sync.device.outbox, edgekm.sync.wire.version, edgekm.sync.wire.telemetry",
]


def imported_modules(statement):
    """The top-level names of the modules that ``statement`` imports, from -X importtime."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", statement],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        module = line.rsplit("|", 1)[-1].strip()
        names.add(module.split(".")[0])
    # -X importtime also logs failed probes, such as the copy module's
    # ``from org.python.core import ...``: keep only what exists.
    return {name for name in names if importlib.util.find_spec(name) is not None}


@pytest.fixture(scope="module")
def startup():
    """What the interpreter itself loads (site, sitecustomize, ...), whatever the program."""
    return imported_modules("pass")


@pytest.mark.parametrize("statement", DEVICE_PATH)
def test_device_path_imports_no_server_or_dask_dependency(statement):
    names = imported_modules(statement)
    assert not names & FORBIDDEN, sorted(names & FORBIDDEN)


def test_device_path_third_party_imports_are_numpy_and_msgpack(startup):
    names = imported_modules("; ".join(DEVICE_PATH)) - startup
    assert "edgekm" in names
    stdlib = set(sys.stdlib_module_names) | set(sys.builtin_module_names)
    third_party = {n for n in names if n not in stdlib and not n.startswith("_")
                   and n != "edgekm"}
    assert third_party <= ALLOWED_THIRD_PARTY, sorted(third_party - ALLOWED_THIRD_PARTY)


def test_importtime_parser_sees_forbidden_modules():
    # The check above can fail: importing the server does load its dependencies.
    names = imported_modules("import edgekm.sync.cloud.http.app")
    assert {"starlette", "prometheus_client"} <= names


def test_the_core_api_loads_no_module_of_edgekm_sync():
    """core <- wire <- device: the core's public names, used, load nothing of edgekm.sync."""
    code = ("import sys\n"
            "import numpy as np\n"
            "from edgekm import StreamingKMeans, Coreset, Assigner, EdgeFilter\n"
            "import edgekm.filter, edgekm.assign, edgekm.solve, edgekm.coreset\n"
            "print(sorted(m for m in sys.modules if m == 'edgekm.sync' "
            "or m.startswith('edgekm.sync.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"
