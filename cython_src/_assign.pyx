# Offline assignment against a published centroid version: nearest centre,
# squared distance and anomaly score per point.  Python validates the input
# once (edgekm/assign.py); the batch kernel runs without the GIL and fills
# buffers the caller allocated.  Inputs are assumed valid.  The twin is
# edgekm/_reference/assign.py.
#
# Arithmetic: the squared distance of every (point, centre) pair is exactly
# that of _kernels.pxd sqdist_pc (feature j into partial sum j % 4, in
# increasing j, result (s0 + s1) + (s2 + s3), float64), and the argmin keeps
# the lowest label on ties.  The loop order differs: the centres are stored
# transposed, (n_features, n_clusters), and the innermost loop runs over the
# clusters, so that the compiler vectorises across clusters without changing
# any pair's sequence of operations.
#
# Anomaly score (contract of issue 4): s / q99[c] when q99[c] > 0, else 0.0
# when s == 0 and +inf otherwise.
import numpy as np
cimport numpy as cnp

from cython cimport floating
from libc.math cimport INFINITY, fabs, isfinite

from _kernels cimport sqdist

from edgekm._defaults import ASSIGN_F32_FILTER_MIN_CLUSTERS

cnp.import_array()

cdef extern from "_assign_simd.h":
    int EDGEKM_HAVE_SIMD
    Py_ssize_t edgekm_nearest_base(const double* x, const double* ct, Py_ssize_t k,
                                   Py_ssize_t kp, Py_ssize_t d, double* best_out) noexcept nogil
    Py_ssize_t edgekm_nearest_avx2(const double* x, const double* ct, Py_ssize_t k,
                                   Py_ssize_t kp, Py_ssize_t d, double* best_out) noexcept nogil
    int edgekm_cpu_has_avx2() noexcept nogil
    void edgekm_block8f_avx2(const float* xt, const float* c32, Py_ssize_t k, Py_ssize_t d,
                             Py_ssize_t* labels_out, float* best_out,
                             float* second_out) noexcept nogil
    void edgekm_block4_base(const double* xt, const double* centers, Py_ssize_t k,
                            Py_ssize_t d, Py_ssize_t* labels_out, double* best_out) noexcept nogil
    void edgekm_block4_avx2(const double* xt, const double* centers, Py_ssize_t k,
                            Py_ssize_t d, Py_ssize_t* labels_out, double* best_out) noexcept nogil

ctypedef Py_ssize_t (*nearest_fn)(const double*, const double*, Py_ssize_t, Py_ssize_t,
                                  Py_ssize_t, double*) noexcept nogil
ctypedef void (*block4_fn)(const double*, const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t*,
                           double*) noexcept nogil
ctypedef void (*block8f_fn)(const float*, const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t*,
                            float*, float*) noexcept nogil

#: 2**-24, float32's unit roundoff
cdef double U32 = 5.9604644775390625e-08

cdef bint _HAS_AVX2 = edgekm_cpu_has_avx2() != 0
#: which nearest-centre loop runs: "avx2", "simd" (baseline vectors) or "scalar"
KERNEL = "avx2" if (EDGEKM_HAVE_SIMD and _HAS_AVX2) else ("simd" if EDGEKM_HAVE_SIMD else "scalar")


cdef inline double anomaly_score(double s, double q99) noexcept nogil:
    if q99 > 0:
        return s / q99
    if s == 0:
        return 0.0
    return INFINITY


cdef inline Py_ssize_t nearest_t(const floating* x,            # IN (n_features)
                                 const double* centers_t,      # IN (n_features, n_clusters)
                                 Py_ssize_t n_clusters,
                                 Py_ssize_t n_features,
                                 double* acc,                  # work (4, n_clusters)
                                 double* best_out) noexcept nogil:  # OUT (1)
    """Nearest centre (ties to the lowest) and its squared distance."""
    cdef Py_ssize_t j = 0, c, k = n_clusters
    cdef double* a0 = acc
    cdef double* a1 = acc + k
    cdef double* a2 = acc + 2 * k
    cdef double* a3 = acc + 3 * k
    cdef const double* r0
    cdef const double* r1
    cdef const double* r2
    cdef const double* r3
    cdef double x0, x1, x2, x3, t0, t1, t2, t3, s, best
    cdef Py_ssize_t label = 0
    for c in range(k):
        a0[c] = 0.0
        a1[c] = 0.0
        a2[c] = 0.0
        a3[c] = 0.0
    while j + 4 <= n_features:
        x0 = <double>x[j]
        x1 = <double>x[j + 1]
        x2 = <double>x[j + 2]
        x3 = <double>x[j + 3]
        r0 = centers_t + j * k
        r1 = r0 + k
        r2 = r1 + k
        r3 = r2 + k
        for c in range(k):
            t0 = x0 - r0[c]
            t1 = x1 - r1[c]
            t2 = x2 - r2[c]
            t3 = x3 - r3[c]
            a0[c] = a0[c] + t0 * t0
            a1[c] = a1[c] + t1 * t1
            a2[c] = a2[c] + t2 * t2
            a3[c] = a3[c] + t3 * t3
        j += 4
    if j < n_features:
        x0 = <double>x[j]
        r0 = centers_t + j * k
        for c in range(k):
            t0 = x0 - r0[c]
            a0[c] = a0[c] + t0 * t0
    if j + 1 < n_features:
        x1 = <double>x[j + 1]
        r1 = centers_t + (j + 1) * k
        for c in range(k):
            t1 = x1 - r1[c]
            a1[c] = a1[c] + t1 * t1
    if j + 2 < n_features:
        x2 = <double>x[j + 2]
        r2 = centers_t + (j + 2) * k
        for c in range(k):
            t2 = x2 - r2[c]
            a2[c] = a2[c] + t2 * t2
    best = (a0[0] + a1[0]) + (a2[0] + a3[0])
    for c in range(1, k):
        s = (a0[c] + a1[c]) + (a2[c] + a3[c])
        if s < best:
            best = s
            label = c
    best_out[0] = best
    return label


cdef inline Py_ssize_t nearest_any(const floating* x,       # IN (n_features)
                                   const double* ct,        # IN (n_features, kp)
                                   Py_ssize_t n_clusters,
                                   Py_ssize_t kp,
                                   Py_ssize_t n_features,
                                   nearest_fn fn,           # SIMD loop or NULL (scalar)
                                   double* xbuf,            # work (n_features)
                                   double* acc,             # work (4, kp)
                                   double* best_out) noexcept nogil:  # OUT (1)
    cdef Py_ssize_t j
    if fn == NULL:
        return _nearest_padded(x, ct, n_clusters, kp, n_features, acc, best_out)
    for j in range(n_features):
        xbuf[j] = <double>x[j]
    return fn(xbuf, ct, n_clusters, kp, n_features, best_out)


cdef inline Py_ssize_t _nearest_padded(const floating* x, const double* ct, Py_ssize_t k,
                                       Py_ssize_t kp, Py_ssize_t d, double* acc,
                                       double* best_out) noexcept nogil:
    """The scalar loop over padded centres: padding lanes are never chosen."""
    # nearest_t over the kp columns, then the argmin again over the first k only
    cdef Py_ssize_t c, label = 0
    cdef double s, best
    nearest_t(x, ct, kp, d, acc, best_out)
    best = (acc[0] + acc[kp]) + (acc[2 * kp] + acc[3 * kp])
    for c in range(1, k):
        s = (acc[c] + acc[kp + c]) + (acc[2 * kp + c] + acc[3 * kp + c])
        if s < best:
            best = s
            label = c
    best_out[0] = best
    return label


cdef void assign_scores(const floating* X,            # IN (n_samples, n_features)
                        Py_ssize_t n_samples,
                        Py_ssize_t n_features,
                        const double* centers,        # IN (n_clusters, n_features)
                        const double* ct,             # IN (n_features, kp)
                        Py_ssize_t n_clusters,
                        Py_ssize_t kp,
                        const double* q99,            # IN (n_clusters)
                        block4_fn bfn,                # SIMD block kernel or NULL (scalar)
                        double* xt,                   # work (n_features, 4)
                        double* acc,                  # work (4, kp)
                        int* labels,                  # OUT (n_samples)
                        double* sqdist,               # OUT (n_samples)
                        double* scores) noexcept nogil:  # OUT (n_samples)
    cdef Py_ssize_t i, c, j, l, nb, d = n_features
    cdef Py_ssize_t lab4[4]
    cdef double best4[4]
    if bfn == NULL:
        for i in range(n_samples):
            c = _nearest_padded(X + i * d, ct, n_clusters, kp, d, acc, sqdist + i)
            labels[i] = <int>c
            scores[i] = anomaly_score(sqdist[i], q99[c])
        return
    # Four points at a time in the SIMD lanes; the last block repeats its last
    # point in the unused lanes.
    for i in range(0, n_samples, 4):
        nb = n_samples - i
        if nb > 4:
            nb = 4
        for j in range(d):
            for l in range(4):
                xt[j * 4 + l] = <double>X[(i + (l if l < nb else nb - 1)) * d + j]
        bfn(xt, centers, n_clusters, d, lab4, best4)
        for l in range(nb):
            labels[i + l] = <int>lab4[l]
            sqdist[i + l] = best4[l]
            scores[i + l] = anomaly_score(best4[l], q99[lab4[l]])


cdef void assign_scores_f32(const float* X,              # IN (n_samples, n_features)
                            Py_ssize_t n_samples,
                            Py_ssize_t n_features,
                            const double* centers,       # IN (n_clusters, n_features)
                            const float* c32,            # IN (n_clusters, n_features)
                            const double* cmax,          # IN (n_features): max_c |centers[c, j]|
                            Py_ssize_t n_clusters,
                            const double* q99,           # IN (n_clusters)
                            block8f_fn fn,               # the float32 filter
                            float* xt,                   # work (n_features, 8)
                            int* labels,                 # OUT (n_samples)
                            double* sqdist_out,          # OUT (n_samples)
                            double* scores) noexcept nogil:  # OUT (n_samples)
    """float32 points: a float32 filter, then exact float64 distances.

    The filter finds, per point, the nearest centre in float32 and the gap to
    the second nearest.  |float32 distance - float64 distance| <= B with
    B = (2 d + 16) 2**-24 sum_j (|x_j| + max_c |c_j|)**2 (rounding the centre,
    the difference, the square and the sum; about twice the first-order
    bound).  When the gap exceeds 2 B no other centre can be nearer in
    float64, so the label is the float64 argmin and only its distance is
    recomputed (sqdist: the arithmetic of every other path); otherwise the
    point is assigned exactly over all centres (ties to the lowest label).
    Labels and distances are therefore bit-identical to the float64 kernel's.
    """
    cdef Py_ssize_t i, j, l, nb, c, cc, d = n_features
    cdef Py_ssize_t lab8[8]
    cdef float best8[8]
    cdef float second8[8]
    cdef double bound, a, s, t
    cdef const float* x
    for i in range(0, n_samples, 8):
        nb = n_samples - i
        if nb > 8:
            nb = 8
        for j in range(d):
            for l in range(8):
                xt[j * 8 + l] = X[(i + (l if l < nb else nb - 1)) * d + j]
        fn(xt, c32, n_clusters, d, lab8, best8, second8)
        for l in range(nb):
            x = X + (i + l) * d
            bound = 0.0
            for j in range(d):
                a = fabs(<double>x[j]) + cmax[j]
                bound = bound + a * a
            bound = bound * <double>(2 * d + 16) * U32
            c = lab8[l]
            if <double>second8[l] > <double>best8[l] + 2.0 * bound:
                s = sqdist(x, centers + c * d, d)
            else:
                c = 0
                s = sqdist(x, centers, d)
                for cc in range(1, n_clusters):
                    t = sqdist(x, centers + cc * d, d)
                    if t < s:
                        s = t
                        c = cc
            labels[i + l] = <int>c
            sqdist_out[i + l] = s
            scores[i + l] = anomaly_score(s, q99[c])


cdef class AssignKernel:
    """Centres of one version, laid out for the kernel (allocated once).

    Parameters
    ----------
    centers : ndarray of shape (n_clusters, n_features), float64, C-contiguous
    q99 : ndarray of shape (n_clusters,), float64
    version : int
    f32 : bool
        True when the points are float32 (the version's dtype).
    kernel : {"auto", "avx2", "simd", "scalar"}, default="auto"
        The nearest-centre loop (all give bit-identical results; for tests).
    """
    cdef double[:, ::1] ct
    cdef double[:, ::1] centers
    cdef block4_fn bfn
    cdef double[::1] q99
    cdef double[::1] acc
    cdef double[::1] xbuf
    cdef nearest_fn fn
    cdef block8f_fn f8fn
    cdef float[:, ::1] c32
    cdef double[::1] cmax
    cdef readonly Py_ssize_t n_clusters, n_features, kp
    cdef readonly object version, kernel
    cdef readonly bint f32
    #: True when batches of float32 points go through the float32 filter
    cdef readonly bint f32_filter

    def __cinit__(self, const double[:, ::1] centers, const double[::1] q99, object version,
                  bint f32, str kernel="auto"):
        cdef Py_ssize_t k = centers.shape[0], d = centers.shape[1]
        if kernel == "auto":
            kernel = KERNEL
        if kernel not in ("avx2", "simd", "scalar") or (kernel != "scalar" and not EDGEKM_HAVE_SIMD) \
                or (kernel == "avx2" and not _HAS_AVX2):
            raise ValueError(f"kernel {kernel!r} is not available here (best: {KERNEL!r}).")
        self.kernel = kernel
        self.fn = NULL
        self.bfn = NULL
        if kernel == "avx2":
            self.fn = edgekm_nearest_avx2
            self.bfn = edgekm_block4_avx2
        elif kernel == "simd":
            # 4-wide vectors lowered to SSE2 pairs lose to the scalar loop on
            # batches (measured); they still help one point at a time.
            self.fn = edgekm_nearest_base
        self.centers = np.array(centers, dtype=np.float64, order="C")
        self.n_clusters = k
        self.n_features = d
        self.kp = (k + 3) // 4 * 4
        ct = np.zeros((d, self.kp), dtype=np.float64)
        ct[:, :k] = np.asarray(centers).T
        self.ct = ct
        self.q99 = np.array(q99, dtype=np.float64)
        self.acc = np.zeros(4 * self.kp, dtype=np.float64)
        self.xbuf = np.zeros(max(d, 1), dtype=np.float64)
        self.version = int(version)
        self.f32 = f32
        self.f8fn = NULL
        self.f32_filter = bool(f32 and kernel == "avx2" and d > 0
                               and k >= ASSIGN_F32_FILTER_MIN_CLUSTERS)
        if self.f32_filter:
            self.f8fn = edgekm_block8f_avx2
        with np.errstate(over="ignore"):     # a centre beyond float32: inf, the bound falls back
            self.c32 = np.ascontiguousarray(np.asarray(centers), dtype=np.float32)
        self.cmax = (np.abs(np.asarray(centers)).max(axis=0) if k and d
                     else np.zeros(max(d, 1)))

    def assign_into(self, const floating[:, ::1] X, int[::1] labels, double[::1] sqdist,
                    double[::1] scores):
        """Fill labels, sqdist and scores (each of length n_samples); GIL released.

        Inputs are assumed valid (dtype, shape, finite values).  Safe to call
        from several threads at once on disjoint outputs (each call has its
        own work buffers).
        """
        cdef Py_ssize_t n = X.shape[0]
        if n == 0:
            return
        cdef float[::1] xt8
        if floating is float:
            if self.f8fn != NULL:
                xt8 = np.empty(8 * self.n_features, dtype=np.float32)
                with nogil:
                    assign_scores_f32(&X[0, 0], n, self.n_features, &self.centers[0, 0],
                                      &self.c32[0, 0], &self.cmax[0], self.n_clusters,
                                      &self.q99[0], self.f8fn, &xt8[0], &labels[0], &sqdist[0],
                                      &scores[0])
                return
        cdef double[::1] work = np.empty(4 * self.kp + 4 * self.n_features, dtype=np.float64)
        with nogil:
            assign_scores(&X[0, 0], n, self.n_features, &self.centers[0, 0], &self.ct[0, 0],
                          self.n_clusters, self.kp, &self.q99[0], self.bfn,
                          &work[4 * self.kp], &work[0], &labels[0], &sqdist[0], &scores[0])

    def assign_one(self, object x):
        """``(label, sqdist, score, version)`` for one point, or None.

        None, without any work, when x is not a C-contiguous, native-endian
        1-D ndarray of the version's dtype and n_features (the caller then
        validates and converts it).  Raises ValueError on NaN/inf.  Keeps the
        GIL (one point is far cheaper than releasing it) and allocates only
        the returned tuple.
        """
        cdef cnp.ndarray arr
        cdef Py_ssize_t j, c, d = self.n_features
        cdef double s
        cdef const float* xf
        cdef const double* xd
        if not cnp.PyArray_Check(x):
            return None
        arr = <cnp.ndarray>x
        if (cnp.PyArray_NDIM(arr) != 1 or cnp.PyArray_DIM(arr, 0) != d
                or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISNOTSWAPPED(arr)
                or cnp.PyArray_TYPE(arr) != (cnp.NPY_FLOAT32 if self.f32 else cnp.NPY_FLOAT64)):
            return None
        if self.f32:
            xf = <const float*>cnp.PyArray_DATA(arr)
            for j in range(d):
                if not isfinite(xf[j]):
                    raise ValueError("Input x contains NaN or infinity.")
            c = nearest_any(xf, &self.ct[0, 0], self.n_clusters, self.kp, d, self.fn,
                            &self.xbuf[0], &self.acc[0], &s)
        else:
            xd = <const double*>cnp.PyArray_DATA(arr)
            for j in range(d):
                if not isfinite(xd[j]):
                    raise ValueError("Input x contains NaN or infinity.")
            c = nearest_any(xd, &self.ct[0, 0], self.n_clusters, self.kp, d, self.fn,
                            &self.xbuf[0], &self.acc[0], &s)
        return (c, s, anomaly_score(s, self.q99[c]), self.version)


def anomaly_score_wrapper(double s, double q99):
    """The score of one squared distance (exists for tests)."""
    return anomaly_score(s, q99)
