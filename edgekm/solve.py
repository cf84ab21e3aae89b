"""The k-means solve, in one place: nearest centres, (trimmed) k-means on a weighted set,
and the per-cluster statistics a centroid version carries (weights and the quantiles of
the squared distance, from the coreset's spread: :func:`cluster_statistics`).

Every fit of centres on a coreset goes through :func:`fit_centers`, whoever asks: the
aggregator's ``publish`` and its ``/fit`` endpoint, ``edgekm fit`` and ``edgekm.dask``.
The plain solver is the backend's weighted k-means++ and Lloyd
(:meth:`edgekm.Coreset.fit_centers`); with ``trim > 0`` it is :func:`trimmed_kmeans`.
Every anomaly threshold goes through :func:`cluster_statistics`, whoever asks (publish,
``edgekm fit``, ``edgekm.dask``'s publish).  Device-safe: numpy and the standard library.
"""

from statistics import NormalDist

import numpy as np

from . import _backend

from ._defaults import (QUANTILE_DRAWS, QUANTILE_FLOOR_ABSOLUTE, QUANTILE_FLOOR_FRACTION,
                        QUANTILES)

__all__ = ["fit_centers", "trimmed_kmeans", "squared_distances", "weighted_quantiles",
           "cluster_statistics"]


def fit_centers(coreset, n_clusters, *, trim=0.0, n_init=10, random_state=0):
    """Centres for a weighted set: the plain solver, or trimmed k-means when ``trim > 0``.

    Parameters
    ----------
    coreset : edgekm.Coreset
    n_clusters : int
    trim : float in [0, 0.5), default=0.0
        The fraction of the weight that trimmed k-means may leave out, farthest from the
        centres; 0 runs the plain solver.
    n_init : int, default=10
    random_state : None, int, RandomState or Generator, default=0

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features)
    cluster_weights : ndarray of shape (n_clusters,), float64
        The coreset weight nearest to each centre.
    cost : float
        The (trimmed) weighted cost of the coreset against ``centers``.
    """
    if trim:
        centers, cost = trimmed_kmeans(coreset.points, coreset.weights, n_clusters, trim,
                                       n_init=n_init, random_state=random_state)
        labels, _ = squared_distances(coreset.points, centers)
        weights = np.bincount(labels, weights=coreset.weights, minlength=len(centers))
        return centers, weights, cost
    return coreset.fit_centers(n_clusters, n_init=n_init, random_state=random_state)


def weighted_quantiles(values, weights, qs=QUANTILES):
    """Weighted quantiles: for each q, the smallest value whose cumulative weight >= q * total.

    Parameters
    ----------
    values, weights : ndarray of shape (n_samples,)
        Weights > 0.  Empty input gives zeros.
    qs : sequence of float in [0, 1]

    Returns
    -------
    ndarray of shape (len(qs),), float64
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return np.zeros(len(qs))
    order = np.argsort(values, kind="stable")
    cum = np.cumsum(np.asarray(weights, dtype=np.float64)[order])
    idx = np.searchsorted(cum, np.asarray(qs, dtype=np.float64) * cum[-1], side="left")
    return values[order][np.minimum(idx, values.size - 1)]


def _component_values(delta2, sigma2, n_features, method, n_draws, random_state):
    """(n_components, n_draws) values of ||x - c||² for each component of the mixture."""
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


def _weighted_set(coreset):
    """``(points, weights, spread)`` as float64 of a Coreset or a tuple, checked."""
    if hasattr(coreset, "points") and hasattr(coreset, "weights"):
        X, w, s = coreset.points, coreset.weights, getattr(coreset, "spread", None)
    elif isinstance(coreset, (tuple, list)) and len(coreset) in (2, 3):
        X, w, s = (tuple(coreset) + (None,))[:3]
    else:
        raise TypeError("coreset must be an edgekm.Coreset or a tuple (points, weights) or "
                        f"(points, weights, spread); got {type(coreset).__name__}.")
    X = np.asarray(X, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"points must be 2-D; got shape {X.shape}.")
    s = np.zeros(X.shape[0]) if s is None else np.asarray(s, dtype=np.float64)
    if w.shape != (X.shape[0],) or s.shape != (X.shape[0],):
        raise ValueError("weights and spread must have shape (n_points,).")
    if not (np.isfinite(X).all() and np.isfinite(w).all() and np.isfinite(s).all()) \
            or (w <= 0).any() or (s < 0).any():
        raise ValueError("points, weights and spread must be finite, weights > 0 and "
                         "spread >= 0.")
    return X, w, s


def cluster_statistics(coreset, centers, quantiles=QUANTILES, *, method="moment",
                       n_draws=None, random_state=0):
    """Per-cluster weight and quantiles of the squared distance to the cluster's centre.

    The anomaly thresholds of a centroid version, computed from a coreset
    *with its spread*, so that no raw point is needed.  Each coreset point
    stands for a group of data points: it is their weighted mean ``mu``, its
    weight ``w`` their weight and its spread ``s`` their sum of squared
    distances to ``mu`` (:class:`edgekm.Coreset`).  Each point goes to its
    nearest centre ``c``; the distribution of ``||x - c||²`` over a cluster is
    modelled as the ``w``-weighted mixture of one component per coreset
    point: the group as an isotropic Gaussian around ``mu`` with per-feature
    variance ``sigma² = s / (w d)``, so that ``||x - c||²`` is ``sigma²`` times
    a noncentral chi-square with ``d`` degrees of freedom and noncentrality
    ``||mu - c||² / sigma²``; its mean ``s / w + ||mu - c||²`` is the group's
    exact mean squared distance to ``c``.  A point with spread 0 (a raw
    point) is a point mass at ``||mu - c||²``, so on raw points this is the
    plain :func:`weighted_quantiles` of their squared distances.

    Each component is represented by ``n_draws`` equally weighted values and
    a cluster's quantiles are the :func:`weighted_quantiles` of all its
    components' values:

    - ``"moment"`` (default, deterministic): each component is moment-matched
      by a gamma law (the noncentral chi-square's mean and variance) and its
      values are the gamma's quantiles at the levels ``(j + 0.5) / n_draws``,
      by the Wilson-Hilferty cube-root approximation;
    - ``"mc"``: seeded Monte Carlo, exact in law: ``(delta + sigma z)² +
      sigma² chi²_{d-1}``.

    **Floor.**  A cluster of few points with little or no spread (one raw
    point: every value is 0) would get quantiles of 0, and a score ``d² / q``
    would be infinite.  Every quantile is therefore at least the floor:
    ``QUANTILE_FLOOR_FRACTION`` (1e-3) times the mean squared distance of the
    whole set to its nearest centres (spread included), and at least
    ``QUANTILE_FLOOR_ABSOLUTE`` (1e-12) times ``1 +`` the largest squared norm
    of a centre, so it is positive and finite even when all the data are one
    point.  A cluster 30 times tighter than the average in every direction
    still has its median above the floor, so it does not move calibrated
    thresholds.  ``benchmarks/calibration.py`` measures the calibration.

    Parameters
    ----------
    coreset : edgekm.Coreset, or tuple (points, weights) or (points, weights, spread)
        points of shape (n_points, n_features), weights of shape (n_points,)
        (> 0), spread of shape (n_points,) (>= 0; missing means raw points).
    centers : array-like of shape (n_clusters, n_features)
    quantiles : sequence of float in (0, 1), default=(0.5, 0.95, 0.99)
        Any levels, in any order.  A centroid version carries p50/p95/p99
        (``edgekm._defaults.QUANTILES``); other levels are for thresholds set
        in the Python API.
    method : {"moment", "mc"}, default="moment"
    n_draws : int or None, default=None
        Values per component: 64 for "moment", 256 for "mc" when None.
    random_state : int, default=0
        Seed of "mc" (ignored by "moment"); the same inputs and seed give the
        same result.

    Returns
    -------
    cluster_weights : ndarray of shape (n_clusters,), float64
        Total weight of the coreset points nearest to each centre (0 for an
        empty cluster).
    quantiles : ndarray of shape (n_clusters, len(quantiles)), float64
        Finite, at least the floor, and non-decreasing in the quantile level.
        An empty cluster gets the floor.

    Examples
    --------
    >>> import numpy as np
    >>> from edgekm import Coreset
    >>> from edgekm.solve import cluster_statistics
    >>> one = Coreset(np.zeros((1, 2)), [4.0])          # one raw point, no spread
    >>> w, q = cluster_statistics(one, np.zeros((1, 2)))
    >>> w.tolist(), bool((q > 0).all() and np.isfinite(q).all())
    ([4.0], True)
    """
    X, w, s = _weighted_set(coreset)
    C = np.asarray(centers, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] < 1 or C.shape[1] != X.shape[1] or not np.isfinite(C).all():
        raise ValueError(f"centers must be finite, 2-D with {X.shape[1]} features and at "
                         f"least one row; got shape {C.shape}.")
    qs = np.asarray(quantiles, dtype=np.float64)
    if qs.ndim != 1 or qs.size == 0 or not ((qs > 0) & (qs < 1)).all():
        raise ValueError(f"quantiles must be levels in (0, 1); got {quantiles!r}.")
    if method not in QUANTILE_DRAWS:
        raise ValueError(f"method must be one of {tuple(QUANTILE_DRAWS)}; got {method!r}.")
    draws = QUANTILE_DRAWS[method] if n_draws is None else int(n_draws)
    if draws < 1:
        raise ValueError(f"n_draws must be >= 1; got {n_draws!r}.")
    k, d = C.shape
    if X.shape[0]:
        labels, delta2 = squared_distances(X, C)
    else:
        labels, delta2 = np.zeros(0, np.int64), np.zeros(0)
    cluster_weights = np.bincount(labels, weights=w, minlength=k).astype(np.float64)
    total = float(np.cumsum(w)[-1]) if w.size else 0.0
    mean_sq = float(np.cumsum(s + w * delta2)[-1]) / total if total > 0 else 0.0
    floor = max(QUANTILE_FLOOR_FRACTION * mean_sq,
                QUANTILE_FLOOR_ABSOLUTE * (1.0 + float((C * C).sum(axis=1).max())))
    values = _component_values(delta2, s / (w * d), d, method, draws, random_state)
    order = np.argsort(qs, kind="stable")
    out = np.full((k, qs.size), floor)
    for c in range(k):
        mask = labels == c
        if mask.any():
            got = weighted_quantiles(values[mask].ravel(), np.repeat(w[mask] / draws, draws),
                                     qs[order])
            out[c, order] = np.maximum.accumulate(np.maximum(got, floor))
    return cluster_weights, out


def squared_distances(X, centers):
    """Nearest centre and squared Euclidean distance of each row of X.

    The backend's nearest-centre kernel (the one the compiled assignment and the
    solver use: float64 sums in the order docs/internals.md states, ties to the
    lowest index).  Returns ``(labels int64 (n,), sqdist float64 (n,))``.
    """
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    X = np.ascontiguousarray(X)
    C = np.ascontiguousarray(centers, dtype=np.float64)
    labels, dist = _backend.ops.assign(X, C)
    return labels.astype(np.int64), dist


def _trim_mask(sqdist, weights, budget):
    """Keep-mask leaving out the farthest points whose weight sums to at most ``budget``."""
    order = np.argsort(-sqdist, kind="stable")
    dropped = np.cumsum(weights[order]) <= budget
    keep = np.ones(len(sqdist), dtype=bool)
    keep[order[dropped]] = False
    return keep


def trimmed_kmeans(X, weights, n_clusters, trim, *, n_init=10, max_iter=100,
                   random_state=0):
    """Weighted k-means that ignores up to ``trim`` of the weight, farthest from the centres.

    k-means-- style: seeding is k-means++ where each D² draw leaves out the
    farthest ``trim`` of the weight, and every Lloyd step assigns the points,
    drops the farthest points whose weight sums to at most ``trim`` of the
    total, and moves each centre to the weighted mean of its kept points.
    The best of ``n_init`` runs by trimmed cost is returned.  A cluster far
    from the data, of weight at most ``trim`` of the total, is left out
    instead of capturing a centre.

    Returns
    -------
    centers : ndarray of shape (n_clusters, n_features)
    cost : float
        The weighted cost of the kept points.
    """
    X = np.asarray(X, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    k = int(n_clusters)
    if len(X) < k:
        raise ValueError(f"n_samples={len(X)} should be >= n_clusters={k}.")
    budget = float(trim) * float(w.sum())
    rng = np.random.default_rng(random_state)
    best = (np.inf, None)
    for _ in range(max(1, int(n_init))):
        centers = X[[rng.choice(len(X), p=w / w.sum())]]
        while len(centers) < k:
            _, d2 = squared_distances(X, centers)
            p = w * d2 * _trim_mask(d2, w, budget)
            if p.sum() <= 0:
                p = w * d2 if (w * d2).sum() > 0 else w.copy()
            centers = np.vstack([centers, X[rng.choice(len(X), p=p / p.sum())]])
        for _ in range(max_iter):
            labels, d2 = squared_distances(X, centers)
            keep = _trim_mask(d2, w, budget)
            kw = np.where(keep, w, 0.0)
            mass = np.bincount(labels, weights=kw, minlength=k)
            sums = np.stack([np.bincount(labels, weights=kw * X[:, j], minlength=k)
                             for j in range(X.shape[1])], axis=1)
            moved = np.where(mass[:, None] > 0, sums / np.maximum(mass, 1e-300)[:, None],
                             centers)
            done = np.allclose(moved, centers, rtol=0, atol=1e-10 * (1 + np.abs(centers).max()))
            centers = moved
            if done:
                break
        _, d2 = squared_distances(X, centers)
        cost = float(np.sum(np.where(_trim_mask(d2, w, budget), w * d2, 0.0)))
        if cost < best[0]:
            best = (cost, centers)
    return best[1], best[0]


