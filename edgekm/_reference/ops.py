"""Reference kernels in NumPy: the twin of ``cython_src/_ops.pyx``.

Every sum over points is sequential (``cumsum``/``bincount``) and every
squared distance accumulates features in order, in float64, so that the
results match the compiled kernels (``docs/internals.md``).  Inputs are
assumed valid.
"""

import math

import numpy as np

from ..exceptions import DataError
from .rng import Rng


def _check_n_clusters(n_samples, n_clusters):
    """The kernels' one precondition they cannot survive: 1 <= n_clusters <= n_samples."""
    if n_clusters < 1 or n_clusters > n_samples:
        raise DataError(f"n_clusters={n_clusters} needs 1 <= n_clusters <= n_samples={n_samples}")


# ---------------------------------------------------------------- distances
def sqdist_to(X, y):
    """Squared distances, float64 of shape (n,), from each row of X to y.

    Feature j accumulates into partial sum j % 4, in increasing j; the result
    is (s0 + s1) + (s2 + s3), the order of the compiled kernels.
    """
    acc = np.zeros((4, X.shape[0]), dtype=np.float64)
    for j in range(X.shape[1]):
        t = X[:, j].astype(np.float64) - np.float64(y[j])
        acc[j % 4] += t * t
    return (acc[0] + acc[1]) + (acc[2] + acc[3])


def _assign(X, C):
    n, k = X.shape[0], C.shape[0]
    best = sqdist_to(X, C[0])
    labels = np.zeros(n, dtype=np.int32)
    for c in range(1, k):
        d = sqdist_to(X, C[c])
        closer = d < best
        best = np.where(closer, d, best)
        labels[closer] = c
    return labels, best


def assign(X, centers):
    """Nearest centre and its squared distance for each row of X."""
    return _assign(X, np.asarray(centers))


def seqsum(a):
    """Sequential (left to right) float64 sum."""
    if len(a) == 0:
        return 0.0
    return float(np.cumsum(a, dtype=np.float64)[-1])


def cost(X, w, centers):
    """Weighted k-means cost of (X, w) against centers."""
    _, d = _assign(X, np.asarray(centers))
    return seqsum(w * d)


# ---------------------------------------------------------------- seeding
def n_local_trials(k):
    """Candidates per centre in greedy k-means++: 2 + floor(ln k)."""
    return 2 + int(math.log(k))


def _kmeanspp(X, w, k, rng):
    n = X.shape[0]
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.sample(w)
    D = sqdist_to(X, X[chosen[0]])
    for c in range(1, k):
        p = w * D
        if seqsum(p) > 0:
            best = None
            for _ in range(n_local_trials(k)):
                cand = rng.sample(p)
                cand_d = np.minimum(D, sqdist_to(X, X[cand]))
                pot = seqsum(w * cand_d)
                if best is None or pot < best[0]:
                    best = (pot, cand, cand_d)
            chosen[c] = best[1]
            D = best[2]
        else:
            taken = set(chosen[:c].tolist())
            chosen[c] = next(i for i in range(n) if i not in taken)
            D = np.minimum(D, sqdist_to(X, X[chosen[c]]))
    return chosen


def kmeanspp(X, w, k, seed):
    """Greedy weighted k-means++ (D² sampling, best of 2 + ln k candidates); k row indices."""
    _check_n_clusters(X.shape[0], k)
    return _kmeanspp(X, w, k, Rng(seed))


# ---------------------------------------------------------------- Lloyd
def _lloyd(X, w, C, max_iter):
    """Weighted Lloyd from float64 centres C (modified in place)."""
    n, d = X.shape
    k = C.shape[0]
    prev = None
    reseeded = False
    n_iter = max_iter
    for it in range(max_iter):
        labels, dist = _assign(X, C)
        if it > 0 and not reseeded and np.array_equal(labels, prev):
            n_iter = it
            break
        if not np.any(dist):
            n_iter = it
            break
        prev = labels
        W = np.bincount(labels, weights=w, minlength=k)
        for j in range(d):
            S = np.bincount(labels, weights=w * X[:, j].astype(np.float64), minlength=k)
            nz = W > 0
            C[nz, j] = S[nz] / W[nz]
        reseeded = False
        score = w * dist
        for c in range(k):
            if W[c] == 0:
                i = int(np.argmax(score))
                C[c] = X[i]
                score[i] = 0.0
                reseeded = True
    labels, dist = _assign(X, C)
    W = np.bincount(labels, weights=w, minlength=k)
    return W, seqsum(w * dist), n_iter


def _solve(X, w, k, n_init, max_iter, rng):
    best = None
    for _ in range(n_init):
        C = X[_kmeanspp(X, w, k, rng)].astype(np.float64)
        W, f, n_iter = _lloyd(X, w, C, max_iter)
        if best is None or f < best[2]:
            best = (C, W, f, n_iter)
    return best


def solve(X, w, k, n_init, max_iter, seed):
    """Best of n_init runs of k-means++ and Lloyd: (centers, cluster_weights, cost)."""
    _check_n_clusters(X.shape[0], k)
    C, W, f, _ = _solve(X, w, k, n_init, max_iter, Rng(seed))
    return C.astype(X.dtype), W, f


# ---------------------------------------------------------------- reduce
def _reduce_tree(X, w, m, rng):
    """The StreamKM++ coreset tree over (X, w), n > m: its m leaves.

    Returns a list of (representative, member indices in slice order, leaf
    cost), one per leaf, in the order the representatives were chosen.
    """
    n = X.shape[0]
    r0 = rng.sample(w)
    idx = np.concatenate([np.arange(r0), np.arange(r0 + 1, n)])
    cst = w[idx] * sqdist_to(X[idx], X[r0])
    # node arrays: leaves carry rep and a slice [start, end) of idx/cst
    left, right, parent = [-1], [-1], [-1]
    cost, free, start, end, rep = [seqsum(cst)], [n - 1], [0], [n - 1], [r0]
    reps = [r0]
    leaf_of = [0]  # leaf node of each representative, in choice order
    for _ in range(m - 1):
        if cost[0] <= 0:
            break  # every member sits on a representative: nothing left to split
        v = 0
        while left[v] != -1:
            a, b = left[v], right[v]
            if free[a] == 0:
                v = b
            elif free[b] == 0:
                v = a
            else:
                s = cost[a] + cost[b]
                if s > 0:
                    v = a if rng.uniform() * s < cost[a] else b
                else:
                    v = a if rng.uniform() < 0.5 else b
        s0, e0 = start[v], end[v]
        if cost[v] > 0:
            p = s0 + rng.sample(cst[s0:e0])
        else:
            p = s0 + rng.randbelow(e0 - s0)
        j = int(idx[p])
        members = np.concatenate([idx[s0:p], idx[p + 1:e0]])
        old = np.concatenate([cst[s0:p], cst[p + 1:e0]])
        new = w[members] * sqdist_to(X[members], X[j])
        to_a = old < new
        na = int(np.count_nonzero(to_a))
        idx[s0:s0 + na] = members[to_a]
        cst[s0:s0 + na] = old[to_a]
        idx[s0 + na] = j
        cst[s0 + na] = 0.0
        idx[s0 + na + 1:e0] = members[~to_a]
        cst[s0 + na + 1:e0] = new[~to_a]
        A, B = len(left), len(left) + 1
        for node_start, node_end, node_rep in ((s0, s0 + na, rep[v]), (s0 + na + 1, e0, j)):
            left.append(-1)
            right.append(-1)
            parent.append(v)
            cost.append(seqsum(cst[node_start:node_end]))
            free.append(node_end - node_start)
            start.append(node_start)
            end.append(node_end)
            rep.append(node_rep)
        left[v], right[v] = A, B
        leaf_of[reps.index(rep[v])] = A
        reps.append(j)
        leaf_of.append(B)
        u = v
        while u != -1:
            cost[u] = cost[left[u]] + cost[right[u]]
            free[u] -= 1
            u = parent[u]
    return [(reps[t], idx[start[leaf]:end[leaf]].copy(), cost[leaf])
            for t, leaf in enumerate(leaf_of)]


def _leaf_point(X, w, s, rep, members, leaf_cost, mean):
    """(point, weight, spread) of one leaf, as the compiled kernel computes them.

    weight: w_rep plus the sequential sum of the members'.  point: the leaf's
    weighted mean (sequential float64 sums over rep, then members, divided by
    the weight, cast to the dtype) or the representative.  spread: the
    sequential sum of s over rep and members, plus the leaf's sum of
    w_i ||x_i - point||², from its cost around the representative:
    ``leaf_cost - W ||mean - x_rep||² + W ||mean - point||²`` (clamped at 0),
    or ``leaf_cost`` itself for the representative.
    """
    rows = np.concatenate([[rep], members]).astype(np.int64)
    total = w[rep] + seqsum(w[members])
    acc = seqsum(s[rows])
    if not mean:
        return X[rep].copy(), total, acc + leaf_cost
    mu = np.cumsum(w[rows, None] * X[rows].astype(np.float64), axis=0)[-1] / total
    point = mu.astype(X.dtype)
    res = (leaf_cost - total * float(sqdist_to(mu[None, :], X[rep])[0])
           + total * float(sqdist_to(mu[None, :], point)[0]))
    return point, total, acc + max(res, 0.0)


def _reduce(X, w, s, m, rng, mean=True):
    """The reduce: (points, weights, spread) of at most m rows (a copy when n <= m)."""
    n = X.shape[0]
    if n <= m:
        return X.copy(), w.astype(np.float64).copy(), s.astype(np.float64).copy()
    leaves = [_leaf_point(X, w, s, rep, members, leaf_cost, mean)
              for rep, members, leaf_cost in _reduce_tree(X, w, m, rng)]
    return (np.stack([p for p, _, _ in leaves]), np.array([t for _, t, _ in leaves]),
            np.array([sp for _, _, sp in leaves]))


def reduce(X, w, m, seed, spread=None, mean=True):
    """The StreamKM++ coreset tree: (points, weights, spread) of at most m rows.

    The weights sum to sum(w); each row is its leaf's weighted mean (or, with
    ``mean=False``, the sampled representative) and carries the leaf's spread.
    """
    s = np.zeros(X.shape[0]) if spread is None else np.asarray(spread, dtype=np.float64)
    return _reduce(X, w, s, m, Rng(seed), mean)


def pairwise_sqdist(X, centers):
    """Squared distances, float64 of shape (n_samples, n_clusters)."""
    return np.stack([sqdist_to(X, c) for c in np.asarray(centers)], axis=1)
