# Batch operations over the kernels, for the Python layer and for tests.
# Each function allocates its buffers once in Python, then runs its kernel
# with the GIL released.  Inputs are assumed valid (edgekm/_validation.py).
# The twin is edgekm/_reference/ops.py.
import numpy as np

from cython cimport floating
from libc.stdint cimport uint64_t

from _rng cimport rng_t, rng_seed, rng_next, rng_uniform
from edgekm.exceptions import DataError

from _kernels cimport (assign_rows, kmeanspp as _kmeanspp, solve as _solve,
                       solve_work_t, reduce as _reduce, reduce_work_t, N_FIELDS,
                       sqdist, weighted_sum)


def rng_stream(uint64_t seed, Py_ssize_t n):
    """First n uniform draws of the generator seeded with ``seed`` (for tests)."""
    cdef rng_t r
    cdef double[::1] out = np.empty(n, dtype=np.float64)
    cdef Py_ssize_t i
    rng_seed(&r, seed)
    with nogil:
        for i in range(n):
            out[i] = rng_uniform(&r)
    return np.asarray(out)


def assign(const floating[:, ::1] X, const double[:, ::1] centers):
    """Nearest centre (int32) and squared distance (float64) for each row of X."""
    cdef Py_ssize_t n = X.shape[0]
    cdef int[::1] labels = np.empty(n, dtype=np.int32)
    cdef double[::1] dist = np.empty(n, dtype=np.float64)
    if n:
        with nogil:
            assign_rows(&X[0, 0], n, X.shape[1], &centers[0, 0], centers.shape[0],
                        &labels[0], &dist[0])
    return np.asarray(labels), np.asarray(dist)


def _check_n_clusters(Py_ssize_t n_samples, Py_ssize_t n_clusters):
    """The kernels' one precondition they cannot survive: 1 <= n_clusters <= n_samples."""
    if n_clusters < 1 or n_clusters > n_samples:
        raise DataError(f"n_clusters={n_clusters} needs 1 <= n_clusters <= n_samples={n_samples}")


def cost(const floating[:, ::1] X, const double[::1] sample_weight,
         const double[:, ::1] centers):
    """Weighted k-means cost of (X, sample_weight) against centers."""
    labels, dist = assign(X, centers)
    cdef double[::1] dv = dist
    if X.shape[0] == 0:
        return 0.0
    return weighted_sum(&sample_weight[0], &dv[0], X.shape[0])


def kmeanspp(const floating[:, ::1] X, const double[::1] sample_weight,
             Py_ssize_t n_clusters, uint64_t seed):
    """Greedy weighted k-means++ seeding; returns n_clusters row indices."""
    cdef Py_ssize_t n = X.shape[0]
    cdef rng_t r
    cdef Py_ssize_t[::1] chosen = np.empty(n_clusters, dtype=np.intp)
    _check_n_clusters(n, n_clusters)
    cdef double[:, ::1] work = np.empty((5, n), dtype=np.float64)
    rng_seed(&r, seed)
    with nogil:
        _kmeanspp(&X[0, 0], n, X.shape[1], &sample_weight[0], n_clusters, &r,
                  &chosen[0], &work[0, 0], &work[1, 0], &work[2, 0], &work[3, 0], &work[4, 0])
    return np.asarray(chosen).astype(np.int64)


cdef class SolveBuffers:
    """Workspace of the solver for up to ``n_rows`` points (allocated once)."""
    cdef public object arrays
    cdef solve_work_t work
    cdef readonly Py_ssize_t n_rows, n_clusters, n_features

    def __cinit__(self, Py_ssize_t n_rows, Py_ssize_t n_clusters, Py_ssize_t n_features):
        self.n_rows, self.n_clusters, self.n_features = n_rows, n_clusters, n_features
        chosen = np.zeros(max(n_clusters, 1), dtype=np.intp)
        cf = np.zeros((4, max(n_clusters, 1), max(n_features, 1)), dtype=np.float64)
        cw = np.zeros((2, max(n_clusters, 1)), dtype=np.float64)
        lab = np.zeros((2, max(n_rows, 1)), dtype=np.int32)
        ff = np.zeros((5, max(n_rows, 1)), dtype=np.float64)
        self.arrays = (chosen, cf, cw, lab, ff)
        cdef Py_ssize_t[::1] chosen_v = chosen
        cdef double[:, :, ::1] cf_v = cf
        cdef double[:, ::1] cw_v = cw
        cdef int[:, ::1] lab_v = lab
        cdef double[:, ::1] ff_v = ff
        self.work.chosen = &chosen_v[0]
        self.work.centers = &cf_v[0, 0, 0]
        self.work.best_centers = &cf_v[1, 0, 0]
        self.work.sums = &cf_v[2, 0, 0]
        self.work.weights = &cw_v[0, 0]
        self.work.best_weights = &cw_v[1, 0]
        self.work.labels = &lab_v[0, 0]
        self.work.prev_labels = &lab_v[1, 0]
        self.work.f0 = &ff_v[0, 0]
        self.work.f1 = &ff_v[1, 0]
        self.work.f2 = &ff_v[2, 0]
        self.work.f3 = &ff_v[3, 0]
        self.work.f4 = &ff_v[4, 0]


def solve(const floating[:, ::1] X, const double[::1] sample_weight, Py_ssize_t n_clusters,
          Py_ssize_t n_init, Py_ssize_t max_iter, uint64_t seed):
    """Best of n_init runs of greedy k-means++ and Lloyd: (centers, cluster_weights, cost).

    Requires at least n_clusters rows.
    """
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1]
    cdef rng_t r
    _check_n_clusters(n, n_clusters)
    cdef SolveBuffers buf = SolveBuffers(n, n_clusters, d)
    cdef double f
    rng_seed(&r, seed)
    with nogil:
        f = _solve(&X[0, 0], n, d, &sample_weight[0], n_clusters, n_init, max_iter, &r,
                   &buf.work)
    centers = buf.arrays[1][1].copy()
    weights = buf.arrays[2][1].copy()
    return centers.astype(np.asarray(X).dtype), weights, f


cdef class ReduceBuffers:
    """Workspace of the coreset-tree reduce for up to ``n_rows`` points into m."""
    cdef public object arrays
    cdef reduce_work_t work
    cdef readonly Py_ssize_t n_rows, m

    def __cinit__(self, Py_ssize_t n_rows, Py_ssize_t m, Py_ssize_t n_features):
        self.n_rows, self.m = n_rows, m
        wi = np.zeros((2, max(n_rows, 1)), dtype=np.intp)
        wf = np.zeros((3, max(n_rows, 1)), dtype=np.float64)
        ni = np.zeros((max(2 * m - 1, 1), N_FIELDS), dtype=np.intp)
        nc = np.zeros(max(2 * m - 1, 1), dtype=np.float64)
        rl = np.zeros((max(m, 1), 2), dtype=np.intp)
        self.arrays = (wi, wf, ni, nc, rl, np.zeros(max(n_features, 1), dtype=np.float64))
        cdef Py_ssize_t[:, ::1] wi_v = wi
        cdef double[:, ::1] wf_v = wf
        cdef Py_ssize_t[:, ::1] ni_v = ni
        cdef double[::1] nc_v = nc
        cdef Py_ssize_t[:, ::1] rl_v = rl
        self.work.idx = &wi_v[0, 0]
        self.work.tmp_idx = &wi_v[1, 0]
        self.work.cost = &wf_v[0, 0]
        self.work.tmp_cost = &wf_v[1, 0]
        self.work.cumsum = &wf_v[2, 0]
        self.work.node_i = &ni_v[0, 0]
        self.work.node_cost = &nc_v[0]
        self.work.rep_leaf = &rl_v[0, 0]
        cdef double[::1] mean_v = self.arrays[5]
        self.work.mean = &mean_v[0]


def reduce(const floating[:, ::1] X, const double[::1] sample_weight, Py_ssize_t m,
           uint64_t seed, spread=None, bint mean=True):
    """The StreamKM++ coreset tree: (points, weights, spread) of at most m rows.

    The weights sum to the input's; each output row is its leaf's weighted mean
    (or, with ``mean=False``, the sampled representative) and carries the leaf's
    spread, ``sum(spread_i + w_i * ||x_i - row||²)``.  ``spread`` (float64,
    shape (n_samples,)) is zero when None.
    """
    cdef Py_ssize_t n = X.shape[0], d = X.shape[1], out_n
    cdef rng_t r
    cdef ReduceBuffers buf = ReduceBuffers(n, m, d)
    cdef Py_ssize_t cap = min(n, m)
    in_s = np.zeros(n, dtype=np.float64) if spread is None else spread
    cdef const double[::1] sv = in_s
    out_x = np.empty((cap, d), dtype=np.asarray(X).dtype)
    out_w = np.empty(cap, dtype=np.float64)
    out_s = np.empty(cap, dtype=np.float64)
    cdef floating[:, ::1] ox = out_x
    cdef double[::1] ow = out_w
    cdef double[::1] os = out_s
    rng_seed(&r, seed)
    if n == 0:
        return out_x, out_w, out_s
    with nogil:
        out_n = _reduce(&X[0, 0], n, d, &sample_weight[0], &sv[0], m, mean, &r, &buf.work,
                        &ox[0, 0], &ow[0], &os[0])
    return out_x[:out_n], out_w[:out_n], out_s[:out_n]


def pairwise_sqdist(const floating[:, ::1] X, const double[:, ::1] centers):
    """Squared distances, float64 of shape (n_samples, n_clusters)."""
    cdef Py_ssize_t n = X.shape[0], k = centers.shape[0], d = X.shape[1], i, c
    cdef double[:, ::1] out = np.empty((n, k), dtype=np.float64)
    with nogil:
        for i in range(n):
            for c in range(k):
                out[i, c] = sqdist(&X[i, 0], &centers[c, 0], d)
    return np.asarray(out)
