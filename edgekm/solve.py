"""The k-means solve, in one place: nearest centres, (trimmed) k-means on a weighted set,
and the per-cluster statistics a centroid version carries.

Every fit of centres on a coreset goes through :func:`fit_centers`, whoever asks: the
aggregator's ``publish`` and its ``/fit`` endpoint, ``edgekm fit`` and ``edgekm.dask``.
The plain solver is the backend's weighted k-means++ and Lloyd
(:meth:`edgekm.Coreset.fit_centers`); with ``trim > 0`` it is :func:`trimmed_kmeans`.
Device-safe: numpy only.
"""

import numpy as np

from ._defaults import QUANTILES

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


def cluster_statistics(points, weights, centers):
    """The weight and the p50/p95/p99 of the squared distance of each cluster of a weighted set.

    Each point goes to its nearest centre.  Returns ``(cluster_weights (k,),
    quantiles (k, 3))``, both float64; the quantiles are made non-decreasing
    along each row, and a cluster with no weight has weight 0 and quantiles 0.
    """
    k = centers.shape[0]
    labels, sqdist = squared_distances(points, centers)
    cluster_weights = np.bincount(labels, weights=weights, minlength=k).astype(np.float64)
    quantiles = np.zeros((k, len(QUANTILES)))
    for c in range(k):
        mask = labels == c
        if mask.any():
            quantiles[c] = weighted_quantiles(sqdist[mask], weights[mask])
    return cluster_weights, np.maximum.accumulate(quantiles, axis=1)


def squared_distances(X, centers, *, chunk_elements=1 << 22):
    """Nearest centre and squared Euclidean distance of each row of X (float64, exact sums).

    Returns ``(labels int64 (n,), sqdist float64 (n,))``; memory is bounded
    by ``chunk_elements`` doubles whatever n is.
    """
    X = np.asarray(X, dtype=np.float64)
    C = np.asarray(centers, dtype=np.float64)
    n, (k, d) = X.shape[0], C.shape
    labels = np.empty(n, dtype=np.int64)
    dist = np.empty(n, dtype=np.float64)
    step = max(1, chunk_elements // max(1, k * d))
    for start in range(0, n, step):
        diff = X[start:start + step, None, :] - C[None, :, :]
        d2 = np.einsum("nkd,nkd->nk", diff, diff)
        labels[start:start + step] = np.argmin(d2, axis=1)
        dist[start:start + step] = d2[np.arange(d2.shape[0]), labels[start:start + step]]
    return labels, dist


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


