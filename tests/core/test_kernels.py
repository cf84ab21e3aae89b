"""The compiled kernels (``edgekm._core._ops``) against their NumPy twin
(``edgekm._reference.ops``), and the invariants of each kernel.

docs/internals.md specifies the arithmetic and the draw order, so the two
backends are expected to agree bit for bit: every comparison between them is
``array_equal`` / ``==``.  float32 input is compared with float64 input in two
ways: the same values (float32 upcast) must give identical results, because
every kernel computes in float64; rounded values (float64 data cast to float32)
must agree within the stated tolerances.
"""

import numpy as np
import pytest

from helpers.engine import mixture
from edgekm._core import _ops
from edgekm._reference import ops as ref
from edgekm._reference.rng import Rng, splitmix64

DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["f32", "f64"]

# (n, d, k): d < 8 and d >= 8 (the compiled loops have no special case, but
# vectorised code often does), n small and large, k from 1
SHAPES = [(1, 1, 1), (7, 3, 2), (50, 2, 5), (400, 8, 4), (1500, 13, 8), (3000, 5, 16)]
SHAPE_IDS = [f"n{n}-d{d}-k{k}" for n, d, k in SHAPES]

# float32 data rounded from float64: squared distances of O(100) carry a
# relative error ~ d * 2**-24 * |x|/dist; 1e-4 relative covers every shape here
F32_RTOL = 1e-4


def _data(n, d, dtype, seed=0, spread=10.0, n_centres=4):
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-spread, spread, size=(n_centres, d))
    return np.ascontiguousarray(mixture(rng, n, centres).astype(dtype))


def over_shapes_dtypes_and_weights(test):
    """Run ``test(n, d, k, dtype, weights)`` on every shape, dtype and kind of weights."""
    test = pytest.mark.parametrize("n,d,k", SHAPES, ids=SHAPE_IDS)(test)
    test = pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)(test)
    return pytest.mark.parametrize("weights", ["integer", "real"])(test)


def _weights(n, kind, seed=1):
    rng = np.random.default_rng(seed)
    if kind == "integer":
        return rng.integers(1, 6, size=n).astype(np.float64)
    return rng.uniform(0.05, 4.0, size=n)


def _centres(k, d, seed=2):
    return np.ascontiguousarray(np.random.default_rng(seed).uniform(-10, 10, size=(k, d)))


def _assert_same(a, b):
    """Bit-identical, including the dtype."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------- RNG
@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 + 5, 2**63, 2**64 - 1])
def test_rng_stream_equals_reference_twin(seed):
    rng = Rng(seed)
    expected = np.array([rng.uniform() for _ in range(2000)])
    got = _ops.rng_stream(seed, 2000)
    _assert_same(got, expected)
    assert (got >= 0).all() and (got < 1).all()
    assert len(np.unique(got)) == 2000


def test_rng_seeding_is_splitmix64():
    """Anchor the twin to an outside value: splitmix64 from state 0 first outputs
    0xE220A8397B1DCDAF (the published test vector)."""
    assert splitmix64(0)[1] == 0xE220A8397B1DCDAF
    assert Rng(0).s[0] == 0xE220A8397B1DCDAF
    # uniform() uses the top 53 bits: a multiple of 2**-53 in [0, 1)
    u = _ops.rng_stream(123, 100)
    np.testing.assert_array_equal(u * 2.0**53, np.floor(u * 2.0**53))


def test_rng_stream_edge_lengths():
    assert _ops.rng_stream(3, 0).shape == (0,)
    np.testing.assert_array_equal(_ops.rng_stream(3, 1), _ops.rng_stream(3, 10)[:1])


# ---------------------------------------------------------------- assign, cost, distances
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n,d,k", SHAPES, ids=SHAPE_IDS)
def test_assign_cost_pairwise_equal_reference(n, d, k, dtype):
    X = _data(n, d, dtype)
    C = _centres(k, d)
    labels, dist = _ops.assign(X, C)
    r_labels, r_dist = ref.assign(X, C)
    _assert_same(labels, r_labels)
    _assert_same(dist, r_dist)
    assert labels.dtype == np.int32 and dist.dtype == np.float64
    D = _ops.pairwise_sqdist(X, C)
    _assert_same(D, ref.pairwise_sqdist(X, C))
    # assign is the row-wise argmin (ties to the lowest index) of pairwise_sqdist
    _assert_same(labels, np.argmin(D, axis=1).astype(np.int32))
    _assert_same(dist, D[np.arange(n), labels])
    for kind in ("integer", "real"):
        w = _weights(n, kind)
        assert _ops.cost(X, w, C) == ref.cost(X, w, C)
        assert _ops.cost(X, w, C) == np.cumsum(w * dist)[-1]     # a sequential sum


def test_assign_ties_go_to_the_lowest_index():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    C = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    for backend in (_ops, ref):
        labels, dist = backend.assign(X, C)
        np.testing.assert_array_equal(labels, [2, 0, 3])
        np.testing.assert_array_equal(dist, [0.0, 0.0, 0.0])
    X1 = np.array([[0.5, 0.0]])          # equidistant from two distinct centres
    for backend in (_ops, ref):
        assert backend.assign(X1, np.array([[1.0, 0.0], [0.0, 0.0]]))[0][0] == 0


def test_cost_of_empty_input_is_zero():
    X = np.empty((0, 3))
    C = _centres(2, 3)
    assert _ops.cost(X, np.empty(0), C) == 0.0 == ref.cost(X, np.empty(0), C)
    assert _ops.assign(X, C)[0].shape == (0,)


@pytest.mark.parametrize("n,d,k", SHAPES[1:], ids=SHAPE_IDS[1:])
def test_float32_distances_match_float64(n, d, k):
    X64 = _data(n, d, np.float64)
    X32 = X64.astype(np.float32)
    C = _centres(k, d)
    # the same values: identical results (every kernel computes in float64)
    _assert_same(_ops.assign(X32, C)[1], _ops.assign(X32.astype(np.float64), C)[1])
    _assert_same(_ops.pairwise_sqdist(X32, C),
                 _ops.pairwise_sqdist(X32.astype(np.float64), C))
    # rounded values: within F32_RTOL (plus an absolute term for points near a centre)
    np.testing.assert_allclose(_ops.pairwise_sqdist(X32, C), _ops.pairwise_sqdist(X64, C),
                               rtol=F32_RTOL, atol=1e-4)
    w = _weights(n, "real")
    np.testing.assert_allclose(_ops.cost(X32, w, C), _ops.cost(X64, w, C), rtol=F32_RTOL)
    l32, d32 = _ops.assign(X32, C)
    l64, d64 = _ops.assign(X64, C)
    D = np.sort(_ops.pairwise_sqdist(X64, C), axis=1)
    clear = D[:, 1] - D[:, 0] > 1e-3 if k > 1 else np.ones(n, dtype=bool)
    np.testing.assert_array_equal(l32[clear], l64[clear])


# ---------------------------------------------------------------- k-means++
@over_shapes_dtypes_and_weights
def test_kmeanspp_equals_reference(n, d, k, dtype, weights):
    X, w = _data(n, d, dtype), _weights(n, weights)
    for seed in (0, 7, 2**64 - 1):
        got = _ops.kmeanspp(X, w, k, seed)
        _assert_same(got, ref.kmeanspp(X, w, k, seed))
        assert got.dtype == np.int64 and got.shape == (k,)
        assert ((got >= 0) & (got < n)).all()
        # the data has n distinct points: a chosen point has D = 0 and is never drawn again
        assert len(set(got.tolist())) == k
        assert len(np.unique(X[got], axis=0)) == k


def test_kmeanspp_float32_matches_float64():
    X64 = _data(800, 6, np.float64)
    X32 = X64.astype(np.float32)
    w = _weights(800, "real")
    for seed in range(5):
        same_values = _ops.kmeanspp(X32, w, 6, seed)
        _assert_same(same_values, _ops.kmeanspp(X32.astype(np.float64), w, 6, seed))
        # rounding moves the cumulative sums by ~1e-7 relative, far from any draw
        _assert_same(same_values, _ops.kmeanspp(X64, w, 6, seed))


def test_kmeanspp_distinct_points_among_duplicates():
    """Many duplicate rows but >= k distinct points: k distinct points."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 3))
    X = np.ascontiguousarray(base[rng.integers(0, 6, size=300)])
    w = _weights(300, "integer")
    for seed in range(20):
        for backend in (_ops, ref):
            idx = backend.kmeanspp(X, w, 6, seed)
            assert len(np.unique(X[idx], axis=0)) == 6


def test_kmeanspp_with_fewer_distinct_points_than_k():
    """Once every distinct point is chosen, D = 0 everywhere: the next centres
    are the lowest indices not yet chosen, without a draw."""
    X = np.array([[0.0, 0.0]] * 3 + [[5.0, 5.0]] * 3)
    w = np.array([1.0, 2.0, 3.0, 1.0, 1.0, 1.0])
    for seed in range(10):
        got = _ops.kmeanspp(X, w, 5, seed)
        _assert_same(got, ref.kmeanspp(X, w, 5, seed))
        assert len(got) == 5 and len(set(got.tolist())) == 5
        first_two = got[:2].tolist()
        assert {tuple(X[i]) for i in first_two} == {(0.0, 0.0), (5.0, 5.0)}
        rest = [i for i in range(6) if i not in first_two][:3]
        assert got[2:].tolist() == rest
    # all rows equal, k = n: every index once, in increasing order after the first
    Y = np.ones((4, 2))
    got = _ops.kmeanspp(Y, np.ones(4), 4, 3)
    assert sorted(got.tolist()) == [0, 1, 2, 3]
    assert got[1:].tolist() == [i for i in range(4) if i != got[0]]


@pytest.mark.parametrize("backend", [_ops, ref], ids=["cython", "reference"])
@pytest.mark.parametrize("kernel", ["kmeanspp", "solve"])
def test_seeding_and_solve_check_n_clusters_against_n_samples(backend, kernel):
    """n_clusters > n_samples used to crash the compiled kernel (segfault);
    both backends raise DataError instead.  n_clusters == n_samples passes."""
    from edgekm.exceptions import DataError
    X = _data(4, 3, np.float64)
    w = np.ones(4)
    call = ((lambda k: backend.kmeanspp(X, w, k, 0)) if kernel == "kmeanspp"
            else (lambda k: backend.solve(X, w, k, 1, 5, 0)))
    call(4)
    for bad in (5, 0):
        with pytest.raises(DataError, match="n_clusters"):
            call(bad)


def test_lloyd_stops_once_every_score_is_zero():
    """Centres on every distinct point: the first assignment costs 0, so Lloyd
    stops before any update (n_iter 0) and keeps the centres exactly, the
    duplicate centre included (an update would reseed it at a zero score)."""
    X = np.array([[0.1], [0.1], [0.1], [0.7]])
    w = np.ones(4)
    C = np.array([[0.1], [0.7], [0.7]])
    W, f, n_iter = ref._lloyd(X, w, C, 10)
    assert (n_iter, f) == (0, 0.0)
    np.testing.assert_array_equal(C, [[0.1], [0.7], [0.7]])
    np.testing.assert_array_equal(W, [3.0, 1.0, 0.0])


def test_kmeanspp_first_centre_is_drawn_by_weight():
    X = _data(100, 2, np.float64)
    w = np.ones(100)
    w[37] = 1e15
    for seed in range(10):
        assert _ops.kmeanspp(X, w, 3, seed)[0] == 37 == ref.kmeanspp(X, w, 3, seed)[0]


# ---------------------------------------------------------------- solve (k-means++ and Lloyd)
@over_shapes_dtypes_and_weights
def test_solve_equals_reference(n, d, k, dtype, weights):
    X, w = _data(n, d, dtype), _weights(n, weights)
    n_init, max_iter = (3, 20) if n <= 1500 else (2, 10)
    C, W, f = _ops.solve(X, w, k, n_init, max_iter, 5)
    rC, rW, rf = ref.solve(X, w, k, n_init, max_iter, 5)
    _assert_same(C, rC)
    _assert_same(W, rW)
    assert f == rf
    assert C.dtype == dtype and C.shape == (k, d) and W.shape == (k,)
    # cluster weights are the assignment's weights, and sum to the total weight
    np.testing.assert_allclose(W.sum(), w.sum(), rtol=1e-12)
    if weights == "integer":
        assert W.sum() == w.sum()
    if dtype == np.float64:
        # the reported cost is the cost of the returned centres, recomputed
        assert f == _ops.cost(X, w, C)
        labels, _ = _ops.assign(X, C)
        _assert_same(W, np.bincount(labels, weights=w, minlength=k))
    else:
        # centres are float64 inside the solver and rounded to float32 on output
        np.testing.assert_allclose(_ops.cost(X, w, C.astype(np.float64)), f, rtol=1e-5)


def test_solve_keeps_the_best_restart():
    """All restarts draw from one RNG, so restart 0 with n_init = 5 is the whole
    run with n_init = 1: the best of five costs no more."""
    X = _data(600, 4, np.float64, n_centres=7)
    w = _weights(600, "real")
    for seed in range(6):
        one = _ops.solve(X, w, 5, 1, 20, seed)[2]
        five = _ops.solve(X, w, 5, 5, 20, seed)[2]
        assert five <= one
        assert five == ref.solve(X, w, 5, 5, 20, seed)[2]


def test_solve_float32_matches_float64():
    X64 = _data(1000, 5, np.float64, spread=30.0, n_centres=4)
    X32 = X64.astype(np.float32)
    w = _weights(1000, "integer")
    # the same values: identical solution, up to the output cast
    C32, W32, f32 = _ops.solve(X32, w, 4, 3, 30, 1)
    C, W, f = _ops.solve(X32.astype(np.float64), w, 4, 3, 30, 1)
    _assert_same(C32, C.astype(np.float32))
    _assert_same(W32, W)
    assert f32 == f
    # rounded values: well-separated clusters, so the same partition; centres
    # within 1e-4 absolute (coordinates are O(30), float32 eps is 1.2e-7)
    C64, W64, f64 = _ops.solve(X64, w, 4, 3, 30, 1)
    order32, order64 = np.lexsort(C32.T), np.lexsort(C64.T)
    np.testing.assert_allclose(C32[order32], C64[order64], atol=1e-4)
    _assert_same(W32[order32], W64[order64])
    np.testing.assert_allclose(f32, f64, rtol=F32_RTOL)


def test_solve_is_deterministic():
    X = _data(300, 3, np.float32)
    w = _weights(300, "real")
    a = _ops.solve(X, w, 4, 3, 20, 99)
    b = _ops.solve(X, w, 4, 3, 20, 99)
    _assert_same(a[0], b[0])
    _assert_same(a[1], b[1])
    assert a[2] == b[2]


def test_lloyd_reseeds_an_empty_cluster_at_the_largest_weighted_distance():
    """The documented rule (internals.md), on the reference Lloyd with chosen
    start centres: 1-D points where cluster 1 loses every point at the second
    assignment (its mean lands between two heavier neighbours' means)."""
    X = np.array([[-1.0], [-0.55], [0.0], [-0.45], [1.9], [4.0], [2.1]])
    w = np.array([1.0, 50.0, 1.0, 50.0, 50.0, 1.0, 50.0])
    start = X[[0, 2, 5]].astype(np.float64)
    C1 = start.copy()
    ref._lloyd(X, w, C1, 1)                    # one update: means of the first assignment
    labels, dist = ref.assign(X, C1)
    W = np.bincount(labels, weights=w, minlength=3)
    assert W[1] == 0 and W[0] > 0 and W[2] > 0           # cluster 1 is empty
    C2 = start.copy()
    ref._lloyd(X, w, C2, 2)                    # the second update reseeds it
    i = int(np.argmax(w * dist))
    assert w[i] * dist[i] > 0
    np.testing.assert_array_equal(C2[1], X[i])
    for c in (0, 2):                           # the others move to their means
        mask = labels == c
        expected = np.cumsum(w[mask] * X[mask, 0])[-1] / np.cumsum(w[mask])[-1]
        assert C2[c, 0] == expected
    C3 = start.copy()
    W3, f3 = ref._lloyd(X, w, C3, 2)[:2]       # (weights, cost, ...)
    W4, f4 = ref._lloyd(X, w, start.copy(), 2)[:2]
    np.testing.assert_array_equal(C3, C2)
    np.testing.assert_array_equal(W3, W4)
    assert f3 == f4


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_solve_empty_clusters_are_reseeded_deterministically(dtype):
    """k above the number of distinct points: k-means++ adds duplicates (the
    lowest unused index), the duplicate centres lose every point (ties go to
    the lowest index), and Lloyd stops at once because every score is 0: no
    reseeding at a zero score, no update rounding a centre off its point.
    Both backends agree, run after run."""
    X = np.array([[0.0, 0.0]] * 4 + [[3.0, 1.0]] * 3 + [[-2.0, 5.0]] * 2, dtype=dtype)
    w = np.array([1.0, 2.0, 1.0, 3.0, 1.0, 1.0, 2.0, 4.0, 1.0])
    k = 5
    for seed in range(8):
        C, W, f = _ops.solve(X, w, k, 2, 6, seed)
        rC, rW, rf = ref.solve(X, w, k, 2, 6, seed)
        _assert_same(C, rC)
        _assert_same(W, rW)
        assert f == rf == 0.0
        again = _ops.solve(X, w, k, 2, 6, seed)
        _assert_same(again[0], C)
        assert W.sum() == w.sum()
        assert (W == 0).sum() == 2             # three distinct points carry all the weight
        rows = {tuple(row) for row in X.astype(dtype).tolist()}
        for c in np.flatnonzero(W == 0):
            assert tuple(C[c].tolist()) in rows        # a duplicate seed, left in place
        assert {tuple(row) for row in C[W > 0].tolist()} == {
            tuple(row) for row in np.unique(X, axis=0).tolist()}


# ---------------------------------------------------------------- reduce (§1)
def _unique_rows(n, d, dtype, seed=0):
    X = _data(n, d, np.float64, seed=seed).astype(dtype)
    assert len(np.unique(X, axis=0)) == n
    return np.ascontiguousarray(X)


def _row_index(X):
    return {X[i].tobytes(): i for i in range(len(X))}


@pytest.mark.parametrize("weights", ["integer", "real"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n,d,m", [(30, 2, 7), (200, 3, 20), (600, 8, 40), (1200, 13, 25),
                                   (3000, 5, 60)])
def test_reduce_equals_reference_and_keeps_weight(n, d, m, dtype, weights):
    X = _unique_rows(n, d, dtype)
    w = _weights(n, weights)
    spread = np.random.default_rng(n).uniform(0, 2, size=n)
    for seed in (0, 3):
        P, V, S = _reduce_both_backends(X, w, m, seed, spread)
        assert P.shape == (m, d) and P.dtype == dtype and V.dtype == S.dtype == np.float64
        # with the sampled representative: m distinct input rows, in choice order
        Q, U, T = _reduce_both_backends(X, w, m, seed, spread, mean=False)
        _assert_same(U, V)                  # the tree, hence the weights, are the same
        where = _row_index(X)
        idx = [where[row.tobytes()] for row in Q]
        assert len(set(idx)) == m
        leaves = ref._reduce_tree(X, w, m, Rng(seed))
        assert idx == [rep for rep, _, _ in leaves]
        # each leaf's mean, weight and spread, from its members
        for t, (rep, members, _) in enumerate(leaves):
            rows = np.concatenate([[rep], members])
            assert V[t] == w[rep] + np.cumsum(w[members])[-1] if len(members) else w[rep]
            mu = (w[rows, None] * X[rows].astype(np.float64)).sum(0) / w[rows].sum()
            np.testing.assert_allclose(P[t], mu, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                       atol=1e-6)
            around = (spread[rows] + w[rows] * ((X[rows] - P[t].astype(np.float64)) ** 2)
                      .sum(1)).sum()
            np.testing.assert_allclose(S[t], around, rtol=1e-10)
            assert T[t] >= S[t] * (1 - 1e-12)         # the mean minimises the spread
        # each representative carries at least its own weight; the total is kept
        assert (V >= w[idx]).all()
        if weights == "integer":
            assert V.sum() == w.sum()
            assert np.cumsum(V)[-1] == np.cumsum(w)[-1]
        else:
            np.testing.assert_allclose(V.sum(), w.sum(), rtol=1e-12)


def test_reduce_float32_picks_the_same_representatives_as_float64():
    X64 = _unique_rows(800, 4, np.float64, seed=4)
    X32 = X64.astype(np.float32)
    w = _weights(800, "integer")
    for seed in range(4):
        P32, V32, _ = _ops.reduce(X32, w, 30, seed, mean=False)
        # the same values in float64: identical
        P, V, _ = _ops.reduce(X32.astype(np.float64), w, 30, seed, mean=False)
        _assert_same(P32, P.astype(np.float32))
        _assert_same(V32, V)
        # rounded values: the same representatives (a draw would have to fall
        # within ~1e-7 relative of a cumulative-sum boundary to differ), weights
        # equal up to points almost equidistant from two representatives
        P64, V64, _ = _ops.reduce(X64, w, 30, seed, mean=False)
        _assert_same(P32, P64.astype(np.float32))
        assert V32.sum() == V64.sum() == w.sum()
        assert np.abs(V32 - V64).sum() <= 0.02 * w.sum()


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("n,m", [(0, 5), (1, 5), (4, 5), (5, 5)])
def test_reduce_small_input_returns_a_copy(n, m, dtype):
    X = _unique_rows(max(n, 1), 3, dtype)[:n]
    X = np.ascontiguousarray(X)
    w = _weights(n, "real")
    s = np.linspace(0.0, 1.0, n)
    for backend in (_ops, ref):
        P, V, S = backend.reduce(X, w, m, 1, s)
        _assert_same(P, X)
        _assert_same(V, w)
        _assert_same(S, s)
        # a copy: writing to the output leaves the input alone
        before_x, before_w, before_s = X.copy(), w.copy(), s.copy()
        P[...] = 7
        V[...] = 7
        S[...] = 7
        _assert_same(X, before_x)
        _assert_same(w, before_w)
        _assert_same(s, before_s)


def _reduce_both_backends(X, w, m, seed, *args, **kw):
    """The compiled reduce, checked bit for bit against the twin's."""
    got = _ops.reduce(X, w, m, seed, *args, **kw)
    for a, b in zip(got, ref.reduce(X, w, m, seed, *args, **kw), strict=True):
        _assert_same(a, b)
    return got


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reduce_all_rows_equal(dtype):
    """Duplicates only: the root's cost is 0, nothing is left to split, so the
    reduce stops at one point carrying the exact weight (not m copies)."""
    X = np.tile(np.array([[1.5, -2.0, 3.0]], dtype=dtype), (60, 1))
    w = _weights(60, "integer")
    for seed in range(5):
        P, V, S = _reduce_both_backends(X, w, 10, seed)
        assert P.shape == (1, 3)
        assert (P == X[0]).all()          # the mean of equal rows is the row, exactly
        assert (S == 0).all()
        assert V.sum() == w.sum()
        assert (V > 0).all()


@pytest.mark.parametrize("n_distinct", [1, 2, 5, 9])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_reduce_of_few_distinct_points_emits_one_point_per_distinct_row(dtype, n_distinct):
    """A few distinct rows, many copies each: once every member sits on a
    representative the reduce stops, with one point per distinct row (each
    the row itself, spread 0) and the weight of its copies, exactly."""
    rng = np.random.default_rng(n_distinct)
    # quarters: every sum of integer-weighted copies is exact, so each mean is its row
    rows = (rng.integers(-40, 40, size=(n_distinct, 4)) / 4).astype(dtype)
    which = rng.integers(0, n_distinct, size=500)
    which[:n_distinct] = np.arange(n_distinct)
    X = np.ascontiguousarray(rows[which])
    w = _weights(500, "integer")
    for seed in range(4):
        P, V, S = _reduce_both_backends(X, w, 40, seed)
        assert P.shape == (n_distinct, 4)
        assert (S == 0).all()
        for p, v in zip(P, V):
            t = int(np.flatnonzero((rows == p).all(axis=1))[0])
            assert v == np.cumsum(w[which == t])[-1]


@pytest.mark.parametrize("outlier_weight", [1.0, 1e6])
def test_reduce_keeps_a_dominant_outlier_alone(outlier_weight):
    """A far point dominates every D² draw: it becomes a representative, and no
    other point is closer to it than to its own representative, so it keeps
    exactly its own weight."""
    rng = np.random.default_rng(5)
    X = np.concatenate([rng.normal(size=(300, 3)), [[1e4, -1e4, 1e4]]])
    w = np.ones(301)
    w[-1] = outlier_weight
    for seed in range(5):
        P, V, S = _reduce_both_backends(X, w, 12, seed)
        hit = np.flatnonzero((P == X[-1]).all(axis=1))
        assert len(hit) == 1
        assert V[hit[0]] == outlier_weight and S[hit[0]] == 0.0
        assert V.sum() == w.sum()


def test_reduce_to_one_point_keeps_all_the_weight():
    X = _unique_rows(40, 3, np.float64)
    w = _weights(40, "integer")
    for seed in range(3):
        P, V, S = _reduce_both_backends(X, w, 1, seed)
        assert P.shape == (1, 3) and V.tolist() == [w.sum()]
        # the single point is the weighted mean, carrying the whole cost around it
        mu = (w[:, None] * X).sum(0) / w.sum()
        np.testing.assert_allclose(P[0], mu, rtol=1e-12)
        np.testing.assert_allclose(S[0], (w * ((X - P[0]) ** 2).sum(1)).sum(), rtol=1e-12)
        # with the sampled representative, it is the first draw, by weight
        Q = _ops.reduce(X, w, 1, seed, mean=False)[0]
        assert _row_index(X)[Q[0].tobytes()] == Rng(seed).sample(w)


def test_reduce_first_representative_is_drawn_by_weight():
    X = _unique_rows(100, 2, np.float64)
    w = np.ones(100)
    w[64] = 1e15
    for seed in range(5):
        P, V, _ = _ops.reduce(X, w, 10, seed, mean=False)
        np.testing.assert_array_equal(P[0], X[64])


def test_reduce_is_a_coreset_of_its_input_on_clustered_data():
    """Not a proof, a sanity check: on well-clustered 2-D data with m = 20 k,
    the coreset cost of a few centre sets is within 30% of the true cost
    (StreamKM++'s guarantee is for low dimension)."""
    rng = np.random.default_rng(8)
    X = np.ascontiguousarray(mixture(rng, 2000, rng.uniform(-20, 20, size=(5, 2))))
    w = np.ones(2000)
    P, V, S = _ops.reduce(X, w, 100, 0)
    for _ in range(3):
        C = np.ascontiguousarray(rng.uniform(-20, 20, size=(5, 2)))
        ratio = _ops.cost(P, V, C) / _ops.cost(X, w, C)
        assert 0.7 < ratio < 1.3, ratio
        # with the carried spread, the cost is an upper bound, and close
        ratio = (_ops.cost(P, V, C) + S.sum()) / _ops.cost(X, w, C)
        assert 1 - 1e-12 <= ratio < 1.1, ratio
