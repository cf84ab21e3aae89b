"""`edgekm bench` (the algorithm comparison), the data loaders and the progress bar."""

import gzip
import io
import json
import math
import subprocess
import sys

import numpy
import pytest

from edgekm._progress import Progress
from edgekm.cli import main
from edgekm.datasets import load_array, load_shuttle
from edgekm.cli import bench
from edgekm.cli.bench import ALGORITHMS, BASELINES, BenchInputError, run_bench, to_json

# ---------------------------------------------------------------- bench


@pytest.fixture(scope="module")
def small_bench():
    out = io.StringIO()
    result = run_bench(n_clusters=5, limit=5000, query_every=1000, progress=False, out=out)
    return result, out.getvalue()


def test_run_bench_result_is_sane(small_bench):
    result, _ = small_bench
    assert result["ok"], result
    assert result["n_samples"] == 5000
    assert result["n_features"] == 9
    assert result["n_clusters"] == 5
    assert result["batch"]["cost"] > 0
    assert list(result["algorithms"]) == list(ALGORITHMS)
    for name, row in result["algorithms"].items():
        assert "error" not in row, (name, row)
        ratio = row["cost_ratio"]
        assert math.isfinite(ratio) and ratio >= 0.9, (name, ratio)
        assert row["memory_bytes"] > 0, name
        assert row["memory_kib"] == row["memory_bytes"] / 1024
        assert row["n_seen"] == 5000, name
        assert row["n_queries"] == 5, name
        assert row["update_us_per_point"] > 0, name
        assert row["query_ms_per_query"] >= 0, name


def test_run_bench_compares_with_the_installed_baselines(small_bench):
    result, _ = small_bench
    assert list(result["baselines"]) == list(BASELINES)
    for name, row in result["baselines"].items():
        if "skipped" in row:            # the other library is not installed here
            assert "not installed" in row["skipped"]
            continue
        assert "error" not in row, (name, row)
        assert row["library"] in ("scikit-learn", "river")
        assert math.isfinite(row["cost_ratio"]) and row["cost_ratio"] >= 0.9, (name, row)
        assert row["n_seen"] == 5000 and row["n_queries"] == 5, (name, row)
        assert row["memory_bytes"] is None


def test_run_bench_reports_a_missing_baseline_as_skipped(monkeypatch):
    monkeypatch.setattr(bench, "_import_baseline", lambda name: None)
    out = io.StringIO()
    result = run_bench(n_clusters=3, algorithms="cc", limit=600, progress=False, out=out)
    assert result["ok"]
    assert result["baselines"] == {"minibatch": {"skipped": "scikit-learn is not installed"},
                                   "river": {"skipped": "river is not installed"}}
    assert "minibatch * skipped: scikit-learn is not installed" in out.getvalue()


def test_run_bench_prints_a_table(small_bench):
    _, text = small_bench
    assert "cost/batch" in text
    for name in ALGORITHMS:
        assert f"\n{name} " in text
    assert "FAILED" not in text


def test_run_bench_is_seeded():
    kwargs = dict(n_clusters=3, algorithms="cc,sequential", limit=1500, progress=False, out=None)
    a = run_bench(baselines="none", seed=3, **kwargs)
    b = run_bench(baselines="none", seed=3, **kwargs)
    for name in ("cc", "sequential"):
        assert a["algorithms"][name]["cost"] == b["algorithms"][name]["cost"]
    assert a["batch"]["cost"] == b["batch"]["cost"]


def test_run_bench_on_an_array_keeps_its_order_and_queries_past_the_end():
    rng = numpy.random.default_rng(0)
    X = numpy.concatenate([rng.normal(c, 0.1, size=(300, 2)) for c in (0.0, 5.0, 10.0)])
    result = run_bench(X, n_clusters=3, algorithms=["cc"], query_every=250, batch_size=64,
                       progress=False, out=None, baselines="none")
    assert result["data"]["shuffled"] is False
    row = result["algorithms"]["cc"]
    assert row["n_queries"] == 900 // 250
    assert row["cost_ratio"] < 1.5


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_clusters": 0}, "n_clusters"),
        ({"query_every": 0}, "query_every"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"limit": 0}, "limit"),
        ({"algorithms": "cc,kmeans"}, "unknown algorithm 'kmeans'"),
        ({"algorithms": "cc,cc"}, "twice"),
        ({"algorithms": []}, "no algorithm"),
        ({"baselines": "minibatch,kmeans"}, "unknown baseline 'kmeans'"),
        ({"data": numpy.ones(5)}, "2-D"),
        ({"data": numpy.full((4, 2), numpy.nan)}, "NaN"),
        ({"data": numpy.ones((4, 2)), "n_clusters": 5}, "fewer than n_clusters"),
    ],
)
def test_run_bench_rejects_bad_input(kwargs, message):
    with pytest.raises(BenchInputError, match=message):
        run_bench(progress=False, out=None, **{"baselines": "none", **kwargs})


def test_to_json_is_strict():
    text = to_json({"a": float("nan"), "b": [1.5, float("inf")], "c": {"d": 2}})
    assert json.loads(text) == {"a": None, "b": [1.5, None], "c": {"d": 2}}


# ---------------------------------------------------------------- command line


def test_cli_bench_json(capsys):
    status = main(["bench", "--baselines", "none", "--limit", "3000", "--json", "--no-progress"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    result = json.loads(captured.out)
    assert result["ok"] is True
    assert result["n_samples"] == 3000
    assert set(result["algorithms"]) == set(ALGORITHMS)
    for row in result["algorithms"].values():
        assert row["cost_ratio"] >= 0.9
        assert row["memory_bytes"] > 0


def test_cli_bench_table(capsys):
    argv = ["bench", "--baselines", "none", "--limit", "1200", "--k", "4",
            "--algorithms", "ct,onlinecc", "--query-every", "500", "--no-progress"]
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "cost/batch" in captured.out
    assert "onlinecc" in captured.out and "rcc" not in captured.out


def test_cli_bench_reads_a_data_file(tmp_path, capsys):
    X = load_shuttle()[:800]
    path = tmp_path / "points.csv"
    numpy.savetxt(path, X, delimiter=",", header="a,b,c,d,e,f,g,h,i", comments="")
    argv = ["bench", "--baselines", "none", "--data", str(path), "--k", "3",
            "--algorithms", "cc", "--json", "--no-progress"]
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    result = json.loads(captured.out)
    assert result["n_samples"] == 800
    assert result["data"] == {"name": str(path), "shuffled": False}


def _assert_usage_error(status, err, fragment):
    assert status == 2
    assert "edgekm: error:" in err
    assert fragment in err
    assert "Traceback" not in err


def test_cli_missing_data_file(tmp_path, capsys):
    missing = tmp_path / "nope.csv"
    status = main(["bench", "--baselines", "none", "--data", str(missing), "--no-progress"])
    _assert_usage_error(status, capsys.readouterr().err, "not found")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "a command is required"),
        (["frobnicate"], "invalid choice"),
        (["bench", "--k", "0"], "--k"),
        (["bench", "--k", "ten"], "--k"),
        (["bench", "--limit", "-3"], "--limit"),
        (["bench", "--seed", "-1"], "--seed"),
        (["bench", "--algorithms", "cc,foo"], "unknown algorithm 'foo'"),
    ],
)
def test_cli_usage_errors(argv, fragment, capsys):
    status = main(argv)
    _assert_usage_error(status, capsys.readouterr().err, fragment)


def test_cli_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "bench" in capsys.readouterr().out
    assert main(["bench", "--help"]) == 0
    assert "--query-every" in capsys.readouterr().out


def test_python_m_edgekm_reports_errors_without_traceback(tmp_path):
    missing = tmp_path / "nope.npy"
    proc = subprocess.run(
        [sys.executable, "-m", "edgekm", "bench", "--data", str(missing)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    _assert_usage_error(proc.returncode, proc.stderr, "not found")


# ---------------------------------------------------------------- data loading


def test_load_shuttle():
    X, y = load_shuttle(return_labels=True)
    assert X.shape == (49097, 9) and X.dtype == numpy.float32 and X.flags.c_contiguous
    assert y.shape == (49097,) and int(y.sum()) == 3511
    assert set(numpy.unique(y)) == {0, 1}
    X64 = load_shuttle(dtype=numpy.float64)
    assert X64.dtype == numpy.float64
    numpy.testing.assert_array_equal(X64, X)  # small integers: exact in float32


def test_load_array_csv_with_header(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("x, y ,z\n1,2,3\n\n4.5, -6, 7e1\n")
    X = load_array(path)
    assert X.dtype == numpy.float32 and X.flags.c_contiguous
    numpy.testing.assert_array_equal(X, [[1, 2, 3], [4.5, -6, 70]])


def test_load_array_csv_without_header(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("1,2\n3,4\n5,6\n")
    X = load_array(str(path), dtype=numpy.float64)
    assert X.dtype == numpy.float64
    numpy.testing.assert_array_equal(X, [[1, 2], [3, 4], [5, 6]])


def test_load_array_single_column_is_2d(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("v\n1\n2\n")
    assert load_array(path).shape == (2, 1)


def test_load_array_csv_gz(tmp_path):
    path = tmp_path / "g.csv.gz"
    with gzip.open(path, "wt") as f:
        f.write("a,b\n1,2\n3,4\n")
    numpy.testing.assert_array_equal(load_array(path), [[1, 2], [3, 4]])


def test_load_array_npy(tmp_path):
    path = tmp_path / "a.npy"
    data = numpy.asfortranarray(numpy.arange(12, dtype=numpy.int64).reshape(4, 3))
    numpy.save(path, data)
    X = load_array(path)
    assert X.dtype == numpy.float32 and X.flags.c_contiguous
    numpy.testing.assert_array_equal(X, data)


def _write(path, content):
    if isinstance(content, numpy.ndarray):
        numpy.save(path, content)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("missing.csv", None, "not found"),
        ("data.txt", "1,2\n", "unsupported file extension .txt"),
        ("data", "1,2\n", "unsupported file extension"),
        ("ragged.csv", "a,b\n1,2\n3\n", "line 3 has 1 value but line 2 has 2 values"),
        ("text.csv", "1,2\n3,x\n", "line 2, column 2: 'x' is not a number"),
        ("empty.csv", "", "no data rows"),
        ("header_only.csv", "a,b\n", "no data rows"),
        ("latin1.csv", b"a,\xe9\n1,2\n", "UTF-8"),
        ("bad.csv.gz", b"not gzip", "cannot read"),
        ("flat.npy", numpy.arange(5.0), "2-D"),
        ("empty.npy", numpy.empty((0, 3)), "empty"),
        ("strings.npy", numpy.array([["a", "b"]]), "numeric"),
        ("junk.npy", b"junk", "not a .npy file"),
    ],
)
def test_load_array_errors(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        _write(path, content)
    with pytest.raises(ValueError, match=message):
        load_array(path)


def test_load_array_rejects_a_directory_and_a_non_float_dtype(tmp_path):
    with pytest.raises(ValueError, match="not a regular file"):
        load_array(tmp_path)
    path = _write(tmp_path / "a.csv", "1,2\n")
    with pytest.raises(ValueError, match="floating"):
        load_array(path, dtype=numpy.int32)


# ---------------------------------------------------------------- progress bar


def test_progress_is_silent_when_not_a_terminal():
    buf = io.StringIO()
    with Progress(10, "x", file=buf) as bar:
        bar.update(10)
    assert buf.getvalue() == ""
    assert not bar.enabled


def test_progress_forced_draws_and_ends_the_line():
    buf = io.StringIO()
    with Progress(4, "algo", force=True, file=buf, min_interval=0.0) as bar:
        for _ in range(4):
            bar.update(1)
    text = buf.getvalue()
    assert text.startswith("\ralgo [") and text.endswith("4/4\n")
    assert "100%" in text


def test_progress_is_rate_limited():
    buf = io.StringIO()
    with Progress(10_000, force=True, file=buf, min_interval=3600) as bar:
        for _ in range(10_000):
            bar.update(1)
    # the first draw, then only the final one
    assert buf.getvalue().count("\r") == 2
