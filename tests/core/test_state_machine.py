"""A Hypothesis state machine over the public API, one per algorithm.

The machine keeps every point it feeds (the exact reference) and checks after
every step that the model's summary keeps the total weight exactly, has the
size the fixed layout allows, lives in constant memory, and is a usable
coreset of everything fed so far.
"""

import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from helpers.engine import digits, mixture
from edgekm import StreamingKMeans, _defaults
from edgekm._core import _ops
from edgekm.exceptions import NotFittedError

ALGORITHMS = ["ct", "cc", "rcc", "onlinecc", "sequential"]

# StreamKM++ coresets are proven accurate only in low dimension, and with a
# bucket of 8..20 points summarising hundreds they are loose; every reduce
# (and every absorption of a small max_levels) compounds the error.  On the
# well-spread random centre sets used here the ratio stayed within 0.55..1.5
# over 1,500 random runs (300 per algorithm, 40 steps); the accepted band, a factor 5 either way, leaves room for
# that while still catching a lost or double-counted bucket, or points that
# were summarised in the wrong place.
COST_BAND = (0.2, 5.0)

SETTINGS = settings(max_examples=40, stateful_step_count=30, deadline=None, derandomize=True,
                    database=None, suppress_health_check=[HealthCheck.too_slow])


def _machine(algorithm):
    class StreamingMachine(RuleBasedStateMachine):
        """Mirror of one StreamingKMeans: all points and weights fed so far."""

        @initialize(k=st.integers(2, 4), m=st.integers(8, 20), d=st.integers(1, 3),
                    seed=st.integers(0, 2**32 - 1), degree=st.sampled_from([2, 3]),
                    depth=st.sampled_from([2, 3]), max_levels=st.sampled_from([None, 2, 3]))
        def setup(self, k, m, d, seed, degree, depth, max_levels):
            if algorithm == "rcc":
                degree = 2                      # degrees (2, 4) or (2, 4, 16)
                if max_levels is not None and depth == 3:
                    max_levels = 1              # overflow after 16 buckets
            self.k, self.m, self.d, self.r = k, m, d, degree
            outer = degree ** (2 ** (depth - 1)) if algorithm == "rcc" else degree
            self.levels = max_levels or _defaults.default_max_levels(outer)
            self.model = StreamingKMeans(
                n_clusters=k, algorithm=algorithm, coreset_size=m, merge_degree=degree,
                nesting_depth=depth, max_levels=max_levels, n_init=2, max_iter=10,
                random_state=seed)
            rng = np.random.default_rng(seed)
            self.centres = rng.uniform(-10, 10, size=(k + 1, d))
            self.points = []            # float32 rows, as the model stores them
            self.weights = []
            self.fed_weight = 0         # exact: integer weights
            self.n_points = 0
            self.memory = None

        # ------------------------------------------------------------ helpers
        def _batch(self, seed, size):
            rng = np.random.default_rng(seed)
            return mixture(rng, size, self.centres).astype(np.float32)

        def _record(self, X, w):
            self.points.append(X)
            self.weights.append(w)
            self.fed_weight += int(w.sum())
            self.n_points += len(X)
            if self.memory is None:
                self.memory = self.model.memory_bytes
                assert self.memory > 0

        # ------------------------------------------------------------ rules
        @rule(seed=st.integers(0, 2**32 - 1), size=st.integers(0, 60),
              weighted=st.booleans())
        def partial_fit(self, seed, size, weighted):
            size = min(size, 3 * self.m)
            X = self._batch(seed, size)
            rng = np.random.default_rng(seed + 1)
            w = rng.integers(1, 4, size=size).astype(np.float64)
            if size == 0:
                # an empty batch is rejected (as in scikit-learn) and changes nothing
                with pytest.raises(ValueError):
                    self.model.partial_fit(X, sample_weight=w if weighted else None)
                return
            if weighted:
                self.model.partial_fit(X, sample_weight=w)
            else:
                self.model.partial_fit(X)
                w = np.ones(size)
            self._record(X, w)

        @rule(seed=st.integers(0, 2**32 - 1), weight=st.sampled_from([None, 1, 2, 3]))
        def learn_one(self, seed, weight):
            x = self._batch(seed, 1)[0]
            if weight is None:
                self.model.learn_one(x)
                weight = 1
            else:
                self.model.learn_one(x, float(weight))
            self._record(x[None, :], np.array([float(weight)]))

        @rule()
        def query(self):
            if self.n_points < self.k:
                with pytest.raises(NotFittedError):
                    self.model.cluster_centers_
                return
            centres = self.model.cluster_centers_
            assert centres.shape == (self.k, self.d) and centres.dtype == np.float32
            assert np.isfinite(centres).all()
            np.testing.assert_array_equal(self.model.cluster_centers_, centres)  # cached
            inertia = self.model.inertia_
            assert np.isfinite(inertia) and inertia >= 0

        @precondition(lambda self: self.n_points > 0)
        @rule()
        def pickle_round_trip(self):
            copy = pickle.loads(pickle.dumps(self.model))
            assert copy.coreset() == self.model.coreset()
            assert copy.memory_bytes == self.model.memory_bytes
            self.model = copy

        # ------------------------------------------------------------ invariants
        @invariant()
        def weight_is_exact(self):
            if self.n_points == 0:
                with pytest.raises(NotFittedError):
                    self.model.coreset()
                assert self.model.memory_bytes == 0
                return
            cs = self.model.coreset()
            assert cs.total_weight == self.fed_weight == self.model.n_seen_
            assert (cs.weights > 0).all() and cs.level >= 0

        @invariant()
        def size_within_layout(self):
            if self.n_points == 0:
                return
            size = len(self.model.coreset())
            m, k, r = self.m, self.k, self.r
            n_buckets, partial = divmod(self.n_points, m)
            if algorithm == "sequential":
                assert size == min(k, self.n_points)
            elif algorithm == "ct":
                assert size <= (self.levels * (r - 1) + 1) * m
                if self.model.stats()["absorptions"] == 0:
                    # the union of the tree's buckets (digit sum of N) plus B
                    assert size == sum(digits(n_buckets, r)) * m + partial
            else:
                # one cached coreset of m points plus the partial bucket
                assert size <= 2 * m - 1
                assert size == (m if n_buckets else 0) + partial

        @invariant()
        def memory_is_fixed(self):
            if self.memory is not None:
                assert self.model.memory_bytes == self.memory

        @invariant()
        def coreset_cost_tracks_the_true_cost(self):
            if algorithm == "sequential" or self.n_points < self.k:
                return                   # sequential k-means keeps no coreset (§8)
            cs = self.model.coreset()
            X = np.concatenate(self.points)
            w = np.concatenate(self.weights)
            rng = np.random.default_rng(self.n_points)
            low, high = X.min(axis=0) - 1.0, X.max(axis=0) + 1.0
            for _ in range(3):
                C = np.ascontiguousarray(rng.uniform(low, high, size=(self.k, self.d)))
                true = _ops.cost(X, w, C)
                ratio = cs.cost(C) / true
                assert COST_BAND[0] <= ratio <= COST_BAND[1], ratio
                if self.n_points < self.m:
                    # nothing reduced yet: the summary is the raw points
                    assert cs.cost(C) == pytest.approx(true, rel=1e-12)

    StreamingMachine.__name__ = f"StreamingMachine_{algorithm}"
    StreamingMachine.TestCase.settings = SETTINGS
    return StreamingMachine


TestCT = _machine("ct").TestCase
TestCC = _machine("cc").TestCase
TestRCC = _machine("rcc").TestCase
TestOnlineCC = _machine("onlinecc").TestCase
TestSequential = _machine("sequential").TestCase


# ---------------------------------------------------------------- determinism
def _stream(seed=0, n=700, d=3):
    rng = np.random.default_rng(seed)
    X = mixture(rng, n, rng.uniform(-10, 10, size=(4, d))).astype(np.float32)
    w = rng.integers(1, 4, size=n).astype(np.float64)
    return X, w


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_fit_is_bit_identical_for_the_same_random_state(algorithm):
    X, w = _stream()
    params = dict(n_clusters=3, algorithm=algorithm, coreset_size=24, random_state=123)
    a = StreamingKMeans(**params).fit(X, sample_weight=w)
    b = StreamingKMeans(**params).fit(X, sample_weight=w)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert a.inertia_ == b.inertia_
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert a.coreset() == b.coreset()
    # fit forgets everything: refitting the same model gives the same answer
    a.fit(X, sample_weight=w)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_pickling_mid_stream_continues_bit_identically(algorithm):
    X, w = _stream(seed=1)
    params = dict(n_clusters=3, algorithm=algorithm, coreset_size=16, random_state=7)
    straight = StreamingKMeans(**params)
    model = StreamingKMeans(**params)
    batches = np.array_split(np.arange(len(X)), 14)
    for i, idx in enumerate(batches[:7]):
        for m in (straight, model):
            m.partial_fit(X[idx], sample_weight=w[idx])
        if i % 2:
            np.testing.assert_array_equal(straight.cluster_centers_, model.cluster_centers_)
    copy = pickle.loads(pickle.dumps(model))
    for i, idx in enumerate(batches[7:]):
        for m in (straight, model, copy):
            m.partial_fit(X[idx], sample_weight=w[idx])
        if i % 2:
            centres = [m.cluster_centers_ for m in (straight, model, copy)]
            np.testing.assert_array_equal(centres[1], centres[0])
            np.testing.assert_array_equal(centres[2], centres[0])
    assert copy.coreset() == straight.coreset()
    assert copy.inertia_ == straight.inertia_
    assert copy.stats() == straight.stats()
    assert copy.n_seen_ == straight.n_seen_ == w.sum()
