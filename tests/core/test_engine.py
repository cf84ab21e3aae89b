"""The fixed-memory engines, built directly (``edgekm._core._engine.Engine`` and
its twin ``edgekm._reference.engine.Engine``).

Checked here: the two backends agree bit for bit (docs/internals.md), weight is
conserved exactly, the tree is a base-r counter (CT), the cache obeys Lemma 4
and the prefix-key rule (CC), coreset levels obey Lemma 5 and our RCC bound,
overflow absorbs into the top level as docs/algorithms.md §11 predicts, the slot
pool never leaks, OnlineCC falls back rarely, pickling continues
bit-identically and memory is fixed.
"""

import math
import pickle

import numpy as np
import pytest

from helpers.engine import (BACKENDS, EMPTY, S_LEVEL, S_LO, S_HI, STATE_BUFFERS, bufs,
                             cache_entries, check_inner_structures, check_pool,
                             check_unit_weight_slots, chi, digits, expected_absorptions,
                             floor_log, list_slots, major, make_engine, mixture, ones,
                             prefixsum)
from edgekm import _defaults
from edgekm._core import _ops
from edgekm._reference.engine import Engine as ReferenceEngine

BOTH = list(BACKENDS)
DTYPES = [np.float32, np.float64]

# (kind, merge degrees, coreset size m, clusters k): OnlineCC initialises on
# min(10 k, m) points, so its m leaves room for MacQueen steps inside a bucket.
CONFIGS = {
    "ct": ("ct", (2,), 8, 3),
    "cc2": ("cc", (2,), 8, 3),
    "cc3": ("cc", (3,), 8, 3),
    "rcc": ("rcc", (2, 4, 16), 6, 3),
    "onlinecc": ("onlinecc", (2,), 24, 2),
    "sequential": ("sequential", (2,), 8, 3),
}


def _engines(config, dtype, seed=7, max_levels=6, backends=BOTH, **kw):
    kind, degrees, m, k = CONFIGS[config]
    return [make_engine(b, kind, d=3, k=k, m=m, degrees=degrees, max_levels=max_levels,
                        dtype=dtype, seed=seed, **kw) for b in backends]


def _assert_same_answer(a, b, where=""):
    ca, ia = a.query()
    cb, ib = b.query()
    assert ca.dtype == cb.dtype == a.dtype
    np.testing.assert_array_equal(ca, cb, err_msg=f"centres differ {where}")
    assert ia == ib, where


def _assert_same_coreset(a, b, where=""):
    (xa, wa, sa, la), (xb, wb, sb, lb) = a.coreset(), b.coreset()
    np.testing.assert_array_equal(xa, xb, err_msg=f"coreset points differ {where}")
    np.testing.assert_array_equal(wa, wb, err_msg=f"coreset weights differ {where}")
    np.testing.assert_array_equal(sa, sb, err_msg=f"coreset spread differs {where}")
    assert la == lb, where


def _assert_same_state(a, b):
    for name in ("n_points", "n_seen", "n_buckets", "b_slot", "b_n", "free_top", "absorptions",
                 "hits", "misses", "fallbacks", "n_centers", "initialised", "phi0",
                 "est_cost", "inertia", "dirty"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.stats() == b.stats()
    assert a.memory_bytes == b.memory_bytes


# ---------------------------------------------------------------- the two backends agree
@pytest.mark.parametrize("weights", ["integer", "real"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_cython_engine_equals_reference(config, dtype, weights):
    cy, ref = _engines(config, dtype)
    m, k = cy.init_args[3], cy.init_args[2]
    rng = np.random.default_rng([list(CONFIGS).index(config), weights == "integer"])
    centers = rng.uniform(-8, 8, size=(4, 3))
    queries = 0
    for step in range(45):
        n = int(rng.integers(0, 5 * m // 2 + 1))
        X = mixture(rng, n, centers).astype(dtype)
        if weights == "integer":
            w = rng.integers(1, 4, size=n).astype(np.float64)
        else:
            w = rng.uniform(0.1, 3.0, size=n)
        cy.partial_fit(X, w)
        ref.partial_fit(X, w)
        if step % 4 == 1:
            x = np.ascontiguousarray(mixture(rng, 1, centers)[0].astype(dtype))
            wx = float(rng.integers(1, 3)) if weights == "integer" else float(rng.uniform(0.5, 2))
            assert cy.learn_one(x, wx) is True
            assert ref.learn_one(x, wx) is True
        if cy.n_points >= k and rng.random() < 0.6:
            _assert_same_answer(cy, ref, f"at step {step}")
            queries += 1
            if rng.random() < 0.3:          # a repeated query is answered from the cache
                _assert_same_answer(cy, ref, f"(repeat) at step {step}")
        if cy.n_points and rng.random() < 0.5:
            _assert_same_coreset(cy, ref, f"at step {step}")
        assert cy.stats() == ref.stats()
    assert queries > 10
    _assert_same_answer(cy, ref, "at the end")
    _assert_same_coreset(cy, ref, "at the end")
    _assert_same_state(cy, ref)
    for name in STATE_BUFFERS:
        np.testing.assert_array_equal(cy.buffers[name], ref.a[name], err_msg=name)


@pytest.mark.parametrize("kind,degrees,m", [("cc", (2,), 8), ("rcc", (2, 4), 6),
                                             ("onlinecc", (2,), 24), ("ct", (3,), 8)])
def test_cython_equals_reference_with_overflow(kind, degrees, m):
    """A tiny tree (2 levels) absorbs many times; both backends still agree."""
    cy, ref = (make_engine(b, kind, d=3, k=2, m=m, degrees=degrees, max_levels=2, seed=9)
               for b in BOTH)
    rng = np.random.default_rng(3)
    for step in range(60):
        X = rng.normal(size=(m, 3))
        w = rng.integers(1, 3, size=m).astype(np.float64)
        cy.partial_fit(X, w)
        ref.partial_fit(X, w)
        if step % 3 == 0:
            _assert_same_answer(cy, ref, f"at step {step}")
    assert cy.absorptions > 3
    _assert_same_coreset(cy, ref)
    _assert_same_state(cy, ref)


def test_learn_one_refuses_what_it_cannot_take_without_converting():
    for backend in BOTH:
        e = make_engine(backend, "cc", d=3, dtype=np.float32)
        assert e.learn_one(np.zeros(3, dtype=np.float64), 1.0) is False
        assert e.learn_one(np.zeros(4, dtype=np.float32), 1.0) is False
        assert e.learn_one(np.zeros((6,), dtype=np.float32)[::2], 1.0) is False
        assert e.learn_one([0.0, 0.0, 0.0], 1.0) is False
        assert e.n_points == 0
        with pytest.raises(ValueError):
            e.learn_one(np.array([0, np.nan, 0], dtype=np.float32), 1.0)
        for bad_w in (0.0, -1.0, math.inf, math.nan):
            with pytest.raises(ValueError):
                e.learn_one(np.zeros(3, dtype=np.float32), bad_w)
        assert e.n_points == 0 and e.n_seen == 0.0
        assert e.learn_one(np.zeros(3, dtype=np.float32), 2.0) is True
        assert e.n_points == 1 and e.n_seen == 2.0


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("backend", [
    "reference",
    "cython",   # regression: the compiled check once read byte-swapped points as native
])
def test_learn_one_with_non_native_byte_order(backend, dtype):
    """A byte-swapped point must be refused (the caller then converts it) or
    stored with its value; never reinterpreted."""
    e = make_engine(backend, "cc", d=3, m=4, dtype=dtype)
    x = np.array([1.5, 2.0, 3.0], dtype=np.dtype(dtype).newbyteorder(">"))
    if e.learn_one(x, 1.0):
        np.testing.assert_array_equal(e.coreset()[0], [[1.5, 2.0, 3.0]])
    else:
        assert e.n_points == 0


# ---------------------------------------------------------------- weight is conserved exactly
@pytest.mark.parametrize("backend", BOTH)
@pytest.mark.parametrize("kind,degrees,max_levels", [
    ("ct", (2,), 8), ("cc", (2,), 8), ("cc", (3,), 3), ("rcc", (2, 4, 16), 2),
    ("rcc", (2, 4), 2), ("onlinecc", (2,), 8), ("sequential", (2,), 8), ("ct", (3,), 2),
])
def test_total_weight_is_exact(backend, kind, degrees, max_levels):
    """coreset() (tree union or cached coreset, plus the partial bucket) weighs
    exactly what was fed, with integer weights, at every point of the stream,
    including after overflow (the small max_levels cases absorb)."""
    m = 7
    e = make_engine(backend, kind, d=2, k=3, m=m, degrees=degrees, max_levels=max_levels)
    rng = np.random.default_rng(11)
    fed = 0
    steps = 70 if backend == "cython" else 30
    for step in range(steps):
        n = int(rng.integers(1, 4 * m))
        w = rng.integers(1, 6, size=n).astype(np.float64)
        e.partial_fit(rng.normal(size=(n, 2)), w)
        fed += int(w.sum())
        if step % 3 == 0 and e.n_points >= 3:
            e.query()
        points, weights, _, level = e.coreset()
        assert len(points) == len(weights) > 0
        assert np.cumsum(weights)[-1] == fed, (step, np.cumsum(weights)[-1], fed)
        assert e.n_seen == fed
        assert (weights > 0).all()
    if kind != "sequential":
        check_pool(e)


# ---------------------------------------------------------------- the spread is exact
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("kind,degrees,max_levels", [
    ("ct", (2,), 8), ("cc", (2,), 8), ("cc", (3,), 2), ("rcc", (2, 4, 16), 2),
    ("onlinecc", (2,), 8),
])
def test_spread_keeps_the_cost_around_any_single_centre(kind, degrees, max_levels, dtype):
    """Each coreset point is its leaf's mean and carries its leaf's spread, so
    for any one centre g, sum(spread + w ||mu - g||²) over the coreset equals
    sum(w ||x - g||²) over the data, through every reduce, cache reduce and
    absorption (the small max_levels cases absorb).  float32 rounds the means."""
    m = 7
    e = make_engine("cython", kind, d=3, k=3, m=m, degrees=degrees, max_levels=max_levels,
                    dtype=dtype)
    rng = np.random.default_rng(4)
    fed, wts = [], []
    rtol = 1e-10 if dtype == np.float64 else 1e-5
    for step in range(60):
        n = int(rng.integers(1, 4 * m))
        X = (rng.normal(size=(n, 3)) * [1.0, 5.0, 0.2] + step * 0.1).astype(dtype)
        w = rng.integers(1, 4, size=n).astype(np.float64)
        e.partial_fit(X, w)
        fed.append(X.astype(np.float64))
        wts.append(w)
        if step % 3 == 0 and e.n_points >= 3:
            e.query()
        P, W, S, level = e.coreset()
        assert (S >= 0).all() and np.isfinite(S).all()
        data, dw = np.concatenate(fed), np.concatenate(wts)
        for g in (np.cumsum(dw[:, None] * data, axis=0)[-1] / dw.sum(), rng.normal(size=3)):
            want = (dw * ((data - g) ** 2).sum(axis=1)).sum()
            got = S.sum() + (W * ((P.astype(np.float64) - g) ** 2).sum(axis=1)).sum()
            np.testing.assert_allclose(got, want, rtol=rtol, err_msg=f"step {step}")
        if level > 0:
            assert S.sum() > 0
    assert e.stats()["max_level"] >= 2


@pytest.mark.parametrize("kind", ["ct", "cc", "rcc"])
def test_inertia_is_the_coreset_cost_plus_spread_and_bounds_the_cost(kind):
    """query()'s inertia is the solver's cost on the summary plus the spread it
    carries: an upper bound on the data's cost against the answer (float64)."""
    degrees = (2, 4) if kind == "rcc" else (2,)
    e = make_engine("cython", kind, d=2, k=3, m=12, degrees=degrees, n_init=3, max_iter=30)
    rng = np.random.default_rng(2)
    centers = rng.uniform(-10, 10, size=(3, 2))
    X = mixture(rng, 2000, centers)
    e.partial_fit(X, ones(2000))
    got, inertia = e.query()
    P, W, S, _ = e.coreset()
    solver = (W * ((P[:, None, :] - got[None]) ** 2).sum(-1).min(1)).sum()
    np.testing.assert_allclose(inertia, solver + S.sum(), rtol=1e-12)
    true = ((X[:, None, :] - got[None]) ** 2).sum(-1).min(1).sum()
    assert inertia >= true * (1 - 1e-12)
    assert inertia <= 1.2 * true


# ---------------------------------------------------------------- CT is a base-r counter
@pytest.mark.parametrize("backend", BOTH)
@pytest.mark.parametrize("r", [2, 3, 4])
def test_ct_levels_are_the_base_r_digits(backend, r):
    """Without overflow |Q_l| is the l-th base-r digit of N, the j-th bucket of
    Q_l covers [H_l + (j-1) r^l + 1, H_l + j r^l] at level l and weighs r^l m
    (docs/algorithms.md §4), and a query solves on every bucket plus B."""
    m, L = 4, 4
    e = make_engine(backend, "ct", d=2, k=2, m=m, degrees=(r,), max_levels=L)
    b = bufs(e)
    rng = np.random.default_rng(r)
    last = r ** L - 1 if backend == "cython" else min(r ** L - 1, 40)
    for N in range(1, last + 1):
        if N % 5 == 0:
            # one point in the partial bucket: the CT summary is the union of the
            # tree's N-1 buckets, highest level (oldest) first, then B
            e.partial_fit(rng.normal(size=(1, 2)), ones(1))
            points, weights, _, level = e.coreset()
            order = [s for lvl in range(L - 1, -1, -1) for s in list_slots(e, 0, lvl)]
            union = np.concatenate([b["pool_x"][s, :m] for s in order]
                                   + [b["pool_x"][e.b_slot, :1]])
            np.testing.assert_array_equal(points, union)
            assert level == floor_log(N - 1, r)            # §4: level <= floor(log_r N)
            assert np.cumsum(weights)[-1] == (N - 1) * m + 1
            e.partial_fit(rng.normal(size=(m - 1, 2)), ones(m - 1))
        else:
            e.partial_fit(rng.normal(size=(m, 2)), ones(m))
        assert e.n_buckets == N
        ds = (digits(N, r) + [0] * L)[:L]
        assert b["list_cnt"][0].tolist() == ds, (N, b["list_cnt"][0].tolist())
        for lvl in range(L):
            H = sum(ds[i] * r ** i for i in range(lvl + 1, L))
            for j, s in enumerate(list_slots(e, 0, lvl), start=1):
                si = b["slot_i"][s]
                assert (si[S_LO], si[S_HI]) == (H + (j - 1) * r ** lvl + 1, H + j * r ** lvl)
                assert si[S_LEVEL] == lvl
                assert b["slot_weight"][s] == r ** lvl * m
    assert e.absorptions == 0
    check_pool(e)


# ---------------------------------------------------------------- CC cache (Lemma 4, §5.1)
@pytest.mark.parametrize("backend", BOTH)
@pytest.mark.parametrize("r", [2, 3, 4])
def test_cc_lemma4_query_after_every_bucket(backend, r):
    """With a query after every base bucket, every lookup of major(N) > 0 hits
    (Lemma 4).  A query at N with a single non-zero digit (major(N) == 0) has
    no prefix to look up and falls back to the tree; that is no lookup, so it
    counts as neither a hit nor a miss, and CC never misses.  Cache keys stay within
    prefixsum(N) ∪ {N}, each entry with key K weighs K*m, and after the query
    at N every key of prefixsum(N+1) is cached."""
    m = 5
    e = make_engine(backend, "cc", d=2, k=2, m=m, degrees=(r,), max_levels=8, n_init=1,
                    max_iter=3)
    rng = np.random.default_rng(r)
    last = 300 if backend == "cython" else 60
    for N in range(1, last + 1):
        e.partial_fit(rng.normal(size=(m, 2)), ones(m))
        keys = set(cache_entries(e))
        assert keys <= prefixsum(N, r) | {N}, (N, keys)         # evicted at update
        before = e.stats()
        e.query()
        after = e.stats()
        hits, misses = after["cache_hits"] - before["cache_hits"], \
            after["cache_misses"] - before["cache_misses"]
        if major(N, r) > 0:
            assert (hits, misses) == (1, 0), (N, "major(N) was not cached")
        else:
            assert (hits, misses) == (0, 0), N
        entries = cache_entries(e)
        assert set(entries) <= prefixsum(N, r) | {N}, (N, entries)
        assert N in entries
        assert prefixsum(N + 1, r) <= set(entries), (N, entries)   # Lemma 4
        for key, s in entries.items():
            assert bufs(e)["slot_weight"][s] == key * m, (N, key)
            assert tuple(bufs(e)["slot_i"][s, [S_LO, S_HI]]) == (1, key)
        assert len(entries) <= chi(N, r)
        e.query()                                 # a repeated query does not look up again
        assert e.stats() == after
    assert e.stats()["cache_misses"] == 0
    check_pool(e)
    check_unit_weight_slots(e)


class _ProbeEngine(ReferenceEngine):
    """The reference engine, counting lookups of a prefix key K > 0 that is not
    cached (true misses), per order."""

    def _coreset(self, g):
        a = self.a
        n = int(a["inst_i"][g, 1])
        if self._cache_find(g, n) == EMPTY:
            low = self._nonempty_levels(g)[-1]
            key = int(a["list_span"][g, low, 0, 0]) - 1
            if key > 0 and self._cache_find(g, key) == EMPTY:
                order = int(a["inst_i"][g, 0])
                self.true_misses[order] = self.true_misses.get(order, 0) + 1
        return super()._coreset(g)


@pytest.mark.parametrize("degrees", [(2, 4, 16), (3, 9)])
def test_rcc_every_order_hits_with_query_per_bucket(degrees):
    """§6.2: when a query follows every base bucket, every inner structure is
    queried after each insertion, so no order ever misses a cached prefix."""
    m = 4
    probe = _ProbeEngine("rcc", 2, 2, m, degrees, 3, 1, 3, 1.2, np.float64, 5)
    probe.true_misses = {}
    cy = make_engine("cython", "rcc", d=2, k=2, m=m, degrees=degrees, max_levels=3, n_init=1,
                     max_iter=3, seed=5)
    rng = np.random.default_rng(0)
    for _ in range(150):
        X = rng.normal(size=(m, 2))
        probe.partial_fit(X, ones(m))
        cy.partial_fit(X, ones(m))
        probe.query()
        cy.query()
    assert probe.true_misses == {}
    assert probe.hits > 150
    assert cy.stats() == probe.stats()


# ---------------------------------------------------------------- level bounds
@pytest.mark.parametrize("every", [1, 3, 5])
@pytest.mark.parametrize("r", [2, 3, 4])
def test_cc_level_bound_lemma5(r, every):
    """Lemma 5: CC's coreset after base bucket N has level <= chi(N) + floor(log_r N)."""
    m = 4
    e = make_engine("cython", "cc", d=2, k=2, m=m, degrees=(r,), max_levels=10, n_init=1,
                    max_iter=3, seed=r)
    rng = np.random.default_rng(r + every)
    reached = False
    for N in range(1, 400):
        e.partial_fit(rng.normal(size=(m, 2)), ones(m))
        if N % every == 0:
            e.query()
            level = e.coreset()[3]
            bound = chi(N, r) + floor_log(N, r)
            assert level <= bound, (N, level, bound)
            reached |= level == bound
    if every == 1 and r == 3:
        assert reached          # §5: for r = 3 the bound is attained


@pytest.mark.parametrize("every", [1, 6])
@pytest.mark.parametrize("degrees", [(2, 4, 16), (2, 4)])
def test_rcc_level_bound(degrees, every):
    """§6.2 (our bound): level <= chi_R(N) + floor(log_R N) + 3, R the outer degree."""
    m, R = 4, degrees[-1]
    e = make_engine("cython", "rcc", d=2, k=2, m=m, degrees=degrees, max_levels=5, n_init=1,
                    max_iter=3, seed=1)
    rng = np.random.default_rng(every)
    for N in range(1, 1000):
        e.partial_fit(rng.normal(size=(m, 2)), ones(m))
        if N % every == 0:
            e.query()
            level = e.coreset()[3]
            assert level <= chi(N, R) + floor_log(N, R) + 3, (N, level)
    assert e.absorptions == 0


# ---------------------------------------------------------------- overflow (§11)
def _state_prefix_keys(e, g=0):
    """PREFIX_KEYS() of §6.2, from the lists' lo fields."""
    b = bufs(e)
    nonempty = [lvl for lvl in range(b["list_cnt"].shape[1] - 1, -1, -1)
                if b["list_cnt"][g, lvl] > 0]
    return {int(b["inst_i"][g, 1])} | {int(b["list_span"][g, lvl, 0, 0]) - 1
                                       for lvl in nonempty[1:]}


@pytest.mark.parametrize("backend", BOTH)
@pytest.mark.parametrize("kind,degrees,L", [
    ("cc", (2,), 3), ("ct", (2,), 3), ("cc", (3,), 2), ("rcc", (2, 4), 2),
    ("onlinecc", (2,), 3),
])
def test_overflow_absorbs_into_the_top_level(backend, kind, degrees, L):
    m, r = 5, degrees[-1]
    e = make_engine(backend, kind, d=2, k=2, m=m, degrees=degrees, max_levels=L, n_init=1,
                    max_iter=3)
    memory = e.memory_bytes
    capacity = e.stats()["bucket_capacity"]
    rng = np.random.default_rng(2)
    last = 200 if backend == "cython" else 50
    for N in range(1, last + 1):
        e.partial_fit(rng.normal(size=(m, 2)), ones(m))
        if N % 2:
            e.query()
        stats = e.stats()
        assert stats["absorptions"] == expected_absorptions(N, r, L), N
        assert e.memory_bytes == memory
        assert stats["live_buckets"] <= capacity
        assert np.cumsum(e.coreset()[1])[-1] == N * m
        check_pool(e)
        check_unit_weight_slots(e)
        if kind != "ct":
            assert set(cache_entries(e)) <= _state_prefix_keys(e), N
        if stats["absorptions"]:
            # the oldest top bucket covers [1, ...] and has level L-1+absorptions
            top = list_slots(e, 0, L - 1)[0]
            assert bufs(e)["slot_i"][top, S_LO] == 1
            assert bufs(e)["slot_i"][top, S_LEVEL] == L - 1 + stats["absorptions"]
        else:                   # before overflow the outer lists count N in base r
            assert bufs(e)["list_cnt"][0, :L].tolist() == (digits(N, r) + [0] * L)[:L]
    assert e.absorptions >= 3


# ---------------------------------------------------------------- the pool never leaks
@pytest.mark.parametrize("backend", BOTH)
@pytest.mark.parametrize("kind,degrees", [("cc", (2,)), ("cc", (4,)), ("rcc", (2, 4, 16)),
                                          ("rcc", (3, 9)), ("onlinecc", (2,)), ("ct", (2,))])
def test_pool_never_leaks(backend, kind, degrees):
    """After every operation each live slot is referenced exactly as often as
    its reference count says; live buckets stay within the §11 bound for the
    current N (digits in the lists, one cache entry per non-empty level, the
    partial bucket); RCC inner structures hold exactly their level's buckets."""
    m, L = 4, 4
    e = make_engine(backend, kind, d=2, k=2, m=m, degrees=degrees, max_levels=L, n_init=1,
                    max_iter=3)
    rng = np.random.default_rng(len(degrees))
    steps = 160 if backend == "cython" else 50
    peak = 0
    for step in range(steps):
        n = int(rng.integers(1, 3 * m))
        e.partial_fit(rng.normal(size=(n, 2)), rng.integers(1, 3, size=n).astype(float))
        if rng.random() < 0.5:
            e.query()
        if rng.random() < 0.2:
            e.coreset()
        live = check_pool(e)
        assert len(live) == e.stats()["live_buckets"]
        peak = max(peak, len(live))
        if kind == "rcc":
            check_inner_structures(e)
        else:
            # the lists hold digit-sum(N) buckets, the cache one per non-empty
            # level (chi(N)), plus the partial bucket
            N, r = e.n_buckets, degrees[0]
            bound = sum(digits(N, r)) + chi(N, r) + 1 if N < r ** L else L * r + 1
            assert len(live) <= bound, (step, len(live), bound)
    assert peak <= e.stats()["bucket_capacity"]
    if kind == "rcc":
        assert np.cumsum(e.coreset()[1])[-1] == e.n_seen


def test_rcc_inner_structures_are_reset_on_merge():
    """§10 bug 3: an inner structure left in place after its level merges keeps
    old buckets, so the next inner coreset counts their weight twice."""
    m = 3
    e = make_engine("cython", "rcc", d=2, k=2, m=m, degrees=(2, 4, 16), max_levels=3, n_init=1,
                    max_iter=2)
    rng = np.random.default_rng(0)
    for N in range(1, 16 * 4 + 1):
        e.partial_fit(rng.normal(size=(m, 2)), ones(m))
        e.query()
        check_inner_structures(e)
        points, weights, _, _ = e.coreset()
        assert np.cumsum(weights)[-1] == N * m
        b = bufs(e)
        # the top instance's level-0 list holds N mod 16 buckets, and so does its inner RCC
        child = int(b["child"][0, 0])
        assert int(b["inst_i"][child, 1]) == N % 16


# ---------------------------------------------------------------- OnlineCC
def _stationary(rng, k, d):
    return rng.uniform(-10, 10, size=(k, d))


def test_onlinecc_before_initialisation_answers_like_cc():
    """Until min(10 k, m) points have arrived OnlineCC is a CC driver: the same
    seed and input give the same answers as a CC engine."""
    k, m = 3, 60
    online = make_engine("cython", "onlinecc", d=2, k=k, m=m, seed=4)
    cc = make_engine("cython", "cc", d=2, k=k, m=m, seed=4)
    rng = np.random.default_rng(0)
    for _ in range(5):
        X = rng.normal(size=(5, 2))
        online.partial_fit(X, ones(5))
        cc.partial_fit(X, ones(5))
        _assert_same_answer(online, cc)
    assert not online.initialised and online.fallbacks == 0
    X = rng.normal(size=(10, 2))
    online.partial_fit(X, ones(10))          # 35 points: initialised on the first 30
    assert online.initialised
    centers, inertia = online.query()
    assert centers.shape == (k, 2) and np.isfinite(centers).all() and inertia > 0


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("k,d", [(3, 2), (5, 5)])
def test_onlinecc_falls_back_rarely_on_a_stationary_stream(seed, k, d):
    """EstCost grows about as fast as the true cost, so on a stationary stream a
    fallback happens each time the stream grows by a factor ~alpha:
    O(log_alpha n) fallbacks, far fewer than queries."""
    alpha, q, n_queries = 1.2, 10, 500
    e = make_engine("cython", "onlinecc", d=d, k=k, m=20 * k, alpha=alpha, n_init=3,
                    max_iter=20, seed=seed)
    rng = np.random.default_rng(seed)
    centers = _stationary(rng, k, d)
    for _ in range(n_queries):
        e.partial_fit(mixture(rng, q, centers), ones(q))
        e.query()
        # the online centres' weights (solver cluster weights at the last
        # fallback, plus every MacQueen step since) account for every point
        if e.initialised:
            assert np.cumsum(bufs(e)["solve_w"][2])[-1] == e.n_seen
    n_init_points = 10 * k
    assert e.initialised
    assert e.fallbacks < 0.25 * n_queries
    assert e.fallbacks <= 2 * math.log(q * n_queries / n_init_points, alpha) + 2
    assert e.fallbacks >= 1


def _true_cost(points, centers):
    X = np.concatenate(points)
    return _ops.cost(X, ones(len(X)), np.ascontiguousarray(centers, dtype=np.float64))


def test_onlinecc_estcost_bounds_the_cost_until_the_first_fallback():
    """Lemma 10's induction step: from an exact start (the initial solve on raw
    points, Lloyd converged, so every centre is the mean of its points), the
    increment w * D^2 only over-estimates.  A huge alpha disables fallbacks."""
    k, d = 4, 3
    e = make_engine("cython", "onlinecc", d=d, k=k, m=20 * k, alpha=1e12, n_init=3,
                    max_iter=100, seed=3)
    rng = np.random.default_rng(3)
    centers = _stationary(rng, k, d)
    fed = []
    checked = 0
    for _ in range(300):
        X = mixture(rng, 7, centers)
        fed.append(X)
        e.partial_fit(X, ones(len(X)))
        if e.n_points < k:
            continue
        got, est = e.query()
        if e.initialised:
            assert est >= _true_cost(fed, got) * (1 - 1e-12)
            checked += 1
    assert e.fallbacks == 0 and checked > 290


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_onlinecc_estcost_is_an_upper_bound_lemma10(seed, dtype):
    """With fallbacks: phi0 is the coreset cost plus the carried spread, which
    bounds the data's cost (each leaf is its mean), so EstCost stays an upper
    bound (docs/internals.md).  float32 rounds the means and the centres."""
    k, d = 3 + seed % 2, 2 + seed
    e = make_engine("cython", "onlinecc", d=d, k=k, m=20 * k, alpha=1.2, n_init=3,
                    max_iter=20, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    centers = _stationary(rng, k, d)
    fed = []
    tol = 1e-12 if dtype == np.float64 else 1e-6
    for _ in range(300):
        X = mixture(rng, 10, centers).astype(dtype)
        fed.append(X.astype(np.float64))
        e.partial_fit(X, ones(len(X)))
        if e.n_points < k:
            continue
        got, est = e.query()
        assert est >= _true_cost(fed, got) * (1 - tol), (e.n_points, e.fallbacks)
    assert e.fallbacks > 0


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_sequential_inertia_bounds_the_cost(dtype):
    """Sequential k-means: the first k points are the centres (cost 0); every
    MacQueen step keeps each centre the mean of its points, so the running sum
    of w * D^2 bounds the true cost (the same argument as Lemma 10)."""
    k, d = 4, 3
    e = make_engine("cython", "sequential", d=d, k=k, dtype=dtype, seed=0)
    rng = np.random.default_rng(1)
    centers = _stationary(rng, k, d)
    fed = []
    for _ in range(200):
        X = mixture(rng, 5, centers).astype(dtype)
        fed.append(X.astype(np.float64))
        e.partial_fit(X, ones(len(X)))
        got, est = e.query()
        # float32 centres are rounded on output, hence the looser tolerance
        tol = 1e-12 if dtype == np.float64 else 1e-5
        assert est >= _true_cost(fed, got) * (1 - tol)
    points, weights, _, level = e.coreset()
    assert len(points) == k and level == 0 and weights.sum() == e.n_seen


# ---------------------------------------------------------------- pickling
@pytest.mark.parametrize("backend", BOTH)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_pickle_round_trip_continues_bit_identically(backend, config):
    def feed(engines, rng, steps):
        for step in range(steps):
            n = int(rng.integers(1, 20))
            X = rng.normal(size=(n, 3)).astype(np.float32)
            w = rng.integers(1, 3, size=n).astype(np.float64)
            for e in engines:
                e.partial_fit(X, w)
            if step % 2 and engines[0].n_points >= 3:
                answers = [e.query() for e in engines]
                for c, f in answers[1:]:
                    np.testing.assert_array_equal(c, answers[0][0])
                    assert f == answers[0][1]

    original, twin = (_engines(config, np.float32, backends=[backend])[0] for _ in range(2))
    feed([original, twin], np.random.default_rng(1), 15)
    original.query()
    twin.query()
    copy = pickle.loads(pickle.dumps(original))
    assert type(copy) is type(original)
    _assert_same_state(copy, original)
    for name in STATE_BUFFERS:
        np.testing.assert_array_equal(bufs(copy)[name], bufs(original)[name], err_msg=name)
    _assert_same_answer(copy, original, "right after unpickling (cached answer)")
    feed([original, copy, twin], np.random.default_rng(2), 25)
    _assert_same_answer(copy, original)
    _assert_same_answer(copy, twin)
    _assert_same_coreset(copy, original)
    _assert_same_state(copy, original)


# ---------------------------------------------------------------- memory is fixed
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("config", list(CONFIGS))
def test_memory_bytes_is_the_planned_layout(config, dtype):
    kind, degrees, m, k = CONFIGS[config]
    layout = _defaults.plan(kind, m, degrees, 6)
    planned = sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
                  for shape, dt in _defaults.buffers(layout, 3, k, m, dtype).values())
    engines = _engines(config, dtype)
    assert [e.memory_bytes for e in engines] == [planned, planned]
    assert planned == _defaults.memory_bytes(layout, 3, k, m, dtype)
    buffers = _defaults.buffers(layout, 3, k, m, dtype)
    # the compiled engine allocates exactly the plan; the twin keeps its state
    # buffers under the same names and shapes, and reports the plan's bytes
    assert {name: (a.shape, a.dtype) for name, a in engines[0].buffers.items()} == {
        name: (tuple(shape), np.dtype(dt)) for name, (shape, dt) in buffers.items()}
    assert {name: (a.shape, a.dtype) for name, a in engines[1].a.items()} == {
        name: (tuple(buffers[name][0]), np.dtype(buffers[name][1]))
        for name in _defaults.STATE_BUFFERS}
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1000, 3)).astype(dtype)
    for e in engines:
        e.partial_fit(X, ones(1000))
        e.query()
        assert e.memory_bytes == planned
        assert e.stats()["live_buckets"] <= e.stats()["bucket_capacity"]


@pytest.mark.parametrize("kind,degrees,levels", [
    ("cc", (2,), 24), ("ct", (2,), 24), ("rcc", (2, 4, 16), 6), ("onlinecc", (2,), 24),
    ("sequential", (2,), 24),
])
def test_memory_bytes_unchanged_after_a_million_points(kind, degrees, levels):
    d, k, m = 5, 5, 100
    e = make_engine("cython", kind, d=d, k=k, m=m, degrees=degrees, max_levels=levels,
                    n_init=1, max_iter=5, dtype=np.float32)
    before = e.memory_bytes
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10**6, d)).astype(np.float32)
    w = ones(10**6)
    e.partial_fit(X[:1000], w[:1000])
    e.query()
    assert e.memory_bytes == before
    e.partial_fit(X[1000:], w[1000:])
    centers, _ = e.query()
    assert e.memory_bytes == before
    assert e.n_points == 10**6 and e.n_seen == 10**6
    assert np.cumsum(e.coreset()[1])[-1] == 10**6
    assert centers.shape == (k, d) and np.isfinite(centers).all()
    if kind != "sequential":
        assert e.n_buckets == 10**6 // m
        assert e.absorptions == 0
        check_pool(e)
