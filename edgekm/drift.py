"""A calibrated drift test of a window (or of many devices' windows) against a version.

One window's per-cluster counts, sums and sums of squares, and per cluster the
number of points beyond the version's p99 of squared distance, are tested
against the version (its centres, training shares and p99).  Three families of
one-sided tests, each with a null distribution that accounts for the number of
points, each with a stated margin (what the version is allowed to be off by
before the stream counts as drifting: a version is an estimate, and with
100,000 points any exact null would be rejected on a stationary stream):

- **shares**: Pearson's ``X^2 = n * sum_c (p_c - q_c)^2 / q_c`` of the window's
  cluster shares ``p`` against the training shares ``q``, against a noncentral
  chi-squared with ``k - 1`` degrees of freedom and noncentrality
  ``n * SHARE_MARGIN**2`` (the null: Cohen's effect size ``w <= SHARE_MARGIN``);
- **tail**: per cluster, the count beyond the version's p99 against
  Binomial(``n_c``, ``TAIL_RATE``) (the null: at most ``TAIL_RATE`` of a cluster's
  points beyond its p99, which allows for the calibration error of the p99);
  exact upper tail;
- **mean**: per cluster, the distance of the window's mean ``m`` from the version's
  centre ``c`` in units of the cluster's RMS radius ``t = sqrt(mean ||x - m||^2)``
  (floored by ``scale``), ``z = sqrt(n_c) * (||m - c|| / t - MEAN_MARGIN)``: the
  deviate of the projection of the mean on the direction it moved, which is the
  least favourable case whatever the cluster's shape (a one-dimensional cluster);
  the null: the centre is within ``MEAN_MARGIN`` RMS radii of the stream's cluster
  mean.  Clusters with fewer than ``MIN_MEAN_POINTS`` points are not tested.

Each test gives a one-sided normal deviate ``z``.  Bonferroni: ``alpha`` is split
evenly over the families and over the tests inside each, so the critical deviate
of a test is ``z_crit = -Phi^-1(alpha / (3 m))`` for a family of ``m`` tests, and

``drift_score = max over the tests of z / z_crit`` (0 when every z <= 0),

so ``drift_score >= 1`` when any test rejects at its level, which happens on a
stationary stream (every null holding) in at most a fraction ``alpha`` of the
windows, whatever the window's size.  The same function tests the sum of many
devices' windows (the aggregator's combined test): sums of counts, sums and
sums of squares are the statistics of the pooled points.

Device-safe: NumPy and the standard library only.
"""

import math
from statistics import NormalDist

import numpy as np

__all__ = ["drift_test", "ALPHA", "SHARE_MARGIN", "TAIL_RATE", "MEAN_MARGIN",
           "MIN_MEAN_POINTS", "Z_CAP"]

#: false-alarm rate per window of ``drift_score >= 1`` on a stationary stream
ALPHA = 0.01
#: tolerated effect size (Cohen's w) of the cluster shares against the training shares
SHARE_MARGIN = 0.05
#: tolerated fraction of a cluster's points beyond its p99 (nominally 0.01)
TAIL_RATE = 0.03
#: tolerated distance of a centre from the stream's cluster mean, in RMS radii of the cluster
MEAN_MARGIN = 0.1
#: a cluster's mean is tested from this many points in the window
MIN_MEAN_POINTS = 100
#: deviates are capped here (a p-value that underflows), so scores stay finite
Z_CAP = 40.0

_NORMAL = NormalDist()
_SHARE_FLOOR = 1e-4


def _z_of_p(p):
    """One-sided normal deviate of an upper-tail probability p."""
    if p >= 0.5:
        return 0.0
    if p <= 0.0:
        return Z_CAP
    return min(-_NORMAL.inv_cdf(p), Z_CAP)


def critical_z(alpha, n_tests):
    """The Bonferroni critical deviate of one of ``n_tests`` tests in one of 3 families."""
    return -_NORMAL.inv_cdf(alpha / (3.0 * max(int(n_tests), 1)))


def _chi2_z(x, df, nc):
    """Normal deviate of ``x`` under a noncentral chi-squared(df, nc): Patnaik's central
    approximation, then Wilson and Hilferty's cube root."""
    c = (df + 2.0 * nc) / (df + nc)
    f = (df + nc) ** 2 / (df + 2.0 * nc)
    v = 2.0 / (9.0 * f)
    return float(np.clip(((x / (c * f)) ** (1.0 / 3.0) - (1.0 - v)) / math.sqrt(v),
                         -Z_CAP, Z_CAP))


def _binom_z(e, n, rate):
    """Normal deviate of the exact upper tail P(X >= e), X ~ Binomial(n, rate)."""
    e, n = int(round(e)), int(round(n))
    if n <= 0 or e <= n * rate:
        return 0.0
    lpe = (math.lgamma(n + 1) - math.lgamma(e + 1) - math.lgamma(n - e + 1)
           + e * math.log(rate) + (n - e) * math.log1p(-rate))
    sd = math.sqrt(n * rate * (1 - rate))
    j = np.arange(e, min(n, e + int(40 * sd) + 60) + 1, dtype=np.float64)
    log_ratio = np.log(n - j[:-1]) - np.log(j[:-1] + 1) + math.log(rate / (1 - rate))
    log_terms = np.concatenate([[0.0], np.cumsum(log_ratio)])
    log_tail = lpe + math.log(float(np.exp(log_terms).sum()))
    if log_tail < -700:                     # exp underflows: the deviate is far beyond any cap
        return Z_CAP
    return _z_of_p(math.exp(log_tail))


def drift_test(counts, beyond, sums, sumsq, centers, shares, *, alpha=ALPHA,
               share_margin=SHARE_MARGIN, tail_rate=TAIL_RATE, mean_margin=MEAN_MARGIN,
               min_mean_points=MIN_MEAN_POINTS, scale=None):
    """The calibrated drift test of one window (or of a pooled set of windows).

    Parameters
    ----------
    counts : array-like of shape (n_clusters,)
        Points assigned to each cluster.
    beyond : array-like of shape (n_clusters,) or None
        Points of each cluster beyond its p99; None skips the tail family.
    sums, sumsq : array-like of shape (n_clusters, n_features)
        Per-cluster sums and sums of squares of the points.
    centers : array-like of shape (n_clusters, n_features)
        The version's centres.
    shares : array-like of shape (n_clusters,)
        The version's training shares (or weights; normalised here).
    alpha, share_margin, tail_rate, mean_margin, min_mean_points
        See the module's docstring.
    scale : array-like of shape (n_clusters,) or None
        A floor under each cluster's mean squared distance to its mean (the filter
        passes the version's p99 of squared distance), so that a window that happens
        to miss a cluster's rare far points does not shrink the yardstick.

    Returns
    -------
    dict
        ``drift_score``; ``z_shares``, ``z_tail`` and ``z_mean`` (the largest
        deviate of each family, 0 when untested), ``z_crit`` (per family),
        ``drift_terms`` (each family's largest ``z / z_crit``) and ``cluster``
        (the cluster of the largest tail or mean term, or None).

    Examples
    --------
    >>> import numpy as np
    >>> counts = np.array([5000.0, 5000.0])
    >>> centers = np.zeros((2, 1)); centers[1, 0] = 10.0
    >>> sums = counts[:, None] * centers
    >>> sumsq = counts[:, None] * (centers ** 2 + 1.0)
    >>> r = drift_test(counts, np.array([50, 52]), sums, sumsq, centers, [1, 1])
    >>> r["drift_score"] < 1
    True
    >>> moved = sums.copy(); moved[0, 0] = 5000.0          # cluster 0's mean moved by 1 sd
    >>> moved_sq = sumsq.copy(); moved_sq[0, 0] = 5000.0 * 2.0
    >>> r = drift_test(counts, np.array([50, 52]), moved, moved_sq, centers, [1, 1])
    >>> r["drift_score"] >= 1, r["cluster"]
    (True, 0)
    """
    counts = np.asarray(counts, dtype=np.float64)
    sums = np.asarray(sums, dtype=np.float64)
    sumsq = np.asarray(sumsq, dtype=np.float64)
    centers = np.asarray(centers, dtype=np.float64)
    k, d = sums.shape
    n = float(counts.sum())
    q = np.maximum(np.asarray(shares, dtype=np.float64), 0.0)
    q = q / q.sum() if q.sum() > 0 else np.full(k, 1.0 / k)
    q = np.maximum(q, _SHARE_FLOOR)
    q /= q.sum()
    zc_shares, zc_tail, zc_mean = critical_z(alpha, 1), critical_z(alpha, k), \
        critical_z(alpha, k)
    out = {"z_shares": 0.0, "z_tail": 0.0, "z_mean": 0.0,
           "z_crit": {"shares": zc_shares, "tail": zc_tail, "mean": zc_mean}, "cluster": None}
    if n > 0 and k > 1:
        x2 = n * float(np.sum((counts / n - q) ** 2 / q))
        out["z_shares"] = max(_chi2_z(x2, k - 1, n * share_margin ** 2), 0.0)
    best_tail = best_mean = (0.0, None)
    if beyond is not None:
        beyond = np.asarray(beyond, dtype=np.float64)
        for c in np.flatnonzero(counts > 0):
            z = _binom_z(beyond[c], counts[c], tail_rate)
            if z > best_tail[0]:
                best_tail = (z, int(c))
    tested = np.flatnonzero(counts >= min_mean_points)
    if tested.size:
        nc = counts[tested]
        m = sums[tested] / nc[:, None]
        spread = np.maximum(sumsq[tested].sum(axis=1) / nc - (m * m).sum(axis=1), 0.0)
        if scale is not None:
            spread = np.maximum(spread, np.asarray(scale, dtype=np.float64)[tested])
        gap = np.sqrt(((m - centers[tested]) ** 2).sum(axis=1))
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(spread > 0, gap / np.sqrt(np.where(spread > 0, spread, 1.0)), 0.0)
        z = np.clip(np.sqrt(nc) * (r - mean_margin), 0.0, Z_CAP)
        i = int(np.argmax(z))
        best_mean = (float(z[i]), int(tested[i]))
    out["z_tail"], out["z_mean"] = best_tail[0], best_mean[0]
    terms = {"shares": out["z_shares"] / zc_shares, "tail": best_tail[0] / zc_tail,
             "mean": best_mean[0] / zc_mean}
    out["drift_terms"] = terms
    out["drift_score"] = float(max(terms.values()))
    if terms["tail"] > 0 or terms["mean"] > 0:
        out["cluster"] = best_tail[1] if terms["tail"] >= terms["mean"] else best_mean[1]
    return out
