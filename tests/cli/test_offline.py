"""Bounded-memory fitting over files (edgekm.cli.fit) and the chunked readers (edgekm._io)."""

import gzip
import io
import json
import sys
import tracemalloc

import numpy as np
import pytest

from edgekm._io import DataError, open_chunks
from edgekm.datasets import load_array
from edgekm.cli.assign import read_centroids_json
from edgekm.cli.fit import fit_file, write_centroids
from edgekm.exceptions import FitError
from edgekm.sync.wire.version import VersionError, decode_version


def blobs(n, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-20, 20, size=(k, d))
    X = centres[rng.integers(k, size=n)] + rng.normal(size=(n, d))
    return X.astype(np.float32)


def read_all(path, chunk_rows, **kw):
    reader = open_chunks(path, chunk_rows, **kw)
    chunks = list(reader)
    assert all(X.shape[0] <= chunk_rows and X.flags.c_contiguous for X, _ in chunks)
    return reader, chunks, np.concatenate([X for X, _ in chunks])


# ---------------------------------------------------------------- readers


def test_every_format_reads_the_same_rows(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    X = blobs(1000)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "f.npy", np.asfortranarray(X.astype(np.float64)))
    np.savetxt(tmp_path / "x.csv", X, delimiter=",", header="a,b,c,d", comments="", fmt="%.9g")
    with gzip.open(tmp_path / "x.csv.gz", "wt") as f:
        np.savetxt(f, X, delimiter=",", fmt="%.9g")
    pq.write_table(pa.table({f"c{j}": X[:, j] for j in range(4)}), tmp_path / "x.parquet",
                   row_group_size=300)
    for name in ("x.npy", "f.npy", "x.csv", "x.csv.gz", "x.parquet"):
        reader, chunks, got = read_all(tmp_path / name, 128)
        np.testing.assert_array_equal(got, X, err_msg=name)
        assert reader.n_features == 4
        assert sum(a for _, a in chunks) == reader.total, name   # the progress adds up
    assert open_chunks(tmp_path / "x.csv", 5).unit == "bytes"
    assert open_chunks(tmp_path / "x.npy", 5).unit == "rows"


def test_csv_header_blank_lines_and_chunk_edges(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("x, y\n\n1,2\n3,4\n\n\n5,6\n7, 8\n")
    for chunk_rows in (1, 2, 3, 100):
        reader, _, got = read_all(path, chunk_rows)
        np.testing.assert_array_equal(got, load_array(path))
    assert reader._parser.header == ["x", "y"]


def test_stdin_lines():
    reader, chunks, got = read_all("-", 2, stdin=io.StringIO("a,b\n1,2\n3,4\n5,6\n"))
    np.testing.assert_array_equal(got, [[1, 2], [3, 4], [5, 6]])
    assert [len(X) for X, _ in chunks] == [1, 2] and reader.name == "<stdin>"


@pytest.mark.parametrize("content, message", [
    ("a,b\n1,2\n3\n", "line 3 has 1 value but line 2 has 2 values"),
    ("1,2\n3,4\n5,6\n7,8\n9,x\n", "line 5, column 2: 'x' is not a number"),   # 3rd chunk
    ("1,2\n3,4\n5,6\n7\n", "line 4 has 1 value but line 1 has 2 values"),    # across chunks
    ("1,2\n3,nan\n", "line 2 has a NaN or infinite value"),
    ("a,b\n", "no data rows"),
    ("", "no data rows"),
])
def test_csv_errors_name_the_line(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        list(open_chunks(path, 2))


def test_file_errors(tmp_path):
    with pytest.raises(DataError, match="data file not found"):
        open_chunks(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="not a regular file"):
        open_chunks(tmp_path)
    (tmp_path / "x.txt").write_text("1\n")
    with pytest.raises(DataError, match="unsupported file extension .txt"):
        open_chunks(tmp_path / "x.txt")
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a .npy file"):
        open_chunks(tmp_path / "junk.npy")
    np.save(tmp_path / "flat.npy", np.arange(3.0))
    with pytest.raises(DataError, match="2-D"):
        open_chunks(tmp_path / "flat.npy")
    np.save(tmp_path / "nan.npy", np.array([[1.0], [np.inf]]))
    with pytest.raises(DataError, match="row 1 .* infinite"):
        list(open_chunks(tmp_path / "nan.npy"))
    np.save(tmp_path / "t.npy", np.ones((100, 4)))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-8])
    with pytest.raises(DataError, match="truncated"):
        open_chunks(tmp_path / "t.npy")
    (tmp_path / "latin.csv").write_bytes(b"1,2\n\xe9,3\n")
    with pytest.raises(DataError, match="line 2 is not UTF-8"):
        list(open_chunks(tmp_path / "latin.csv"))


def test_parquet_errors(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"a": [1.0, 2.0], "s": ["x", "y"]}), tmp_path / "s.parquet")
    with pytest.raises(DataError, match="column 's' is string, not numeric"):
        open_chunks(tmp_path / "s.parquet", columns=["a", "s"])
    with pytest.raises(DataError, match="no column 'b'; the columns are 'a', 's'"):
        open_chunks(tmp_path / "s.parquet", columns=["b"])
    # by default a text column is skipped, and named
    reader = open_chunks(tmp_path / "s.parquet")
    assert reader.skipped == ["'s'"] and reader.n_features == 1
    np.testing.assert_array_equal(np.concatenate([X for X, _ in reader]), [[1.0], [2.0]])
    by_number = open_chunks(tmp_path / "s.parquet", columns=["1"])
    assert by_number.columns == ["a"] and by_number.skipped == []
    pq.write_table(pa.table({"a": pa.array([1, None, 3])}), tmp_path / "n.parquet")
    with pytest.raises(DataError, match="row 1 .* missing"):
        list(open_chunks(tmp_path / "n.parquet"))
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match="cannot read as a Parquet file"):
        open_chunks(tmp_path / "bad.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)          # as if not installed
    with pytest.raises(DataError, match=r"pip install 'edgekm\[parquet\]'"):
        open_chunks(tmp_path / "n.parquet")


# ---------------------------------------------------------------- fit_file


def test_fit_file_finds_the_clusters_and_writes_every_format(tmp_path):
    X = blobs(6000)
    np.save(tmp_path / "x.npy", X)
    result = fit_file(tmp_path / "x.npy", 3, chunk_rows=500, progress=False)
    assert result["n_samples"] == 6000 and result["n_features"] == 4
    assert result["largest_chunk_bytes"] == 500 * 4 * 4
    assert result["coreset_size"] == 120 and result["memory_bytes"] > 0
    labels = np.argmin(((X[:, None, :] - result["centers"][None]) ** 2).sum(-1), axis=1)
    assert len(np.unique(labels)) == 3
    assert result["cluster_weights"].sum() == pytest.approx(6000)
    assert (np.diff(result["quantiles"], axis=1) >= 0).all()

    assert write_centroids(result, tmp_path / "c.npy") is None
    np.testing.assert_array_equal(np.load(tmp_path / "c.npy"), result["centers"])
    digest = write_centroids(result, tmp_path / "c.msgpack", model="meters")
    v = decode_version((tmp_path / "c.msgpack").read_bytes())
    assert v.digest == digest and v.model == "meters" and v.version == 1
    np.testing.assert_array_equal(v.centers, result["centers"])
    write_centroids(result, tmp_path / "c.json", model="meters")
    w = read_centroids_json((tmp_path / "c.json").read_bytes())
    np.testing.assert_array_equal(w.centers, v.centers)
    np.testing.assert_array_equal(w.quantiles, v.quantiles)
    assert json.loads((tmp_path / "c.json").read_text())["n_samples"] == 6000


def test_fit_file_errors(tmp_path):
    np.save(tmp_path / "x.npy", blobs(5))
    with pytest.raises(FitError, match="fewer than k=6"):
        fit_file(tmp_path / "x.npy", 6, progress=False)
    with pytest.raises(FitError, match="algorithm must be one of"):
        fit_file(tmp_path / "x.npy", 2, algorithm="sequential", progress=False)
    with pytest.raises(FitError, match="coreset_size"):
        fit_file(tmp_path / "x.npy", 2, coreset_size=1, progress=False)
    result = fit_file(tmp_path / "x.npy", 2, progress=False)
    with pytest.raises(FitError, match="must end with one of .npy, .json, .msgpack"):
        write_centroids(result, tmp_path / "c.txt")
    with pytest.raises(FitError, match="model"):
        write_centroids(result, tmp_path / "c.json", model="bad name")
    for text, message in [(b"[1]", "not an edgekm-centroids"), (b"{", "not JSON"),
                          (b'{"kind": "edgekm-centroids"}', "bad edgekm-centroids")]:
        with pytest.raises(VersionError, match=message):
            read_centroids_json(text)


def _peak_bytes(path, chunk_rows):
    fit_file(path, 4, chunk_rows=chunk_rows, progress=False)     # warm: imports, caches
    tracemalloc.start()
    try:
        result = fit_file(path, 4, chunk_rows=chunk_rows, progress=False)
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("suffix", [".npy", ".csv"])
def test_fit_memory_is_bounded_by_the_chunk_not_the_file(tmp_path, suffix):
    # A file 10x larger must not raise the peak: it is one chunk plus the fixed structure.
    n_small, n_big = (30_000, 300_000) if suffix == ".npy" else (10_000, 100_000)
    X = np.random.default_rng(0).normal(size=(n_big, 8)).astype(np.float32)
    for name, rows in (("small", n_small), ("big", n_big)):
        if suffix == ".npy":
            np.save(tmp_path / f"{name}.npy", X[:rows])
        else:
            np.savetxt(tmp_path / f"{name}.csv", X[:rows], delimiter=",", fmt="%.4g")
    small_peak, _ = _peak_bytes(tmp_path / f"small{suffix}", 2048)
    big_peak, result = _peak_bytes(tmp_path / f"big{suffix}", 2048)
    file_bytes = (tmp_path / f"big{suffix}").stat().st_size
    assert result["n_samples"] == n_big
    assert result["largest_chunk_bytes"] == 2048 * 8 * 4
    assert big_peak < 1.25 * small_peak, (small_peak, big_peak)
    assert big_peak < file_bytes / 3, (big_peak, file_bytes)


# ---------------------------------------------------------------- columns and delimiters


def test_csv_skips_text_columns_and_detects_the_delimiter(tmp_path):
    (tmp_path / "t.csv").write_text("when;x;label;y\n2024-01-01;1.5;a;2\n2024-01-02;3;b;4\n")
    reader = open_chunks(tmp_path / "t.csv")
    X = np.concatenate([X for X, _ in reader])
    np.testing.assert_array_equal(X, [[1.5, 2.0], [3.0, 4.0]])
    assert reader.skipped == ["'when'", "'label'"] and reader.n_features == 2
    chosen = open_chunks(tmp_path / "t.csv", columns=["y", "2"], delimiter=";")
    np.testing.assert_array_equal(np.concatenate([X for X, _ in chosen]), [[2, 1.5], [4, 3]])
    # a text cell in a numeric column further down names its line and column
    (tmp_path / "u.csv").write_text("x,y\n1,2\n3,oops\n")
    with pytest.raises(DataError, match="line 3, column 2: 'oops' is not a number"):
        list(open_chunks(tmp_path / "u.csv"))
    (tmp_path / "r.csv").write_text("ts,x\nmon,1\ntue,2,3\n")
    with pytest.raises(DataError, match=r"line 3 has 3 values but line 2 has 2 values"):
        list(open_chunks(tmp_path / "r.csv"))
    with pytest.raises(DataError, match="column '2' is chosen twice"):
        list(open_chunks(tmp_path / "t.csv", columns=["x", "2"]))


def test_npy_columns_by_number(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(12, dtype=np.float32).reshape(4, 3))
    reader = open_chunks(tmp_path / "x.npy", chunk_rows=3, columns=["3", "1"])
    np.testing.assert_array_equal(np.concatenate([X for X, _ in reader]),
                                  [[2, 0], [5, 3], [8, 6], [11, 9]])
    with pytest.raises(DataError, match="no header line, so column 'a' can only be given"):
        open_chunks(tmp_path / "x.npy", columns=["a"])
