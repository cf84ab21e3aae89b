"""Per-cluster quantiles of the squared distance to the centre, from a coreset's spread.

A coreset point stands for a group of data points: it is their weighted mean
``mu``, its weight ``w`` is their weight, and its spread ``s`` is their sum of
squared distances to ``mu`` (:class:`edgekm.Coreset`).  The distribution of
``||x - c||²`` over a cluster (the data nearest to centre ``c``) is modelled as
the mixture, weighted by ``w``, of one component per coreset point: the group
as an isotropic Gaussian around ``mu`` with per-feature variance
``sigma² = s / (w d)``.  ``||x - c||²`` of one component is then ``sigma²``
times a noncentral chi-square with ``d`` degrees of freedom and noncentrality
``||mu - c||² / sigma²``; its mean is ``s / w + ||mu - c||²``, the group's
exact mean squared distance to ``c``.  A point with spread 0 (a raw point) is
a point mass at ``||mu - c||²``.

Each component is represented by ``n_draws`` equally weighted values, and the
cluster's quantiles are the weighted quantiles of all its components' values
(the smallest value whose cumulative weight reaches ``q`` times the total, the
rule of ``sync.versions.weighted_quantiles``).  Two ways to draw the values:

- ``"moment"`` (default): deterministic.  Each component is moment-matched by
  a gamma law (same mean and variance as the noncentral chi-square) and its
  values are the gamma's quantiles at the stratified levels
  ``(j + 0.5) / n_draws`` by the Wilson-Hilferty cube-root approximation.
- ``"mc"``: seeded Monte Carlo, exact in law: ``(delta + sigma z)² + sigma²
  chi²_{d-1}`` with ``z`` standard normal along the direction of ``mu - c``.

``benchmarks/calibration.py`` measures both on real and synthetic data.

**Floor.**  A cluster made of few points with little or no spread (one raw
point: every value is 0) would get quantiles of 0, and a score ``d² / q``
would be infinite.  Every quantile is therefore at least ``floor``:
``FLOOR_FRACTION`` (1e-3) times the model's mean squared distance over all
clusters, and at least ``FLOOR_ABSOLUTE`` (1e-12) times ``1 +`` the largest
squared norm of a centre, so it is positive and finite even when all the data
are one point.  The floor is far below any cluster's median in practice (a
cluster 30 times tighter than the average in every direction still has its
median above it), so it does not move calibrated thresholds.

Everything here is NumPy (and the standard library); it runs on a device.
"""

from statistics import NormalDist

import numpy as np

QUANTILES = (0.5, 0.95, 0.99)
FLOOR_FRACTION = 1e-3
FLOOR_ABSOLUTE = 1e-12
DEFAULT_DRAWS = {"moment": 64, "mc": 256}
METHODS = ("moment", "mc")


def _nearest(points, centers):
    """Labels (int64) and squared distances (float64) to the nearest centre, in chunks."""
    n, k = points.shape[0], centers.shape[0]
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    step = max(1, (1 << 22) // max(1, k * points.shape[1]))
    for start in range(0, n, step):
        diff = points[start:start + step, None, :] - centers[None, :, :]
        d2 = np.einsum("nkd,nkd->nk", diff, diff)
        labels[start:start + step] = np.argmin(d2, axis=1)
        dist[start:start + step] = d2[np.arange(d2.shape[0]), labels[start:start + step]]
    return labels, dist


def _component_values(delta2, sigma2, n_features, method, n_draws, random_state):
    """(n_components, n_draws) values of ||x - c||² for each component."""
    n = delta2.shape[0]
    if method == "moment":
        mean = n_features * sigma2 + delta2
        var = 2.0 * sigma2 * sigma2 * n_features + 4.0 * sigma2 * delta2
        u = (np.arange(n_draws) + 0.5) / n_draws
        z = np.array([NormalDist().inv_cdf(float(p)) for p in u])
        values = np.repeat(mean[:, None], n_draws, axis=1)
        spread = var > 0
        shape = mean[spread] ** 2 / var[spread]            # gamma shape a, mean a * theta
        h = 1.0 / (9.0 * shape)
        cube = 1.0 - h[:, None] + z[None, :] * np.sqrt(h)[:, None]
        values[spread] = mean[spread, None] * np.maximum(cube, 0.0) ** 3
        return values
    rng = np.random.default_rng(random_state)
    sigma = np.sqrt(sigma2)[:, None]
    z = rng.standard_normal((n, n_draws))
    rest = (rng.chisquare(n_features - 1, size=(n, n_draws)) if n_features > 1
            else np.zeros((n, n_draws)))
    return (np.sqrt(delta2)[:, None] + sigma * z) ** 2 + sigma * sigma * rest


def _weighted_quantiles(values, weights, qs):
    """For each q, the smallest value whose cumulative weight >= q * total."""
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(weights[order])
    idx = np.searchsorted(cum, qs * cum[-1], side="left")
    return values[order][np.minimum(idx, values.size - 1)]


def cluster_quantiles(points, weights, spread, centers, quantiles=QUANTILES, *,
                      method="moment", n_draws=None, random_state=0):
    """Per-cluster weights and quantiles of the squared distance to the cluster's centre.

    Parameters
    ----------
    points : array-like of shape (n_points, n_features)
        Coreset points (each the mean of the data it stands for).
    weights : array-like of shape (n_points,)
        Their weights, > 0.
    spread : array-like of shape (n_points,) or None
        Their spread (within-group sum of squared distances), >= 0; None
        means raw points (all zeros).
    centers : array-like of shape (n_clusters, n_features)
    quantiles : sequence of float in (0, 1), default=(0.5, 0.95, 0.99)
        Any levels, in any order.
    method : {"moment", "mc"}, default="moment"
        How each component's distribution is represented (module docstring).
    n_draws : int or None, default=None
        Values per component: 64 for "moment", 256 for "mc" when None.
    random_state : int, default=0
        Seed of "mc" (ignored by "moment"); the same inputs and seed give the
        same result.

    Returns
    -------
    cluster_weights : ndarray of shape (n_clusters,), float64
        Total weight of the coreset points nearest to each centre.
    cluster_quantiles : ndarray of shape (n_clusters, len(quantiles)), float64
        Finite and positive (at least the floor, module docstring), and
        non-decreasing in the quantile level.  A cluster with no weight gets
        the floor.
    """
    X = np.asarray(points, dtype=np.float64)
    C = np.asarray(centers, dtype=np.float64)
    if X.ndim != 2 or C.ndim != 2 or X.shape[1] != C.shape[1] or C.shape[0] < 1:
        raise ValueError(f"points {X.shape} and centers {C.shape} must be 2-D with the "
                         "same number of features, and at least one centre.")
    w = np.asarray(weights, dtype=np.float64)
    s = np.zeros(X.shape[0]) if spread is None else np.asarray(spread, dtype=np.float64)
    if w.shape != (X.shape[0],) or s.shape != (X.shape[0],):
        raise ValueError("weights and spread must have shape (n_points,).")
    if not (np.isfinite(X).all() and np.isfinite(C).all() and np.isfinite(w).all()
            and np.isfinite(s).all()) or (w <= 0).any() or (s < 0).any():
        raise ValueError("points, centers, weights and spread must be finite, weights > 0 "
                         "and spread >= 0.")
    qs = np.asarray(quantiles, dtype=np.float64)
    if qs.ndim != 1 or qs.size == 0 or not ((qs > 0) & (qs < 1)).all():
        raise ValueError(f"quantiles must be levels in (0, 1); got {quantiles!r}.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    draws = DEFAULT_DRAWS[method] if n_draws is None else int(n_draws)
    if draws < 1:
        raise ValueError(f"n_draws must be >= 1; got {n_draws!r}.")
    k, d = C.shape
    labels, delta2 = _nearest(X, C) if X.shape[0] else (np.zeros(0, np.int64), np.zeros(0))
    cluster_weights = np.bincount(labels, weights=w, minlength=k).astype(np.float64)
    total = float(w.sum()) if w.size else 0.0
    mean_sq = float((s + w * delta2).sum()) / total if total > 0 else 0.0
    floor = max(FLOOR_FRACTION * mean_sq,
                FLOOR_ABSOLUTE * (1.0 + float((C * C).sum(axis=1).max())))
    sigma2 = s / (w * d)
    values = _component_values(delta2, sigma2, d, method, draws, random_state)
    order = np.argsort(qs, kind="stable")
    out = np.full((k, qs.size), floor)
    for c in range(k):
        mask = labels == c
        if not mask.any():
            continue
        vals = values[mask].ravel()
        vw = np.repeat(w[mask] / draws, draws)
        got = _weighted_quantiles(vals, vw, qs[order])
        out[c, order] = np.maximum.accumulate(np.maximum(got, floor))
    return cluster_weights, out
