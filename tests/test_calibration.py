"""edgekm.solve.cluster_statistics: quantiles of the squared distance from a coreset's spread."""

import numpy as np
import pytest

LEVELS_DEFAULT = (0.5, 0.95, 0.99)

from edgekm import Coreset
from edgekm._defaults import QUANTILE_FLOOR_ABSOLUTE as FLOOR_ABSOLUTE
from edgekm._defaults import QUANTILE_FLOOR_FRACTION as FLOOR_FRACTION
from edgekm.solve import cluster_statistics


def cluster_quantiles(points, weights, spread, centers, quantiles=LEVELS_DEFAULT, **kwargs):
    return cluster_statistics((points, weights, spread), centers, quantiles, **kwargs)

# chi-square quantiles, d = 5 (scipy.stats.chi2.ppf([0.5, 0.95, 0.99], 5))
CHI2_5 = np.array([4.351460191, 11.070497694, 15.086272469])
LEVELS = (0.5, 0.95, 0.99)


@pytest.mark.parametrize("method", ["moment", "mc"])
def test_one_gaussian_component_gives_the_chi_square_quantiles(method):
    """One point standing for N(0, I_5) data of weight 1000: the model is exactly
    chi-square with 5 degrees of freedom around its own mean."""
    w, d = 1000.0, 5
    _, q = cluster_quantiles(np.zeros((1, d)), [w], [w * d], np.zeros((1, d)), LEVELS,
                             method=method, n_draws=4096 if method == "mc" else 256)
    np.testing.assert_allclose(q[0], CHI2_5, rtol=0.03)


@pytest.mark.parametrize("method", ["moment", "mc"])
@pytest.mark.parametrize("d,chi2", [(5, CHI2_5), (30, [29.336030, 43.772972, 50.892181])])
def test_a_reduced_gaussian_cluster_is_calibrated(method, d, chi2):
    """20,000 draws of N(0, I_d) reduced by the coreset tree to 200 leaf means
    with their spread: the modelled p50, p95 and p99 are within 8% of the
    chi-square quantiles.  (The leaves of one cluster are not isotropic: the
    outer ones are elongated along the radius, so at d = 5 the modelled tail
    is light, p99 about 6% low; docs/benchmarks of benchmarks/calibration.py.)"""
    rng = np.random.default_rng(d)
    X = rng.normal(size=(20_000, d))
    acc = Coreset(X).merge(size=200, random_state=0)
    _, q = cluster_quantiles(acc.points, acc.weights, acc.spread, np.zeros((1, d)), LEVELS,
                             method=method)
    np.testing.assert_allclose(q[0], chi2, rtol=0.08)
    # without the spread the quantiles collapse (the defect of issue 11)
    _, q0 = cluster_quantiles(acc.points, acc.weights, None, np.zeros((1, d)), LEVELS)
    assert q0[0, 0] < 0.8 * chi2[0]


def test_raw_points_give_their_weighted_quantiles():
    X = np.arange(100, dtype=np.float64)[:, None]
    _, q = cluster_quantiles(X, np.ones(100), None, np.zeros((1, 1)), (0.5, 0.99))
    assert q[0].tolist() == [49.0 ** 2, 98.0 ** 2]


def test_zero_spread_single_point_cluster_gets_a_finite_positive_floor():
    points = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 1.0]])
    weights = np.array([1.0, 50.0, 50.0])
    centers = np.array([[0.0, 0.0], [10.0, 0.5], [500.0, 500.0]])   # the last one is empty
    cw, q = cluster_quantiles(points, weights, None, centers, LEVELS)
    assert cw.tolist() == [1.0, 100.0, 0.0]
    assert np.isfinite(q).all() and (q > 0).all()
    mean_sq = (100 * 0.25) / 101
    assert q[0].tolist() == [FLOOR_FRACTION * mean_sq] * 3
    assert q[2].tolist() == [FLOOR_FRACTION * mean_sq] * 3
    np.testing.assert_allclose(q[1], 0.25)
    # all the data at one point: the absolute floor, still positive
    _, q = cluster_quantiles(np.ones((3, 2)), np.ones(3), None, np.ones((1, 2)), LEVELS)
    assert (q == FLOOR_ABSOLUTE * 3.0).all()


def test_any_levels_in_any_order_are_monotone_and_deterministic():
    rng = np.random.default_rng(1)
    P = rng.normal(size=(300, 3))
    w = rng.uniform(1, 5, 300)
    s = rng.uniform(0, 4, 300)
    C = rng.normal(size=(4, 3))
    levels = (0.999, 0.1, 0.75, 0.5)
    for method in ("moment", "mc"):
        _, q = cluster_quantiles(P, w, s, C, levels, method=method, random_state=3)
        _, again = cluster_quantiles(P, w, s, C, levels, method=method, random_state=3)
        assert np.array_equal(q, again)
        order = np.argsort(levels)
        assert (np.diff(q[:, order], axis=1) >= 0).all()


@pytest.mark.parametrize("kwargs", [
    {"quantiles": (0.0, 0.5)}, {"quantiles": (1.0,)}, {"quantiles": ()},
    {"method": "exact"}, {"n_draws": 0},
])
def test_bad_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        cluster_quantiles(np.zeros((2, 2)), np.ones(2), None, np.zeros((1, 2)), **kwargs)


@pytest.mark.parametrize("spread,weights", [([-1.0, 0.0], [1.0, 1.0]), ([np.nan, 0.0], [1.0, 1.0]),
                                            ([0.0, 0.0], [0.0, 1.0])])
def test_bad_inputs_are_refused(spread, weights):
    with pytest.raises(ValueError):
        cluster_quantiles(np.zeros((2, 2)), weights, spread, np.zeros((1, 2)))


def test_a_coreset_is_taken_with_its_spread():
    rng = np.random.default_rng(4)
    acc = Coreset(rng.normal(size=(5000, 3))).merge(size=50, random_state=0)
    C = np.zeros((1, 3))
    assert np.array_equal(cluster_statistics(acc, C)[1],
                          cluster_statistics((acc.points, acc.weights, acc.spread), C)[1])
    with_spread = cluster_statistics(acc, C)[1]
    without = cluster_statistics((acc.points, acc.weights), C)[1]
    assert with_spread[0, 2] > without[0, 2]


def test_bad_containers_and_centers_are_refused():
    with pytest.raises(TypeError):
        cluster_statistics(np.zeros((2, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError):
        cluster_statistics((np.zeros((2, 2)), np.ones(2)), np.zeros((1, 3)))
