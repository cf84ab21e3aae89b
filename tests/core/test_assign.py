"""edgekm.Assigner against the NumPy reference, the anomaly score, assign_one and the CLI."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from helpers.versions import blobs, make_version
from edgekm import Assigner, AssignResult, _backend
from edgekm._reference import assign as ref
from edgekm.sync.wire.version import CentroidVersion, encode_version


def _ref_assign(v, X):
    k = ref.AssignKernel(np.asarray(v.centers, dtype=np.float64), v.quantiles[:, 2], v.version,
                         v.centers.dtype == np.float32)
    n = X.shape[0]
    out = (np.empty(n, np.int32), np.empty(n), np.empty(n))
    k.assign_into(np.ascontiguousarray(X, dtype=v.centers.dtype), *out)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,d", [(1, 1), (3, 2), (5, 4), (7, 9), (13, 34), (30, 10)])
def test_matches_reference_bit_for_bit(dtype, k, d):
    X, centers = blobs(2003, k=k, d=d, seed=k * d, dtype=dtype)
    v = make_version(X, centers, dtype=dtype)
    r = Assigner(v).assign(X)
    labels, dist, scores = _ref_assign(v, X)
    assert r.labels.dtype == np.int32 and r.distances.dtype == np.float64
    assert np.array_equal(r.labels, labels)
    assert r.distances.tobytes() == dist.tobytes()
    assert r.scores.tobytes() == scores.tobytes()
    assert r.version == v.version == 1
    # the same arithmetic as the engine's assign kernel
    lab2, d2 = _backend.ops.assign(X, np.asarray(v.centers, dtype=np.float64))
    assert np.array_equal(lab2, r.labels) and d2.tobytes() == r.distances.tobytes()


@pytest.mark.skipif(_backend.NAME != "cython", reason="compiled kernel variants")
@pytest.mark.parametrize("kernel", ["avx2", "simd", "scalar"])
def test_kernel_variants_agree(kernel):
    from edgekm._core import _assign

    if kernel == "avx2" and _assign.KERNEL != "avx2":
        pytest.skip("no AVX2 here")
    X, centers = blobs(1001, k=6, d=7, seed=3)
    v = make_version(X, centers)
    kern = _assign.AssignKernel(np.asarray(v.centers, dtype=np.float64),
                                np.ascontiguousarray(v.quantiles[:, 2]), 1,
                                False, kernel)
    out = (np.empty(1001, np.int32), np.empty(1001), np.empty(1001))
    kern.assign_into(X, *out)
    labels, dist, scores = _ref_assign(v, X)
    assert np.array_equal(out[0], labels) and out[1].tobytes() == dist.tobytes()
    for i in (0, 5, 1000):
        assert kern.assign_one(X[i]) == (labels[i], dist[i], scores[i], 1)


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e7])
@pytest.mark.parametrize("k,d", [(20, 1), (24, 7), (30, 10), (41, 74)])
def test_float32_filter_is_bit_identical(k, d, offset):
    """The float32 filter (k >= ASSIGN_F32_FILTER_MIN_CLUSTERS, AVX2) gives the
    float64 kernel's labels, distances and scores bit for bit: on random
    points, on integer grids full of exact ties, and far from zero (where its
    error bound sends most points to the exact path)."""
    from edgekm._defaults import ASSIGN_F32_FILTER_MIN_CLUSTERS
    assert k >= ASSIGN_F32_FILTER_MIN_CLUSTERS
    rng = np.random.default_rng(k * d)
    centers = (rng.normal(size=(k, d)) * 3 + offset).astype(np.float32)
    X = (centers[rng.integers(0, k, 3001)] + rng.normal(size=(3001, d))).astype(np.float32)
    grid = np.round(rng.normal(size=(999, d)) * 2 + offset).astype(np.float32)
    for C, P in ((centers, X), (np.round(centers), grid)):
        v = make_version(P, C.astype(np.float32), dtype=np.float32)
        a = Assigner(v, n_threads=1)
        if _backend.NAME == "cython" and _backend.assign.KERNEL == "avx2":
            assert a._kernel.f32_filter
        got = a.assign(P)
        exp = _ref_assign(v, P)
        np.testing.assert_array_equal(got.labels, exp[0])
        assert got.distances.tobytes() == exp[1].tobytes()
        assert got.scores.tobytes() == exp[2].tobytes()


def test_ties_go_to_the_lowest_label():
    X = np.array([[0.0, 0.0], [1.0, 0.0]])
    centers = np.array([[2.0, 0.0], [-1.0, 0.0], [-1.0, 0.0], [2.0, 0.0], [0.5, 0.0]])
    v = make_version(X, centers)
    r = Assigner(v).assign(np.array([[0.5, 0.0], [0.5, 3.0], [1.25, 0.0]]))
    assert r.labels.tolist() == [4, 4, 0]          # 1.25: 0.5625 to both 2.0 and 0.5
    r = Assigner(v).assign(np.array([[-1.0, 0.0], [2.0, 0.0]]))
    assert r.labels.tolist() == [1, 0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_assign_one_equals_assign_row_by_row(dtype):
    X, centers = blobs(300, k=10, d=10, seed=5, dtype=dtype)
    v = make_version(X, centers, dtype=dtype)
    a = Assigner(v)
    r = a.assign(X)
    for i in range(len(X)):
        assert a.assign_one(X[i]) == (r.labels[i], r.distances[i], r.scores[i], 1)
    # the slow path: a list, another dtype, a strided view
    assert a.assign_one(X[3].tolist())[:2] == a.assign_one(np.ascontiguousarray(X[3]))[:2]
    other = X[7].astype(np.float64 if dtype == np.float32 else np.float32)
    assert a.assign_one(other)[0] == Assigner(v).assign(other[None])[0][0]
    assert a.assign_one(np.asfortranarray(X[:, :])[9])[0] == r.labels[9]


def test_assign_one_validates():
    X, centers = blobs(50, k=2, d=3)
    a = Assigner(make_version(X, centers))
    with pytest.raises(ValueError, match="NaN"):
        a.assign_one(np.array([0.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="features"):
        a.assign_one(np.zeros(4))
    with pytest.raises(ValueError, match="1-D"):
        a.assign_one(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="NaN"):
        a.assign(np.array([[0.0, np.inf, 1.0]]))
    assert len(a.assign(np.zeros((0, 3))).labels) == 0


def test_scores_per_the_contract_with_zero_quantiles():
    centers = np.array([[0.0, 0.0], [10.0, 0.0]])
    q = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 4.0]])
    v = CentroidVersion(model="m", version=7, parent=None, created=0.0, centers=centers,
                        cluster_weights=np.array([3.0, 2.0]), quantiles=q,
                        training_weight=5.0, cost=1.0)
    r = Assigner(v).assign([[0.0, 0.0], [0.0, 1.0], [10.0, 2.0], [12.0, 0.0], [10.0, 0.0]])
    assert r.labels.tolist() == [0, 0, 1, 1, 1]
    assert r.scores[0] == 0.0 and math.isinf(r.scores[1])
    assert r.scores[2:].tolist() == [1.0, 1.0, 0.0]
    assert r.version == 7 and isinstance(r, AssignResult)
    assert Assigner(v).assign_one(np.array([0.0, 1.0]))[2] == math.inf


def test_threads_do_not_change_the_result():
    X, centers = blobs(70000, k=8, d=5, seed=9, dtype=np.float32)
    v = make_version(X, centers, dtype=np.float32)
    one = Assigner(v, n_threads=1).assign(X)
    many = Assigner(v, n_threads=3).assign(X)
    for a, b in zip(one[:3], many[:3]):
        assert a.tobytes() == b.tobytes()


def test_constructor_checks():
    with pytest.raises(TypeError):
        Assigner(np.zeros((2, 2)))
    X, centers = blobs(20, k=2, d=2)
    with pytest.raises(ValueError):
        Assigner(make_version(X, centers), n_threads=0)


# ---------------------------------------------------------------- CLI
def _cli(*args):
    return subprocess.run([sys.executable, "-m", "edgekm", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("fmt", ["csv", "npy"])
def test_cli_assign(tmp_path, fmt):
    X, centers = blobs(500, k=4, d=3, seed=2)
    v = make_version(X, centers, version=5)
    vfile = tmp_path / "v5.msgpack"
    vfile.write_bytes(encode_version(v)[0])
    data = tmp_path / f"in.{fmt}"
    if fmt == "npy":
        np.save(data, X)
    else:
        np.savetxt(data, X, delimiter=",", header="a,b,c", comments="", fmt="%.17g")
    out = tmp_path / "out.csv"
    p = _cli("assign", "--version", str(vfile), str(data), "-o", str(out), "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["n_points"] == 500 and summary["version"] == 5
    rows = np.genfromtxt(out, delimiter=",", names=True)
    assert rows.dtype.names == ("label", "sqdist", "score", "version")
    r = Assigner(v).assign(X)
    assert np.array_equal(rows["label"].astype(int), r.labels)
    assert np.array_equal(rows["sqdist"], r.distances)
    assert np.all(rows["version"] == 5)


def test_cli_assign_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"not a version")
    data = tmp_path / "x.npy"
    np.save(data, np.zeros((3, 3)))
    p = _cli("assign", "--version", str(bad), str(data), "-o", str(tmp_path / "o.csv"))
    assert p.returncode == 2 and "edgekm: error:" in p.stderr
