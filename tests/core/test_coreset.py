"""The Coreset value type, and the coreset a StreamingKMeans model exposes."""

import pickle

import numpy as np
import pytest

from edgekm import Coreset, NotFittedError, StreamingKMeans

sp = pytest.importorskip("scipy.sparse")

ALGORITHMS = ("ct", "cc", "rcc", "onlinecc", "sequential")


def _points(n=20, d=3, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(dtype)


def _coreset(n=20, d=3, seed=0, level=0, dtype=np.float64):
    w = np.random.default_rng(seed + 100).integers(1, 9, n).astype(float)
    return Coreset(_points(n, d, seed, dtype), w, level=level)


def _numpy_cost(points, weights, centers):
    P = np.asarray(points, dtype=np.float64)
    C = np.asarray(centers, dtype=np.float64)
    d2 = ((P[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)
    return float((np.asarray(weights) * d2.min(axis=1)).sum())


# ================================================================ construction


def test_attributes():
    P = _points(6, 2)
    c = Coreset(P, [1, 2, 3, 4, 5, 6], level=2)
    np.testing.assert_array_equal(c.points, P)
    np.testing.assert_array_equal(c.weights, [1, 2, 3, 4, 5, 6])
    assert c.weights.dtype == np.float64
    assert c.points.dtype == np.float64
    assert c.total_weight == 21.0 and type(c.total_weight) is float
    assert c.level == 2
    assert c.n_features == 2
    assert len(c) == 6
    assert c.dtype == np.float64


def test_defaults():
    c = Coreset(_points(4))
    np.testing.assert_array_equal(c.weights, np.ones(4))
    assert c.level == 0
    assert c.total_weight == 4.0


@pytest.mark.parametrize("given,expected", [
    (np.float32, np.float32), (np.float64, np.float64), (np.int64, np.float64),
    (np.int8, np.float64), (np.float16, np.float64), (bool, np.float64),
])
def test_points_dtype(given, expected):
    c = Coreset(np.ones((3, 2), dtype=given))
    assert c.dtype == expected
    assert c.points.dtype == expected
    assert c.weights.dtype == np.float64


def test_list_input_and_numpy_level():
    c = Coreset([[1, 2], [3, 4]], [1.5, 2.5], level=np.int64(3))
    assert c.dtype == np.float64
    assert c.level == 3 and type(c.level) is int
    assert c.total_weight == 4.0


def test_total_weight_is_the_sequential_sum():
    w = np.array([2.0**53, 1.0, 1.0, 1.0, 1.0])
    c = Coreset(np.zeros((5, 1)), w)
    # sequential: 2**53 + 1 rounds back to 2**53 each time
    assert c.total_weight == float(np.cumsum(w)[-1]) == 2.0**53


# ================================================================ immutability


def test_attributes_cannot_be_set():
    c = _coreset()
    for name in ("points", "weights", "total_weight", "level", "n_features", "dtype",
                 "_points", "_weights", "_total_weight", "_level", "new_attribute"):
        with pytest.raises(AttributeError):
            setattr(c, name, 1)
    assert not hasattr(c, "__dict__")


def test_arrays_are_read_only():
    c = _coreset()
    assert not c.points.flags.writeable
    assert not c.weights.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        c.points[0, 0] = 1.0
    with pytest.raises(ValueError, match="read-only"):
        c.weights[0] = 1.0
    with pytest.raises(ValueError):
        c.points.sort(axis=0)


def test_inputs_are_copied():
    P = _points(5)
    w = np.ones(5)
    c = Coreset(P, w)
    before = (c.points.copy(), c.weights.copy())
    P[:] = 7.0
    w[:] = 3.0
    np.testing.assert_array_equal(c.points, before[0])
    np.testing.assert_array_equal(c.weights, before[1])
    # the caller's arrays stay writeable
    assert P.flags.writeable and w.flags.writeable


def test_attributes_cannot_be_deleted():
    c = _coreset()
    with pytest.raises(AttributeError):
        del c._level
    assert c.level == 0


# ============================================================ equality and hash


def test_equality_and_hash():
    a, b = _coreset(seed=1), _coreset(seed=1)
    assert a == b and not (a != b)
    assert hash(a) == hash(b)
    assert len({a, b}) == 1
    assert {a: "x"}[b] == "x"
    assert a != _coreset(seed=2)
    assert a != Coreset(a.points, a.weights, level=1)
    assert a != Coreset(a.points, a.weights * 2)
    assert a != Coreset(a.points[:-1], a.weights[:-1])
    # same values, other dtype
    assert Coreset(np.zeros((2, 2), np.float32)) != Coreset(np.zeros((2, 2)))
    # other types
    assert a != "coreset"
    assert (a == None) is False  # noqa: E711
    assert (a == 1) is False
    assert a.__eq__(1) is NotImplemented


def test_equal_coresets_have_equal_hashes_with_signed_zeros():
    a = Coreset([[0.0, 1.0]])
    b = Coreset([[-0.0, 1.0]])
    assert a == b
    assert hash(a) == hash(b)


def test_repr():
    c = Coreset(np.zeros((4, 3), np.float32), [1, 2, 3, 4.5], level=2)
    assert repr(c) == ("Coreset(n_points=4, n_features=3, total_weight=10.5, level=2, "
                       "dtype=float32)")


# ================================================================= pickling


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pickle_round_trip(dtype):
    c = _coreset(level=4, dtype=dtype)
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        back = pickle.loads(pickle.dumps(c, protocol=protocol))
        assert type(back) is Coreset
        assert back == c and hash(back) == hash(c)
        assert back.points.dtype == dtype
        assert back.level == 4
        assert back.total_weight == c.total_weight
        assert not back.points.flags.writeable and not back.weights.flags.writeable
        with pytest.raises(AttributeError):
            back.level = 1


# =================================================================== merge


def test_merge_is_the_union():
    a = Coreset([[0.0, 0.0], [1.0, 1.0]], [2.0, 3.0], level=1)
    b = Coreset([[10.0, 10.0]], [5.0], level=3)
    c = Coreset([[7.0, 7.0], [8.0, 8.0]], [1.0, 1.0], level=0)
    m = Coreset.merge(a, b, c)
    assert m == a.merge(b, c)
    np.testing.assert_array_equal(m.points, [[0, 0], [1, 1], [10, 10], [7, 7], [8, 8]])
    np.testing.assert_array_equal(m.weights, [2, 3, 5, 1, 1])
    assert m.total_weight == 12.0
    assert m.level == 3
    assert not m.points.flags.writeable
    # the inputs are unchanged
    assert len(a) == 2 and a.level == 1


def test_merge_keeps_the_exact_total_weight():
    rng = np.random.default_rng(3)
    parts = [Coreset(_points(50, seed=i), rng.integers(1, 10**9, 50).astype(float), level=i)
             for i in range(6)]
    m = Coreset.merge(*parts)
    assert m.total_weight == float(sum(int(w) for c in parts for w in c.weights))
    assert m.level == 5
    assert len(m) == 300


def test_merge_of_one_coreset_is_a_copy():
    a = _coreset(level=2)
    assert a.merge() == a
    assert a.merge(size=len(a)) == a


def test_merge_dtypes():
    f32 = _coreset(dtype=np.float32)
    f64 = _coreset(dtype=np.float64)
    assert f32.merge(f32).dtype == np.float32
    assert f32.merge(f64).dtype == np.float64
    assert f64.merge(f32).dtype == np.float64


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_merge_with_size_reduces(dtype):
    a = _coreset(n=100, seed=1, level=2, dtype=dtype)
    b = _coreset(n=80, seed=2, level=5, dtype=dtype)
    m = a.merge(b, size=30, random_state=0)
    assert 1 <= len(m) <= 30
    assert m.level == 6                      # max level + 1
    assert m.dtype == dtype
    assert m.total_weight == a.total_weight + b.total_weight    # integer weights: exact
    assert (m.weights > 0).all()
    # each point is its leaf's weighted mean and carries the leaf's spread, so
    # the cost of the union around its own mean is kept (up to rounding)
    union = np.concatenate([a.points, b.points]).astype(np.float64)
    uw = np.concatenate([a.weights, b.weights])
    mu = (uw[:, None] * union).sum(axis=0) / uw.sum()
    before = (uw * ((union - mu) ** 2).sum(axis=1)).sum()
    after = m.total_spread + (m.weights * ((m.points.astype(np.float64) - mu) ** 2).sum(1)).sum()
    assert (m.spread > 0).any() and (m.spread >= 0).all()
    np.testing.assert_allclose(after, before, rtol=1e-6 if dtype == np.float32 else 1e-12)
    # no reduced point lies outside the bounding box of the union
    assert (m.points >= union.min(axis=0) - 1e-6).all()
    assert (m.points <= union.max(axis=0) + 1e-6).all()
    # seeded: reproducible
    assert a.merge(b, size=30, random_state=0) == m
    assert a.merge(b, size=30, random_state=np.random.default_rng(5)) == \
        a.merge(b, size=30, random_state=np.random.default_rng(5))


def test_merge_with_a_size_that_is_not_exceeded_does_not_reduce():
    a, b = _coreset(n=10, seed=1, level=1), _coreset(n=5, seed=2, level=2)
    m = a.merge(b, size=15)
    assert m == a.merge(b)
    assert m.level == 2


def test_merge_errors():
    a = _coreset(d=3)
    with pytest.raises(ValueError, match="3 and 2 features"):
        a.merge(_coreset(d=2))
    with pytest.raises(ValueError, match="features"):
        Coreset.merge(a, a, _coreset(d=4))
    for other in (a.points, None, [a], "coreset"):
        with pytest.raises(TypeError, match="merge takes Coreset objects"):
            a.merge(other)
    with pytest.raises(TypeError, match="merge takes Coreset objects"):
        Coreset.merge(a.points, a)
    for size in (0, -1, 1.5, "10"):
        with pytest.raises(ValueError, match="The 'size' parameter must be None or an int >= 1"):
            a.merge(a, size=size)


def test_merge_size_rejects_bool():
    a = _coreset()
    with pytest.raises(ValueError, match="size"):
        a.merge(a, size=True)


# ==================================================================== cost


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 3, 7])
def test_cost_equals_numpy(dtype, k):
    c = _coreset(n=200, d=5, dtype=dtype)
    centers = _points(k, d=5, seed=9)
    expected = _numpy_cost(c.points, c.weights, centers)
    assert c.cost(centers) == pytest.approx(expected, rel=1e-12)
    assert type(c.cost(centers)) is float
    # centres in float32 or as lists are fine
    assert c.cost(centers.astype(np.float32)) == pytest.approx(
        _numpy_cost(c.points, c.weights, centers.astype(np.float32)), rel=1e-12)
    assert c.cost(centers.tolist()) == pytest.approx(expected, rel=1e-12)


def test_cost_at_the_points_is_zero():
    c = _coreset(n=5)
    assert c.cost(c.points) == 0.0


def test_cost_rejects_bad_centers():
    c = _coreset(d=3)
    with pytest.raises(ValueError, match="2 features"):
        c.cost(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        c.cost(np.zeros(3))
    with pytest.raises(ValueError, match="NaN or infinity; the first bad row is 1"):
        c.cost([[0, 0, 0], [0, np.nan, 0]])
    with pytest.raises(TypeError, match="sparse"):
        c.cost(sp.csr_matrix(np.zeros((2, 3))))


# ============================================================== fit_centers


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_fit_centers(dtype, k):
    c = _coreset(n=120, d=4, dtype=dtype)
    centers, cluster_weights, cost = c.fit_centers(k, random_state=0)
    assert centers.shape == (k, 4)
    assert cluster_weights.shape == (k,)
    assert cluster_weights.dtype == np.float64
    assert (cluster_weights >= 0).all()
    assert cluster_weights.sum() == c.total_weight          # integer weights: exact
    assert type(cost) is float
    assert cost == pytest.approx(c.cost(centers), rel=1e-5 if dtype == np.float32 else 1e-12)
    # cluster weights are the weights of the points nearest to each centre
    P = c.points.astype(np.float64)
    d2 = ((P[:, None, :] - np.asarray(centers, np.float64)[None]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(
        cluster_weights, np.bincount(d2.argmin(axis=1), c.weights, minlength=k))
    # seeded: reproducible
    again = c.fit_centers(k, random_state=0)
    np.testing.assert_array_equal(again[0], centers)
    assert again[2] == cost


def test_fit_centers_finds_separated_clusters():
    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0]])
    P = np.concatenate([m + rng.normal(size=(30, 2)) for m in means])
    centers, weights, _ = Coreset(P).fit_centers(3, n_init=3, random_state=1)
    order = np.argsort(centers[:, 0] + 2 * centers[:, 1])
    np.testing.assert_allclose(centers[order], means, atol=1.0)
    np.testing.assert_array_equal(weights[order], [30, 30, 30])


def test_fit_centers_needs_enough_points():
    c = _coreset(n=3)
    c.fit_centers(3, random_state=0)
    with pytest.raises(ValueError, match="n_samples=3 should be >= n_clusters=4"):
        c.fit_centers(4)


@pytest.mark.parametrize("kwargs,name", [
    ({"n_clusters": 0}, "n_clusters"), ({"n_clusters": 1.5}, "n_clusters"),
    ({"n_clusters": True}, "n_clusters"), ({"n_init": 0}, "n_init"),
    ({"max_iter": 0}, "max_iter"), ({"max_iter": None}, "max_iter"),
    ({"random_state": "x"}, "random_state"), ({"random_state": 1.5}, "random_state"),
])
def test_fit_centers_validates_parameters(kwargs, name):
    c = _coreset(n=10)
    kwargs = {"n_clusters": 2, **kwargs}
    k = kwargs.pop("n_clusters")
    with pytest.raises(ValueError, match=f"'{name}'"):
        c.fit_centers(k, **kwargs)


# ============================================================== validation


@pytest.mark.parametrize("points,exc,match", [
    (np.zeros(3), ValueError, "2-D"),
    (np.zeros((2, 2, 2)), ValueError, "2-D"),
    (np.zeros((0, 2)), ValueError, r"0 sample\(s\)"),
    (np.zeros((2, 0)), ValueError, r"0 feature\(s\)"),
    ([[0.0, 1.0], [np.nan, 0.0], [np.inf, 0.0]], ValueError, "the first bad row is 1"),
    ([[0.0, -np.inf]], ValueError, "the first bad row is 0"),
    (np.zeros((2, 2)) + 1j, ValueError, "Complex"),
    ([["a", "b"]], ValueError, "numbers only"),
    (None, ValueError, "2-D"),
], ids=["1-D", "3-D", "0 rows", "0 features", "NaN", "-inf", "complex", "strings", "None"])
def test_bad_points(points, exc, match):
    with pytest.raises(exc, match=match):
        Coreset(points)


def test_sparse_points_raise_type_error():
    with pytest.raises(TypeError, match="sparse"):
        Coreset(sp.csr_matrix(np.eye(3)))


@pytest.mark.parametrize("weights,match", [
    ([1.0, -1.0, 1.0], "row 1"), ([1.0, 1.0, 0.0], "row 2"), ([np.nan, 1.0, 1.0], "row 0"),
    ([1.0, np.inf, 1.0], "row 1"), ([1.0, 1.0], r"shape == \(2,\), expected \(3,\)"),
    (np.ones((3, 1)), r"expected \(3,\)"), (0.0, "row 0"), (["a", "b", "c"], "numbers only"),
])
def test_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        Coreset(np.zeros((3, 2)), weights)


def test_bad_weights_message_names_the_parameter():
    with pytest.raises(ValueError, match="^weights"):
        Coreset(np.zeros((3, 2)), [1.0, 0.0, 1.0])


@pytest.mark.parametrize("level", [-1, 1.0, 1.5, True, None, "1", np.float64(2.0)])
def test_bad_level(level):
    with pytest.raises(ValueError, match="level must be an int >= 0"):
        Coreset(np.zeros((2, 2)), level=level)


# ================================================ StreamingKMeans.coreset()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_model_coreset(algorithm, dtype):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))
    w = rng.integers(1, 100, len(X)).astype(float)
    model = StreamingKMeans(4, algorithm=algorithm, coreset_size=40, dtype=dtype,
                            random_state=0)
    for Xb, wb in zip(np.array_split(X, 7), np.array_split(w, 7)):
        model.partial_fit(Xb, sample_weight=wb)
        c = model.coreset()
        assert isinstance(c, Coreset)
        assert c.total_weight == model.n_seen_
        assert c.dtype == dtype
        assert c.n_features == 4
        assert not c.points.flags.writeable
    assert model.n_seen_ == w.sum()
    if algorithm == "sequential":
        assert len(c) == 4 and c.level == 0      # the centres and their weights
    else:
        assert c.level >= 1                      # 3000 points in buckets of 40 were reduced
    # the summary is usable on its own
    centers, weights, _ = c.fit_centers(4, random_state=0)
    assert weights.sum() == pytest.approx(model.n_seen_, rel=1e-12)


def test_model_coreset_is_a_snapshot():
    X = np.random.default_rng(1).normal(size=(500, 2))
    model = StreamingKMeans(3, coreset_size=20, random_state=0).partial_fit(X[:250])
    c = model.coreset()
    kept = pickle.loads(pickle.dumps(c))
    model.partial_fit(X[250:])
    assert c == kept
    assert model.coreset().total_weight == 500.0


def test_model_coreset_of_few_points_is_the_points():
    X = np.arange(6.0).reshape(3, 2)
    model = StreamingKMeans(5, dtype=np.float64).partial_fit(X)
    c = model.coreset()
    np.testing.assert_array_equal(c.points, X)
    np.testing.assert_array_equal(c.weights, np.ones(3))
    assert c.level == 0


def test_model_coreset_before_data():
    with pytest.raises(NotFittedError):
        StreamingKMeans().coreset()


# ================================================ the carried spread
def test_spread_defaults_to_zero_and_is_read_only():
    c = Coreset(np.array([[0.0, 1.0], [2.0, 3.0]]), [1.0, 2.0])
    assert c.spread.tolist() == [0.0, 0.0] and c.total_spread == 0.0
    with pytest.raises(ValueError):
        c.spread[0] = 1.0
    d = Coreset(np.array([[0.0, 1.0], [2.0, 3.0]]), [1.0, 2.0], level=1, spread=[0.5, 2])
    assert d.spread.dtype == np.float64 and d.total_spread == 2.5
    assert d != Coreset(d.points, d.weights, level=1)
    assert pickle.loads(pickle.dumps(d)) == d
    assert hash(pickle.loads(pickle.dumps(d))) == hash(d)


@pytest.mark.parametrize("bad", [[-1.0, 0.0], [np.nan, 0.0], [np.inf, 0.0], [1.0], ["a", "b"]])
def test_spread_is_validated(bad):
    with pytest.raises(ValueError):
        Coreset(np.zeros((2, 2)), [1.0, 1.0], spread=bad)


def test_cost_and_fit_centers_include_the_spread():
    X = np.array([[0.0, 0.0], [10.0, 0.0]])
    c = Coreset(X, [2.0, 3.0], spread=[4.0, 1.0])
    assert c.cost(X) == 5.0
    _, _, cost = c.fit_centers(2, random_state=0)
    assert cost == 5.0


def test_many_merges_and_reduces_keep_the_cost_around_the_mean():
    """Raw data through 40 merges, each reduced to 25 points: the total spread
    plus the cost around the global mean equals the data's cost around it."""
    rng = np.random.default_rng(3)
    data = [rng.normal(size=(60, 4)) * rng.uniform(0.1, 5, size=4) for _ in range(40)]
    acc = Coreset(data[0])
    for i, X in enumerate(data[1:]):
        acc = acc.merge(Coreset(X), size=25, random_state=i)
    everything = np.concatenate(data)
    mu = everything.mean(axis=0)
    want = ((everything - mu) ** 2).sum()
    got = acc.total_spread + (acc.weights * ((acc.points - mu) ** 2).sum(axis=1)).sum()
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert acc.level == 39 and acc.total_weight == len(everything)
    # the coreset cost of any centres plus the spread bounds the data's cost
    C = everything[rng.choice(len(everything), 5, replace=False)]
    true = Coreset(everything).cost(C)
    assert true * (1 - 1e-12) <= acc.cost(C) <= 1.5 * true
