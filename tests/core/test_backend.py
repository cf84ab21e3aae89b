"""Backend selection: the compiled core, the forced NumPy reference, and the
fallback (with a BackendWarning) when the compiled module cannot be imported.

Each scenario runs in a fresh interpreter, since the backend is chosen once,
at import.
"""

import io
import json
import os
import subprocess
import sys
import textwrap

import pytest

import edgekm

#: Prints one JSON line: the config and the results of a small, seeded workload
#: that touches every algorithm, both dtypes, partial_fit, learn_one, queries
#: between batches, the coreset, predict and Coreset.merge / fit_centers.
WORKLOAD = textwrap.dedent("""
    import io, json, sys, warnings
    warnings.simplefilter("error")          # no stray warnings in a clean import
    {prelude}
    import numpy as np
    import edgekm
    from edgekm import Coreset, StreamingKMeans

    info = edgekm.show_config(file=io.StringIO())
    rng = np.random.default_rng(0)
    X = rng.normal(size=(700, 3))
    w = rng.integers(1, 4, len(X)).astype(float)
    out = {{}}
    for algorithm in ("ct", "cc", "rcc", "onlinecc", "sequential"):
        for dtype in ("float32", "float64"):
            m = StreamingKMeans(3, algorithm=algorithm, coreset_size=15, n_init=2,
                                dtype=dtype, random_state=7)
            seen = []
            for Xb, wb in zip(np.array_split(X[:600], 5), np.array_split(w[:600], 5)):
                m.partial_fit(Xb, sample_weight=wb)
                seen.append(m.cluster_centers_.tobytes().hex())
            for x in X[600:].astype(dtype):
                m.learn_one(x, 2.0)
            c = m.coreset()
            out[algorithm + "-" + dtype] = {{
                "centers": seen + [m.cluster_centers_.tobytes().hex()],
                "inertia": m.inertia_.hex(),
                "labels": m.predict(X[:50]).tolist(),
                "coreset": [c.points.tobytes().hex(), c.weights.tobytes().hex(), c.level],
                "stats": m.stats(),
            }}
    a = Coreset(X[:300], w[:300])
    b = Coreset(X[300:], w[300:], level=2)
    merged = a.merge(b, size=40, random_state=3)
    centers, weights, cost = merged.fit_centers(3, random_state=4)
    out["coreset"] = [merged.points.tobytes().hex(), merged.weights.tobytes().hex(),
                      merged.level, centers.tobytes().hex(), weights.tobytes().hex(),
                      cost.hex(), merged.cost(centers).hex()]
    print(json.dumps({{"config": info, "results": out}}))
""")

#: A meta-path finder that makes the compiled module fail to import.
BLOCKER = textwrap.dedent("""
    class _Block:
        def find_spec(self, name, path=None, target=None):
            if name == {blocked!r}:
                raise ImportError("blocked by the test: " + name)
            return None
    sys.meta_path.insert(0, _Block())
""")


def _run(code, env_value=None):
    env = dict(os.environ)
    env.pop("EDGEKM_PUREPYTHON", None)
    if env_value is not None:
        env["EDGEKM_PUREPYTHON"] = env_value
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc


def _workload(prelude="", env_value=None):
    proc = _run(WORKLOAD.format(prelude=prelude), env_value)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.fixture(scope="module")
def compiled():
    result, stderr = _workload(env_value="0")      # "0" does not force the reference
    assert stderr == ""
    return result


@pytest.fixture(scope="module")
def reference():
    result, stderr = _workload(env_value="1")
    assert stderr == ""
    return result


def test_compiled_backend_is_used_by_default(compiled):
    config = compiled["config"]
    assert config["backend"] == "cython"
    assert config["forced_by_EDGEKM_PUREPYTHON"] is False
    assert config["import_error"] is None


def test_environment_variable_forces_the_reference(reference):
    config = reference["config"]
    assert config["backend"] == "reference"
    assert config["forced_by_EDGEKM_PUREPYTHON"] is True
    assert config["import_error"] is None


@pytest.mark.parametrize("value,backend", [("", "cython"), ("  ", "cython"),
                                           ("yes", "reference"), (" 1 ", "reference")])
def test_environment_variable_values(value, backend):
    proc = _run("import edgekm, io; print(edgekm.show_config(file=io.StringIO())['backend'])",
                env_value=value)
    assert proc.stdout.strip() == backend
    assert proc.stderr == ""


def test_backends_give_bit_identical_results(compiled, reference):
    assert compiled["results"].keys() == reference["results"].keys()
    for key, expected in compiled["results"].items():
        assert reference["results"][key] == expected, key


@pytest.mark.parametrize("blocked", ["edgekm._core._ops", "edgekm._core._engine"])
def test_fallback_warns_and_runs_the_reference(blocked, reference):
    code = textwrap.dedent("""
        import io, json, sys, warnings
        {blocker}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import edgekm
        import edgekm._backend
        import numpy as np
        info = edgekm.show_config(file=io.StringIO())
        model = edgekm.StreamingKMeans(3, random_state=0).fit(
            np.random.default_rng(0).normal(size=(200, 2)))
        print(json.dumps({{
            "warnings": [[w.category.__module__ + "." + w.category.__name__, str(w.message)]
                         for w in caught],
            "is_backend_warning": [issubclass(w.category, edgekm.BackendWarning)
                                   for w in caught],
            "config": info,
            "ops": edgekm._backend.ops.__name__,
            "engine": edgekm._backend.Engine.__module__,
            "centers": model.cluster_centers_.shape,
        }}))
    """).format(blocker=BLOCKER.format(blocked=blocked))
    proc = _run(code)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["is_backend_warning"] == [True], result["warnings"]
    message = result["warnings"][0][1]
    assert "compiled core could not be imported" in message
    assert "blocked by the test" in message
    assert "EDGEKM_PUREPYTHON=1" in message
    config = result["config"]
    assert config["backend"] == "reference"
    assert config["forced_by_EDGEKM_PUREPYTHON"] is False
    assert config["import_error"] == f"blocked by the test: {blocked}"
    # both halves come from the reference, never a mix
    assert result["ops"] == "edgekm._reference.ops"
    assert result["engine"] == "edgekm._reference.engine"
    assert result["centers"] == [3, 2]


def test_fallback_results_equal_the_forced_reference(reference):
    blocker = BLOCKER.format(blocked="edgekm._core._ops")
    prelude = ("warnings.filterwarnings('ignore', message='edgekm: the compiled core')\n"
               + blocker)
    result, _ = _workload(prelude=prelude)
    assert result["config"]["backend"] == "reference"
    assert result["results"] == reference["results"]


def test_fallback_warning_is_an_error_under_strict_warnings():
    code = "import sys, warnings\nwarnings.simplefilter('error')\n" + \
        BLOCKER.format(blocked="edgekm._core._ops") + "import edgekm\n"
    env = dict(os.environ)
    env.pop("EDGEKM_PUREPYTHON", None)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode != 0
    assert "BackendWarning" in proc.stderr


def test_show_config_prints_and_returns():
    buf = io.StringIO()
    info = edgekm.show_config(file=buf)
    assert set(info) == {"edgekm", "backend", "forced_by_EDGEKM_PUREPYTHON", "import_error",
                         "numpy", "python"}
    assert info["edgekm"] == edgekm.__version__
    assert info["backend"] in ("cython", "reference")
    text = buf.getvalue()
    for key, value in info.items():
        assert f"{key}: {value}\n" in text


def test_show_config_prints_to_stdout_by_default(capsys):
    info = edgekm.show_config()
    out = capsys.readouterr().out
    assert f"backend: {info['backend']}" in out


def test_public_surface():
    assert set(edgekm.__all__) == {"StreamingKMeans", "Coreset", "show_config", "EdgekmError",
                                   "NotFittedError", "BackendWarning", "__version__",
                                   "Assigner", "AssignResult", "EdgeFilter"}
    for name in edgekm.__all__:
        assert hasattr(edgekm, name)
    assert issubclass(edgekm.BackendWarning, UserWarning)
