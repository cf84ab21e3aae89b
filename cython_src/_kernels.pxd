# Hot kernels of edgekm, fused over float32/float64.  Header-only (every
# function is inline), so both _ops.pyx and _engine.pyx compile them in
# without a runtime import.  They run without the GIL, take raw C-contiguous
# buffers that the caller allocated once, and allocate nothing.  Inputs are
# assumed valid.  Arithmetic and draw order follow docs/internals.md; the
# twin is edgekm/_reference/ops.py.
#
# Shapes: X (n_samples, n_features) in floating; sample_weight (n_samples)
# float64; centers (n_clusters, n_features) float64.
from cython cimport floating
from libc.math cimport log

from _rng cimport rng_t, rng_uniform, rng_randbelow, rng_sample


# Squared distances accumulate in float64 in four partial sums: feature j goes
# to sum j % 4, in increasing j, and the result is (s0 + s1) + (s2 + s3).  The
# order is fixed (so results are reproducible and match the NumPy twin), and
# four independent chains run about twice as fast as one.
ctypedef fused floating_b:
    float
    double


cdef inline double sqdist(const floating* a,               # IN (n_features)
                          const floating_b* b,             # IN (n_features)
                          Py_ssize_t n_features) noexcept nogil:
    """Squared distance between two points or a point and a centre, in float64."""
    cdef Py_ssize_t j = 0
    cdef double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, t0, t1, t2, t3
    while j + 4 <= n_features:
        t0 = <double>a[j] - <double>b[j]
        t1 = <double>a[j + 1] - <double>b[j + 1]
        t2 = <double>a[j + 2] - <double>b[j + 2]
        t3 = <double>a[j + 3] - <double>b[j + 3]
        s0 = s0 + t0 * t0
        s1 = s1 + t1 * t1
        s2 = s2 + t2 * t2
        s3 = s3 + t3 * t3
        j += 4
    if j < n_features:
        t0 = <double>a[j] - <double>b[j]
        s0 = s0 + t0 * t0
    if j + 1 < n_features:
        t1 = <double>a[j + 1] - <double>b[j + 1]
        s1 = s1 + t1 * t1
    if j + 2 < n_features:
        t2 = <double>a[j + 2] - <double>b[j + 2]
        s2 = s2 + t2 * t2
    return (s0 + s1) + (s2 + s3)


cdef inline int nearest(const floating* x,                 # IN (n_features)
                        const double* centers,             # IN (n_clusters, n_features)
                        Py_ssize_t n_clusters,
                        Py_ssize_t n_features,
                        double* best_out) noexcept nogil:  # OUT (1)
    """Index of the nearest centre (ties to the lowest) and its squared distance."""
    cdef Py_ssize_t c
    cdef int label = 0
    cdef double best = sqdist(x, centers, n_features), t
    for c in range(1, n_clusters):
        t = sqdist(x, centers + c * n_features, n_features)
        if t < best:
            best = t
            label = <int>c
    best_out[0] = best
    return label


cdef inline void assign_rows(const floating* X,            # IN (n_samples, n_features)
                             Py_ssize_t n_samples,
                             Py_ssize_t n_features,
                             const double* centers,        # IN (n_clusters, n_features)
                             Py_ssize_t n_clusters,
                             int* labels,                  # OUT (n_samples)
                             double* sqdist) noexcept nogil:  # OUT (n_samples)
    cdef Py_ssize_t i
    for i in range(n_samples):
        labels[i] = nearest(X + i * n_features, centers, n_clusters, n_features, sqdist + i)


cdef inline double weighted_sum(const double* a, const double* b,
                                Py_ssize_t n) noexcept nogil:
    """Sequential sum of a[i] * b[i]."""
    cdef Py_ssize_t i
    cdef double s = 0.0
    for i in range(n):
        s = s + a[i] * b[i]
    return s


# ------------------------------------------------------------------ seeding
cdef inline Py_ssize_t n_local_trials(Py_ssize_t n_clusters) noexcept nogil:
    """Candidates per centre in greedy k-means++: 2 + floor(ln k)."""
    return 2 + <Py_ssize_t>log(<double>n_clusters)


cdef inline void kmeanspp(const floating* X,               # IN (n_samples, n_features)
                          Py_ssize_t n_samples,
                          Py_ssize_t n_features,
                          const double* sample_weight,     # IN (n_samples)
                          Py_ssize_t n_clusters,
                          rng_t* rng,                      # INOUT
                          Py_ssize_t* chosen,              # OUT (n_clusters)
                          double* dist,                    # work (n_samples)
                          double* prob,                    # work (n_samples)
                          double* cumsum,                  # work (n_samples)
                          double* cand_dist,               # work (n_samples)
                          double* best_dist) noexcept nogil:  # work (n_samples)
    """Greedy weighted k-means++: each centre is the best (lowest potential) of
    2 + ln k candidates drawn by weighted D² sampling.  Requires
    n_samples >= n_clusters."""
    cdef Py_ssize_t i, c, q, trial, cand, n_trials = n_local_trials(n_clusters)
    cdef double acc, t, pot, best_pot
    cdef bint taken
    chosen[0] = rng_sample(rng, sample_weight, n_samples, cumsum)
    for i in range(n_samples):
        dist[i] = sqdist(X + i * n_features, X + chosen[0] * n_features, n_features)
    for c in range(1, n_clusters):
        acc = 0.0
        for i in range(n_samples):
            prob[i] = sample_weight[i] * dist[i]
            acc = acc + prob[i]
        if acc > 0:
            best_pot = 0.0
            for trial in range(n_trials):
                cand = rng_sample(rng, prob, n_samples, cumsum)
                pot = 0.0
                for i in range(n_samples):
                    t = sqdist(X + i * n_features, X + cand * n_features, n_features)
                    cand_dist[i] = t if t < dist[i] else dist[i]
                    pot = pot + sample_weight[i] * cand_dist[i]
                if trial == 0 or pot < best_pot:
                    best_pot = pot
                    chosen[c] = cand
                    for i in range(n_samples):
                        best_dist[i] = cand_dist[i]
            for i in range(n_samples):
                dist[i] = best_dist[i]
        else:
            for i in range(n_samples):          # the lowest index not yet chosen
                taken = False
                for q in range(c):
                    if chosen[q] == i:
                        taken = True
                        break
                if not taken:
                    chosen[c] = i
                    break
            for i in range(n_samples):
                t = sqdist(X + i * n_features, X + chosen[c] * n_features, n_features)
                if t < dist[i]:
                    dist[i] = t


# ------------------------------------------------------------------ Lloyd
cdef inline double lloyd(const floating* X,                # IN (n_samples, n_features)
                         Py_ssize_t n_samples,
                         Py_ssize_t n_features,
                         const double* sample_weight,      # IN (n_samples)
                         double* centers,                  # INOUT (n_clusters, n_features)
                         Py_ssize_t n_clusters,
                         Py_ssize_t max_iter,
                         double* weight_in_clusters,       # OUT (n_clusters)
                         double* sums,                     # work (n_clusters, n_features)
                         int* labels,                      # work (n_samples)
                         int* prev_labels,                 # work (n_samples)
                         double* dist,                     # work (n_samples)
                         double* score,                    # work (n_samples)
                         Py_ssize_t* n_iter) noexcept nogil:  # OUT (1)
    """Weighted Lloyd; an empty cluster is reseeded at the point with the largest
    w * d² (ties to the lowest index).  Returns the cost against the result and
    sets n_iter to the number of centre updates."""
    cdef Py_ssize_t it, i, j, c, best_i
    cdef Py_ssize_t d = n_features, k = n_clusters
    cdef bint reseeded = False, same
    cdef int lab
    cdef double best
    n_iter[0] = max_iter
    for it in range(max_iter):
        assign_rows(X, n_samples, d, centers, k, labels, dist)
        if it > 0 and not reseeded:
            same = True
            for i in range(n_samples):
                if labels[i] != prev_labels[i]:
                    same = False
                    break
            if same:
                n_iter[0] = it
                break
        # every score zero: the centres already cost nothing (and an update
        # could only round them off the points)
        same = True
        for i in range(n_samples):
            if dist[i] != 0:
                same = False
                break
        if same:
            n_iter[0] = it
            break
        for i in range(n_samples):
            prev_labels[i] = labels[i]
        for c in range(k):
            weight_in_clusters[c] = 0.0
            for j in range(d):
                sums[c * d + j] = 0.0
        for i in range(n_samples):
            lab = labels[i]
            weight_in_clusters[lab] = weight_in_clusters[lab] + sample_weight[i]
            for j in range(d):
                sums[lab * d + j] = sums[lab * d + j] + sample_weight[i] * <double>X[i * d + j]
        for c in range(k):
            if weight_in_clusters[c] > 0:
                for j in range(d):
                    centers[c * d + j] = sums[c * d + j] / weight_in_clusters[c]
        reseeded = False
        for i in range(n_samples):
            score[i] = sample_weight[i] * dist[i]
        for c in range(k):
            if weight_in_clusters[c] == 0:
                best_i = 0
                best = score[0]
                for i in range(1, n_samples):
                    if score[i] > best:
                        best = score[i]
                        best_i = i
                for j in range(d):
                    centers[c * d + j] = <double>X[best_i * d + j]
                score[best_i] = 0.0
                reseeded = True
    assign_rows(X, n_samples, d, centers, k, labels, dist)
    for c in range(k):
        weight_in_clusters[c] = 0.0
    for i in range(n_samples):
        weight_in_clusters[labels[i]] = weight_in_clusters[labels[i]] + sample_weight[i]
    return weighted_sum(sample_weight, dist, n_samples)


ctypedef struct solve_work_t:
    # buffers the solver needs, allocated once by the caller
    Py_ssize_t* chosen       # (n_clusters)
    double* centers          # (n_clusters, n_features)
    double* best_centers     # (n_clusters, n_features)
    double* sums             # (n_clusters, n_features)
    double* weights          # (n_clusters)
    double* best_weights     # (n_clusters)
    int* labels              # (n_samples)
    int* prev_labels         # (n_samples)
    double* f0               # (n_samples)
    double* f1               # (n_samples)
    double* f2               # (n_samples)
    double* f3               # (n_samples)
    double* f4               # (n_samples)
    Py_ssize_t n_iter        # OUT: Lloyd iterations of the best run


cdef inline double solve(const floating* X,                # IN (n_samples, n_features)
                         Py_ssize_t n_samples,
                         Py_ssize_t n_features,
                         const double* sample_weight,      # IN (n_samples)
                         Py_ssize_t n_clusters,
                         Py_ssize_t n_init,
                         Py_ssize_t max_iter,
                         rng_t* rng,                       # INOUT
                         solve_work_t* w) noexcept nogil:  # OUT best_centers, best_weights
    """Best of n_init runs of greedy k-means++ seeding and Lloyd; returns its cost."""
    cdef Py_ssize_t r, c, j
    cdef Py_ssize_t d = n_features, k = n_clusters
    cdef double f, best_f = 0.0
    cdef Py_ssize_t it
    for r in range(n_init):
        kmeanspp(X, n_samples, d, sample_weight, k, rng, w.chosen, w.f0, w.f1, w.f2,
                 w.f3, w.f4)
        for c in range(k):
            for j in range(d):
                w.centers[c * d + j] = <double>X[w.chosen[c] * d + j]
        f = lloyd(X, n_samples, d, sample_weight, w.centers, k, max_iter, w.weights,
                  w.sums, w.labels, w.prev_labels, w.f0, w.f1, &it)
        if r == 0 or f < best_f:
            best_f = f
            w.n_iter = it
            for c in range(k):
                w.best_weights[c] = w.weights[c]
                for j in range(d):
                    w.best_centers[c * d + j] = w.centers[c * d + j]
    return best_f


# ------------------------------------------------------------------ reduce
# Tree node fields (node_i[v * N_FIELDS + field]).
cdef enum:
    N_LEFT = 0
    N_RIGHT = 1
    N_PARENT = 2
    N_FREE = 3
    N_START = 4
    N_END = 5
    N_REP = 6          # the representative's number (its position in the output)
    N_FIELDS = 7


ctypedef struct reduce_work_t:
    Py_ssize_t* idx          # (n_samples) member indices, leaf slices
    Py_ssize_t* tmp_idx      # (n_samples)
    double* cost             # (n_samples) member costs, aligned with idx
    double* tmp_cost         # (n_samples)
    double* cumsum           # (n_samples)
    Py_ssize_t* node_i       # (2 m - 1, N_FIELDS)
    double* node_cost        # (2 m - 1)
    Py_ssize_t* rep_leaf     # (m, 2): the point index and the leaf of each representative
    double* mean             # (n_features) a leaf's weighted sum of points


cdef inline double _seqsum(const double* a, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    cdef double s = 0.0
    for i in range(n):
        s = s + a[i]
    return s


cdef inline void _make_leaf(reduce_work_t* t, Py_ssize_t v, Py_ssize_t parent,
                            Py_ssize_t start, Py_ssize_t end, Py_ssize_t rep,
                            double leaf_cost) noexcept nogil:
    """A leaf over idx[start:end]; leaf_cost is the sequential sum of its member costs."""
    cdef Py_ssize_t* node = t.node_i + v * N_FIELDS
    node[N_LEFT] = -1
    node[N_RIGHT] = -1
    node[N_PARENT] = parent
    node[N_FREE] = end - start
    node[N_START] = start
    node[N_END] = end
    node[N_REP] = rep
    t.node_cost[v] = leaf_cost
    t.rep_leaf[rep * 2 + 1] = v


cdef inline void _emit_leaf(const floating* X,            # IN (n_samples, n_features)
                            Py_ssize_t n_features,
                            const double* sample_weight,   # IN (n_samples)
                            const double* spread,          # IN (n_samples)
                            Py_ssize_t rep,
                            const Py_ssize_t* members,     # IN (n_members)
                            Py_ssize_t n_members,
                            double leaf_cost,
                            bint mean_rep,
                            double* mean,                  # work (n_features)
                            floating* out_point,           # OUT (n_features)
                            double* out_weight,            # OUT (1)
                            double* out_spread) noexcept nogil:  # OUT (1)
    """One coreset point for a leaf: its weight, its representative (the leaf's
    weighted mean, or the sampled point) and its spread, the leaf's sum of
    s_i + w_i * ||x_i - out_point||².  leaf_cost is the sum of the members'
    w_i * ||x_i - x_rep||²; the spread around the mean follows from it in O(d)
    (docs/internals.md)."""
    cdef Py_ssize_t d = n_features, p, q, i
    cdef double acc = 0.0, wi, total, res
    for p in range(n_members):
        acc = acc + sample_weight[members[p]]
    total = sample_weight[rep] + acc
    out_weight[0] = total
    acc = spread[rep]
    for p in range(n_members):
        acc = acc + spread[members[p]]
    if mean_rep:
        for q in range(d):
            mean[q] = sample_weight[rep] * <double>X[rep * d + q]
        for p in range(n_members):
            i = members[p]
            wi = sample_weight[i]
            for q in range(d):
                mean[q] = mean[q] + wi * <double>X[i * d + q]
        for q in range(d):
            mean[q] = mean[q] / total
            out_point[q] = <floating>mean[q]
        res = (leaf_cost - total * sqdist(mean, X + rep * d, d)
               + total * sqdist(mean, out_point, d))
        if res < 0:
            res = 0.0
        out_spread[0] = acc + res
    else:
        for q in range(d):
            out_point[q] = X[rep * d + q]
        out_spread[0] = acc + leaf_cost


cdef inline Py_ssize_t reduce(const floating* X,           # IN (n_samples, n_features)
                              Py_ssize_t n_samples,
                              Py_ssize_t n_features,
                              const double* sample_weight, # IN (n_samples)
                              const double* spread,        # IN (n_samples)
                              Py_ssize_t m,
                              bint mean_rep,
                              rng_t* rng,                  # INOUT
                              reduce_work_t* t,            # work
                              floating* out_points,        # OUT (m, n_features)
                              double* out_weights,         # OUT (m)
                              double* out_spread) noexcept nogil:  # OUT (m)
    """StreamKM++ coreset tree: m weighted points of the input whose weights
    sum to the input weight, each carrying the spread of its leaf.  The tree
    (draws, splits) ignores the input spread; it only enters the output.
    Returns the number of output points: m, or fewer once every member sits on
    a representative (a constant or few-distinct input: nothing left to split)."""
    cdef Py_ssize_t d = n_features, n = n_samples
    cdef Py_ssize_t i, j, p, q, v, a, b, s0, e0, na, nb, r0, n_nodes, rep_no, u, n_out
    cdef double s, c_new, acc, cost_a, cost_b, target, c_old
    cdef Py_ssize_t to_a
    cdef Py_ssize_t* node
    cdef Py_ssize_t* idx = t.idx
    cdef Py_ssize_t* tmp_idx = t.tmp_idx
    cdef double* cost = t.cost
    cdef double* tmp_cost = t.tmp_cost
    cdef const floating* xj
    if n <= m:
        for i in range(n * d):
            out_points[i] = X[i]
        for i in range(n):
            out_weights[i] = sample_weight[i]
            out_spread[i] = spread[i]
        return n
    r0 = rng_sample(rng, sample_weight, n, t.cumsum)
    q = 0
    for i in range(n):
        if i != r0:
            t.idx[q] = i
            t.cost[q] = sample_weight[i] * sqdist(X + i * d, X + r0 * d, d)
            q += 1
    t.rep_leaf[0] = r0
    _make_leaf(t, 0, -1, 0, n - 1, 0, _seqsum(cost, n - 1))
    n_nodes = 1
    n_out = 1
    for rep_no in range(1, m):
        if t.node_cost[0] <= 0:
            break  # every member sits on a representative: nothing left to split
        n_out += 1
        # (a) descend by cost
        v = 0
        while t.node_i[v * N_FIELDS + N_LEFT] != -1:
            a = t.node_i[v * N_FIELDS + N_LEFT]
            b = t.node_i[v * N_FIELDS + N_RIGHT]
            if t.node_i[a * N_FIELDS + N_FREE] == 0:
                v = b
            elif t.node_i[b * N_FIELDS + N_FREE] == 0:
                v = a
            else:
                s = t.node_cost[a] + t.node_cost[b]
                if s > 0:
                    v = a if rng_uniform(rng) * s < t.node_cost[a] else b
                else:
                    v = a if rng_uniform(rng) < 0.5 else b
        node = t.node_i + v * N_FIELDS
        s0 = node[N_START]
        e0 = node[N_END]
        # (b) the new representative, by weighted D² to the leaf's representative
        if t.node_cost[v] > 0:
            # one pass: the leaf's cost is the sequential sum of its members' costs,
            # so this is rng_sample without recomputing the cumulative sums
            target = rng_uniform(rng) * t.node_cost[v]
            acc = 0.0
            p = e0 - 1
            for q in range(s0, e0):
                acc = acc + cost[q]
                if acc > target:
                    p = q
                    break
        else:
            p = s0 + rng_randbelow(rng, e0 - s0)
        j = idx[p]
        xj = X + j * d
        # (c) stable split: A (closer to the old rep) | j | B (ties go to B)
        na = 0
        nb = 0
        cost_a = 0.0
        cost_b = 0.0
        # Branch-free: the comparison is a coin flip, so a branch mispredicts
        # half the time.  Each member is written to both candidate places and
        # one counter advances; positions below q were already read, so the
        # in-place write is safe.  Adding c * 0.0 leaves a sum unchanged.
        for q in range(s0, e0):
            if q == p:
                continue
            i = idx[q]
            c_old = cost[q]
            c_new = sample_weight[i] * sqdist(X + i * d, xj, d)
            to_a = c_old < c_new
            idx[s0 + na] = i
            cost[s0 + na] = c_old
            tmp_idx[nb] = i
            tmp_cost[nb] = c_new
            cost_a = cost_a + c_old * <double>to_a
            cost_b = cost_b + c_new * <double>(1 - to_a)
            na += to_a
            nb += 1 - to_a
        idx[s0 + na] = j
        cost[s0 + na] = 0.0
        for q in range(nb):
            idx[s0 + na + 1 + q] = tmp_idx[q]
            cost[s0 + na + 1 + q] = tmp_cost[q]
        a = n_nodes
        b = n_nodes + 1
        n_nodes += 2
        t.rep_leaf[rep_no * 2] = j
        _make_leaf(t, a, v, s0, s0 + na, node[N_REP], cost_a)
        _make_leaf(t, b, v, s0 + na + 1, e0, rep_no, cost_b)
        node[N_LEFT] = a
        node[N_RIGHT] = b
        # (d) fix the path to the root
        u = v
        while u != -1:
            node = t.node_i + u * N_FIELDS
            t.node_cost[u] = t.node_cost[node[N_LEFT]] + t.node_cost[node[N_RIGHT]]
            node[N_FREE] -= 1
            u = node[N_PARENT]
    for rep_no in range(n_out):
        i = t.rep_leaf[rep_no * 2]
        v = t.rep_leaf[rep_no * 2 + 1]
        node = t.node_i + v * N_FIELDS
        _emit_leaf(X, d, sample_weight, spread, i, t.idx + node[N_START],
                   node[N_END] - node[N_START], t.node_cost[v], mean_rep, t.mean,
                   out_points + rep_no * d,
                   out_weights + rep_no, out_spread + rep_no)
    return n_out
