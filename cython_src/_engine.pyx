# Fixed-memory streaming k-means structures: CT, CC, RCC, OnlineCC and
# sequential k-means.  The twin is edgekm/_reference/engine.py; read its
# docstrings and docs/algorithms.md §3-§8 and §11 for the logic.
#
# Every buffer is allocated once, at construction, from the list in
# edgekm/_defaults.buffers.  After that nothing allocates: buckets live in a
# pool of slots (reference-counted, immutable once full), and the tree, the
# cache and the nested RCC instances are integer tables over that pool.
# All work runs without the GIL; internal functions return 0, or a negative
# status that Engine._check turns into an exception.
import numpy as np

cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t, uint64_t
from libc.math cimport INFINITY, isfinite
from libc.string cimport memcpy

from _rng cimport rng_t, rng_seed
from _kernels cimport (nearest, solve, solve_work_t, reduce, reduce_work_t, N_FIELDS,
                       _seqsum)

from edgekm import _defaults

cnp.import_array()

cdef enum:
    KIND_CT = 0
    KIND_CC = 1
    KIND_RCC = 2
    KIND_ONLINECC = 3
    KIND_SEQUENTIAL = 4
    MAX_ORDERS = 16
    EMPTY = -1
    # slot_i columns
    S_N = 0
    S_LEVEL = 1
    S_LO = 2
    S_HI = 3
    S_REF = 4
    S_FIELDS = 5
    # status codes
    ERR_POOL = -2
    ERR_CACHE = -3
    ERR_NONFINITE = -4

_SCALARS = ("free_top", "n_points", "n_seen", "n_buckets", "b_slot", "b_n", "dirty",
            "inertia", "absorptions", "hits", "misses", "fallbacks", "initialised",
            "phi0", "est_cost", "n_centers", "n_iter")


cdef inline void* _ptr(object array):
    """Address of a C-contiguous NumPy buffer (kept alive by Engine.buffers)."""
    cdef Py_ssize_t address = array.ctypes.data
    return <void*>address


cdef class Engine:
    """One streaming k-means structure over a fixed pool of buckets.

    Parameters are assumed valid (``edgekm._validation``); see
    ``docs/internals.md`` for the interface shared with the reference twin.
    """
    cdef readonly str kind
    cdef readonly object dtype
    cdef readonly tuple init_args
    cdef readonly dict buffers
    cdef int code
    cdef bint f32
    cdef Py_ssize_t d, k, m, n_init, max_iter, online_init_points
    cdef double alpha
    cdef bint mean_rep
    cdef rng_t rng
    # layout
    cdef Py_ssize_t n_orders, n_slots, lm, rl
    cdef Py_ssize_t degrees[MAX_ORDERS]
    cdef Py_ssize_t levels[MAX_ORDERS]
    # buffers
    cdef void* pool_x
    cdef double* pool_w
    cdef double* pool_s
    cdef int64_t* slot_i
    cdef double* slot_weight
    cdef int64_t* free_stack
    cdef int64_t* inst_i
    cdef int64_t* list_slot
    cdef int64_t* list_span
    cdef int64_t* list_cnt
    cdef int64_t* cache_key
    cdef int64_t* cache_slot
    cdef int64_t* child
    cdef int64_t* parts
    cdef void* union_x
    cdef double* union_w
    cdef double* union_s
    cdef void* out_c
    cdef double* online_c
    cdef double* online_w
    cdef reduce_work_t rw
    cdef solve_work_t sw
    # scalar state
    cdef public int64_t free_top, n_points, n_buckets, b_slot, b_n
    cdef public int64_t absorptions, hits, misses, fallbacks, n_centers, n_iter
    cdef public double n_seen, inertia, phi0, est_cost
    cdef public bint dirty, initialised

    def __init__(self, kind, n_features, n_clusters, coreset_size, merge_degrees, max_levels,
                 n_init, max_iter, switch_threshold, dtype, seed, representative=None):
        cdef Py_ssize_t j
        if representative is None:
            representative = _defaults.REDUCE_REPRESENTATIVE
        if representative not in ("mean", "sample"):
            raise ValueError(f"representative must be 'mean' or 'sample'; got {representative!r}")
        self.mean_rep = representative == "mean"
        self.kind = str(kind)
        self.code = _defaults.KIND_CODE[self.kind]
        self.dtype = np.dtype(dtype)
        self.f32 = self.dtype == np.float32
        self.d, self.k, self.m = n_features, n_clusters, coreset_size
        self.n_init, self.max_iter = n_init, max_iter
        self.alpha = switch_threshold
        # OnlineCC initialises on the first 10 k points, which are still in the partial bucket
        self.online_init_points = min(_defaults.ONLINE_INIT_PER_CLUSTER * self.k, self.m)
        self.init_args = (kind, n_features, n_clusters, coreset_size, tuple(merge_degrees),
                          max_levels, n_init, max_iter, switch_threshold, self.dtype.str, seed,
                          representative)
        lay = _defaults.plan(self.kind, self.m, merge_degrees, max_levels)
        if lay.n_orders > MAX_ORDERS:
            raise ValueError(f"at most {MAX_ORDERS} nesting levels are supported")
        self.n_orders, self.n_slots = lay.n_orders, lay.n_slots
        self.lm, self.rl = lay.max_levels, lay.max_list
        for j in range(lay.n_orders):
            self.degrees[j] = lay.degrees[j]
            self.levels[j] = lay.levels[j]
        rng_seed(&self.rng, <uint64_t>seed)
        b = {name: np.zeros(shape, dtype=dt) for name, (shape, dt) in
             _defaults.buffers(lay, self.d, self.k, self.m, self.dtype).items()}
        self.buffers = b
        self._bind()
        self._init_state(lay)

    cdef _bind(self):
        b = self.buffers
        self.pool_x = _ptr(b["pool_x"])
        self.pool_w = <double*>_ptr(b["pool_w"])
        self.pool_s = <double*>_ptr(b["pool_s"])
        self.slot_i = <int64_t*>_ptr(b["slot_i"])
        self.slot_weight = <double*>_ptr(b["slot_weight"])
        self.free_stack = <int64_t*>_ptr(b["free"])
        self.inst_i = <int64_t*>_ptr(b["inst_i"])
        self.list_slot = <int64_t*>_ptr(b["list_slot"])
        self.list_span = <int64_t*>_ptr(b["list_span"])
        self.list_cnt = <int64_t*>_ptr(b["list_cnt"])
        self.cache_key = <int64_t*>_ptr(b["cache_key"])
        self.cache_slot = <int64_t*>_ptr(b["cache_slot"])
        self.child = <int64_t*>_ptr(b["child"])
        self.parts = <int64_t*>_ptr(b["parts"])
        self.union_x = _ptr(b["union_x"])
        self.union_w = <double*>_ptr(b["union_w"])
        self.out_c = _ptr(b["out_c"])
        wi, wf, lab = b["work_i"], b["work_f"], b["labels"]
        self.rw.idx = <Py_ssize_t*>_ptr(wi[0])
        self.rw.tmp_idx = <Py_ssize_t*>_ptr(wi[1])
        self.rw.cost = <double*>_ptr(wf[0])
        self.rw.tmp_cost = <double*>_ptr(wf[1])
        self.rw.cumsum = <double*>_ptr(wf[2])
        self.rw.node_i = <Py_ssize_t*>_ptr(b["node_i"])
        self.rw.node_cost = <double*>_ptr(b["node_cost"])
        self.rw.rep_leaf = <Py_ssize_t*>_ptr(b["rep_leaf"])
        self.rw.mean = <double*>_ptr(b["reduce_mean"])
        # the union's spread shares a row of solver scratch: a reduce does not
        # use it, and a query sums the spread before it solves
        self.union_s = <double*>_ptr(wf[3])
        sc, sw = b["solve_c"], b["solve_w"]
        self.sw.chosen = <Py_ssize_t*>_ptr(b["chosen"])
        self.sw.centers = <double*>_ptr(sc[0])
        self.sw.best_centers = <double*>_ptr(sc[1])
        self.sw.sums = <double*>_ptr(sc[2])
        self.online_c = <double*>_ptr(sc[3])
        self.sw.weights = <double*>_ptr(sw[0])
        self.sw.best_weights = <double*>_ptr(sw[1])
        self.online_w = <double*>_ptr(sw[2])
        self.sw.labels = <int*>_ptr(lab[0])
        self.sw.prev_labels = <int*>_ptr(lab[1])
        self.sw.f0 = <double*>_ptr(wf[0])
        self.sw.f1 = <double*>_ptr(wf[1])
        self.sw.f2 = <double*>_ptr(wf[2])
        self.sw.f3 = <double*>_ptr(wf[3])
        self.sw.f4 = <double*>_ptr(wf[4])

    cdef _init_state(self, lay):
        b = self.buffers
        self.free_top = self.n_slots
        self.n_points = self.n_buckets = self.b_n = 0
        self.b_slot = EMPTY
        self.n_seen = self.inertia = self.phi0 = self.est_cost = 0.0
        self.absorptions = self.hits = self.misses = self.fallbacks = self.n_centers = 0
        self.n_iter = 0
        self.dirty = True
        self.initialised = False
        _defaults.reset_buffers(lay, b)
        if lay.use_buckets:
            self.b_slot = self._alloc()

    # ------------------------------------------------------------ public
    @property
    def memory_bytes(self):
        return int(sum(v.nbytes for v in self.buffers.values()))

    cdef int _check(self, int status) except -1:
        if status == ERR_POOL:
            raise RuntimeError("edgekm engine: bucket pool exhausted (a bug; please report)")
        if status == ERR_CACHE:
            raise RuntimeError("edgekm engine: coreset cache full (a bug; please report)")
        return 0

    def partial_fit(self, const floating[:, ::1] X, const double[::1] sample_weight):
        """Feed rows of X (in the engine's dtype) with their weights."""
        cdef Py_ssize_t i, n = X.shape[0]
        cdef int status = 0
        if n == 0:
            return
        with nogil:
            for i in range(n):
                status = _learn(self, &X[i, 0], sample_weight[i])
                if status < 0:
                    break
        self._check(status)

    def learn_one(self, object x, double w=1.0):
        """Feed one point, allocating nothing.

        Returns False, without any change, when x is not a C-contiguous 1-D
        ndarray of the engine's dtype and length (the caller then converts
        it); raises ValueError on NaN/inf or a weight that is not > 0.
        """
        cdef cnp.ndarray arr
        cdef int status
        if not cnp.PyArray_Check(x):
            return False
        arr = <cnp.ndarray>x
        if (cnp.PyArray_NDIM(arr) != 1 or cnp.PyArray_DIM(arr, 0) != self.d
                or not cnp.PyArray_IS_C_CONTIGUOUS(arr) or not cnp.PyArray_ISNOTSWAPPED(arr)
                or cnp.PyArray_TYPE(arr) != (cnp.NPY_FLOAT32 if self.f32 else cnp.NPY_FLOAT64)):
            return False
        if not (w > 0 and w < INFINITY):
            raise ValueError(f"the weight must be finite and > 0; got {w!r}.")
        # One point takes well under a microsecond: keeping the GIL is cheaper
        # than releasing and re-acquiring it.
        if self.f32:
            status = _learn_checked(self, <const float*>cnp.PyArray_DATA(arr), w)
        else:
            status = _learn_checked(self, <const double*>cnp.PyArray_DATA(arr), w)
        if status == ERR_NONFINITE:
            raise ValueError("Input x contains NaN or infinity.")
        self._check(status)
        return True

    def query(self):
        """(centers (k, d) in dtype, inertia); cached until new data arrives."""
        cdef int status = 0
        if self.dirty:
            with nogil:
                status = self._query()
            self._check(status)
        return self.buffers["out_c"].copy(), self.inertia

    def coreset(self):
        """(points, weights, spread, level) of the summary the query solves on."""
        cdef Py_ssize_t n = 0, i, s, level = 0, n_parts = 0
        cdef int status = 0
        b = self.buffers
        if self.code == KIND_SEQUENTIAL:
            n = self.n_centers
            return (b["solve_c"][3, :n].astype(self.dtype), b["solve_w"][2, :n].copy(),
                    np.zeros(n), 0)
        with nogil:
            status = self._summary_parts(&n_parts)
            if status == 0:
                n = self._gather(self.parts, n_parts, True)
        self._check(status)
        for i in range(n_parts):
            s = self.parts[i]
            level = max(level, self.slot_i[s * S_FIELDS + S_LEVEL])
        return (b["union_x"][:n].copy(), b["union_w"][:n].copy(), b["work_f"][3, :n].copy(),
                level)

    def stats(self):
        b = self.buffers
        live = []
        if self.n_slots:
            used = np.ones(self.n_slots, dtype=bool)
            used[b["free"][:self.free_top]] = False
            live = np.flatnonzero(used)
        return {
            "n_points": int(self.n_points),
            "n_buckets": int(self.n_buckets),
            "live_buckets": len(live),
            "bucket_capacity": int(self.n_slots),
            "max_level": int(max([b["slot_i"][s, 1] for s in live] + [0])),
            "absorptions": int(self.absorptions),
            "cache_hits": int(self.hits),
            "cache_misses": int(self.misses),
            "fallbacks": int(self.fallbacks),
        }

    def __reduce__(self):
        state = {name: getattr(self, name) for name in _SCALARS}
        state["rng"] = (self.rng.s0, self.rng.s1, self.rng.s2, self.rng.s3)
        state["arrays"] = self.buffers
        return (Engine, self.init_args, state)

    def __setstate__(self, state):
        for name in _SCALARS:
            setattr(self, name, state[name])
        self.rng.s0, self.rng.s1, self.rng.s2, self.rng.s3 = state["rng"]
        for key, value in state["arrays"].items():
            np.copyto(self.buffers[key], value)

    # ------------------------------------------------------------ slots
    cdef inline int64_t _alloc(self) noexcept nogil:
        cdef int64_t s
        cdef int64_t* si
        if self.free_top == 0:
            return ERR_POOL
        self.free_top -= 1
        s = self.free_stack[self.free_top]
        si = self.slot_i + s * S_FIELDS
        si[S_N] = 0
        si[S_LEVEL] = 0
        si[S_LO] = 0
        si[S_HI] = 0
        si[S_REF] = 1
        self.slot_weight[s] = 0.0
        return s

    cdef inline void _ref(self, int64_t s) noexcept nogil:
        self.slot_i[s * S_FIELDS + S_REF] += 1

    cdef inline void _release(self, int64_t s) noexcept nogil:
        cdef int64_t* si = self.slot_i + s * S_FIELDS
        si[S_REF] -= 1
        if si[S_REF] == 0:
            self.free_stack[self.free_top] = s
            self.free_top += 1

    # ------------------------------------------------------------ unions
    cdef Py_ssize_t _gather(self, const int64_t* parts, Py_ssize_t n_parts,
                            bint with_partial) noexcept nogil:
        if self.f32:
            return _gather_t(self, <float*>self.pool_x, <float*>self.union_x, parts, n_parts,
                             with_partial)
        return _gather_t(self, <double*>self.pool_x, <double*>self.union_x, parts, n_parts,
                         with_partial)

    cdef int64_t _reduce_parts(self, const int64_t* parts, Py_ssize_t n_parts) noexcept nogil:
        """REDUCE the union of ``parts`` into a new slot (refcount 1)."""
        cdef Py_ssize_t n = self._gather(parts, n_parts, False), cnt, i
        cdef int64_t s = self._alloc(), level = 0
        cdef int64_t* si
        if s < 0:
            return s
        if self.f32:
            cnt = reduce(<float*>self.union_x, n, self.d, self.union_w, self.union_s, self.m,
                         self.mean_rep, &self.rng, &self.rw,
                         <float*>self.pool_x + s * self.m * self.d, self.pool_w + s * self.m,
                         self.pool_s + s * self.m)
        else:
            cnt = reduce(<double*>self.union_x, n, self.d, self.union_w, self.union_s, self.m,
                         self.mean_rep, &self.rng, &self.rw,
                         <double*>self.pool_x + s * self.m * self.d, self.pool_w + s * self.m,
                         self.pool_s + s * self.m)
        for i in range(n_parts):
            level = max(level, self.slot_i[parts[i] * S_FIELDS + S_LEVEL])
        si = self.slot_i + s * S_FIELDS
        si[S_N] = cnt
        si[S_LEVEL] = level + (1 if n > self.m else 0)
        si[S_LO] = self.slot_i[parts[0] * S_FIELDS + S_LO]
        si[S_HI] = self.slot_i[parts[n_parts - 1] * S_FIELDS + S_HI]
        self.slot_weight[s] = _seqsum(self.pool_w + s * self.m, cnt)
        return s

    # ------------------------------------------------------------ structure
    cdef inline int64_t* _lslot(self, Py_ssize_t g, Py_ssize_t lvl) noexcept nogil:
        return self.list_slot + (g * self.lm + lvl) * self.rl

    cdef inline int64_t* _lspan(self, Py_ssize_t g, Py_ssize_t lvl) noexcept nogil:
        return self.list_span + ((g * self.lm + lvl) * self.rl) * 2

    cdef int _insert(self, Py_ssize_t g, int64_t slot) noexcept nogil:
        cdef Py_ssize_t order = self.inst_i[g * 2], lvl, i
        cdef Py_ssize_t r = self.degrees[order], nlev = self.levels[order]
        cdef Py_ssize_t cnt
        cdef int64_t n, carry, lo, hi, merged
        cdef int64_t* parts = self.parts + order * self.n_slots
        cdef int status = 0
        self.inst_i[g * 2 + 1] += 1
        n = self.inst_i[g * 2 + 1]
        carry = slot
        lo = n
        hi = n
        self._ref(carry)
        for lvl in range(nlev):
            cnt = self.list_cnt[g * self.lm + lvl]
            if cnt < r - 1:
                status = self._append(g, lvl, carry, lo, hi)
                break
            for i in range(cnt):
                parts[i] = self._lslot(g, lvl)[i]
            parts[cnt] = carry
            merged = self._reduce_parts(parts, cnt + 1)
            if merged < 0:
                return <int>merged
            lo = self._lspan(g, lvl)[0]
            self._clear_level(g, lvl)
            self._release(carry)
            carry = merged
            if lvl == nlev - 1:
                if g == 0:
                    self.absorptions += 1
                status = self._append(g, lvl, carry, lo, hi)
        self._release(carry)
        if status < 0:
            return status
        if self.code != KIND_CT:
            self._evict(g)
        return 0

    cdef int _append(self, Py_ssize_t g, Py_ssize_t lvl, int64_t s, int64_t lo,
                     int64_t hi) noexcept nogil:
        cdef Py_ssize_t cnt = self.list_cnt[g * self.lm + lvl]
        cdef int64_t c = self.child[g * self.lm + lvl]
        self._lslot(g, lvl)[cnt] = s
        self._lspan(g, lvl)[cnt * 2] = lo
        self._lspan(g, lvl)[cnt * 2 + 1] = hi
        self.list_cnt[g * self.lm + lvl] = cnt + 1
        self._ref(s)
        if c != EMPTY:
            return self._insert(c, s)
        return 0

    cdef void _clear_level(self, Py_ssize_t g, Py_ssize_t lvl) noexcept nogil:
        cdef Py_ssize_t i
        cdef int64_t* ls = self._lslot(g, lvl)
        cdef int64_t c = self.child[g * self.lm + lvl]
        for i in range(self.list_cnt[g * self.lm + lvl]):
            self._release(ls[i])
            ls[i] = EMPTY
        self.list_cnt[g * self.lm + lvl] = 0
        if c != EMPTY:
            self._reset(c)

    cdef void _reset(self, Py_ssize_t g) noexcept nogil:
        cdef Py_ssize_t lvl, nlev = self.levels[self.inst_i[g * 2]]
        for lvl in range(nlev):
            self._clear_level(g, lvl)
            if self.cache_key[g * self.lm + lvl] != EMPTY:
                self._release(self.cache_slot[g * self.lm + lvl])
                self.cache_key[g * self.lm + lvl] = EMPTY
                self.cache_slot[g * self.lm + lvl] = EMPTY
        self.inst_i[g * 2 + 1] = 0

    cdef bint _is_prefix_key(self, Py_ssize_t g, int64_t key) noexcept nogil:
        """Is key in PREFIX_KEYS(g) = {n} ∪ {lo - 1 of every non-empty level but the highest}?"""
        cdef Py_ssize_t lvl, nlev = self.levels[self.inst_i[g * 2]]
        cdef bint seen_highest = False
        if key == self.inst_i[g * 2 + 1]:
            return True
        for lvl in range(nlev - 1, -1, -1):
            if self.list_cnt[g * self.lm + lvl] > 0:
                if seen_highest and self._lspan(g, lvl)[0] - 1 == key:
                    return True
                seen_highest = True
        return False

    cdef void _evict(self, Py_ssize_t g) noexcept nogil:
        cdef Py_ssize_t e, nlev = self.levels[self.inst_i[g * 2]]
        cdef int64_t key
        for e in range(nlev):
            key = self.cache_key[g * self.lm + e]
            if key != EMPTY and not self._is_prefix_key(g, key):
                self._release(self.cache_slot[g * self.lm + e])
                self.cache_key[g * self.lm + e] = EMPTY
                self.cache_slot[g * self.lm + e] = EMPTY

    cdef Py_ssize_t _cache_find(self, Py_ssize_t g, int64_t key) noexcept nogil:
        cdef Py_ssize_t e, nlev = self.levels[self.inst_i[g * 2]]
        for e in range(nlev):
            if self.cache_key[g * self.lm + e] == key:
                return e
        return EMPTY

    cdef int _minor_part(self, Py_ssize_t g, Py_ssize_t lvl, int64_t* out,
                         Py_ssize_t* n_out) noexcept nogil:
        """Append the minor part of level lvl (inner coreset, or the list) to out."""
        cdef int64_t c = self.child[g * self.lm + lvl], s
        cdef Py_ssize_t i
        if c != EMPTY:
            s = self._coreset(c)
            if s < 0:
                return <int>s
            out[n_out[0]] = s
            n_out[0] += 1
            return 0
        for i in range(self.list_cnt[g * self.lm + lvl]):
            out[n_out[0]] = self._lslot(g, lvl)[i]
            n_out[0] += 1
        return 0

    cdef int64_t _coreset(self, Py_ssize_t g) noexcept nogil:
        """CORESET() of instance g: a slot held by g's cache (or a negative status)."""
        cdef Py_ssize_t order = self.inst_i[g * 2], nlev = self.levels[order]
        cdef int64_t n = self.inst_i[g * 2 + 1], key, s
        cdef int64_t* parts = self.parts + order * self.n_slots
        cdef Py_ssize_t e, lvl, low = 0, n_parts = 0
        cdef int status
        e = self._cache_find(g, n)
        if e != EMPTY:
            return self.cache_slot[g * self.lm + e]
        for lvl in range(nlev):
            if self.list_cnt[g * self.lm + lvl] > 0:
                low = lvl
                break
        key = self._lspan(g, low)[0] - 1
        e = self._cache_find(g, key) if key > 0 else EMPTY
        if e != EMPTY:
            self.hits += 1
            parts[0] = self.cache_slot[g * self.lm + e]
            n_parts = 1
            status = self._minor_part(g, low, parts, &n_parts)
            if status < 0:
                return status
        else:
            # a miss only when a cached prefix could have served: with key <= 0
            # every bucket starts at the first one, and there is no prefix to look up
            if key > 0:
                self.misses += 1
            for lvl in range(nlev - 1, -1, -1):
                if self.list_cnt[g * self.lm + lvl] > 0:
                    status = self._minor_part(g, lvl, parts, &n_parts)
                    if status < 0:
                        return status
        if n_parts == 1 and self.slot_i[parts[0] * S_FIELDS + S_N] <= self.m:
            s = parts[0]
            self._ref(s)
        else:
            s = self._reduce_parts(parts, n_parts)
            if s < 0:
                return s
        e = self._cache_find(g, EMPTY)
        if e == EMPTY:
            return ERR_CACHE
        self.cache_key[g * self.lm + e] = n
        self.cache_slot[g * self.lm + e] = s
        self._evict(g)
        return s

    cdef int _summary_parts(self, Py_ssize_t* n_parts) noexcept nogil:
        """Fill self.parts (order 0 row... top order row) with the summary's slots."""
        cdef Py_ssize_t lvl, i, top = self.n_orders - 1
        cdef int64_t s
        n_parts[0] = 0
        if self.code == KIND_CT:
            for lvl in range(self.levels[top] - 1, -1, -1):
                for i in range(self.list_cnt[lvl]):
                    self.parts[n_parts[0]] = self._lslot(0, lvl)[i]
                    n_parts[0] += 1
            return 0
        if self.n_buckets == 0:
            return 0
        s = self._coreset(0)
        if s < 0:
            return <int>s
        self.parts[0] = s
        n_parts[0] = 1
        return 0

    # ------------------------------------------------------------ driver
    cdef int _solve_union(self, Py_ssize_t n, double* cost) noexcept nogil:
        """SOLVE on the first n rows of the union; the result is in sw.best_*.

        cost is the solver's cost on the union plus the union's carried spread
        (summed first: the solver reuses that scratch row)."""
        cdef double spread = _seqsum(self.union_s, n)
        if self.f32:
            cost[0] = solve(<float*>self.union_x, n, self.d, self.union_w, self.k,
                            self.n_init, self.max_iter, &self.rng, &self.sw)
        else:
            cost[0] = solve(<double*>self.union_x, n, self.d, self.union_w, self.k,
                            self.n_init, self.max_iter, &self.rng, &self.sw)
        cost[0] = cost[0] + spread
        self.n_iter = self.sw.n_iter
        return 0

    cdef void _keep_online(self) noexcept nogil:
        memcpy(self.online_c, self.sw.best_centers, self.k * self.d * sizeof(double))
        memcpy(self.online_w, self.sw.best_weights, self.k * sizeof(double))

    cdef void _emit(self, const double* centers) noexcept nogil:
        cdef Py_ssize_t i
        if self.f32:
            for i in range(self.k * self.d):
                (<float*>self.out_c)[i] = <float>centers[i]
        else:
            memcpy(self.out_c, centers, self.k * self.d * sizeof(double))

    cdef int _query(self) noexcept nogil:
        cdef Py_ssize_t n_parts = 0, n
        cdef double f = 0.0
        cdef int status
        if self.code == KIND_SEQUENTIAL or (self.code == KIND_ONLINECC and self.initialised):
            if self.code == KIND_ONLINECC and self.est_cost > self.alpha * self.phi0:
                self.fallbacks += 1
                status = self._summary_parts(&n_parts)
                if status < 0:
                    return status
                n = self._gather(self.parts, n_parts, True)
                self._solve_union(n, &f)
                self._keep_online()
                self.phi0 = f
                self.est_cost = f
            self._emit(self.online_c)
            self.inertia = self.est_cost
        else:
            status = self._summary_parts(&n_parts)
            if status < 0:
                return status
            n = self._gather(self.parts, n_parts, True)
            self._solve_union(n, &f)
            self._emit(self.sw.best_centers)
            self.inertia = f
        self.dirty = False
        return 0

    cdef int _close_bucket(self) noexcept nogil:
        """The partial bucket is full: insert it as base bucket N and start a new one."""
        cdef int64_t b = self.b_slot
        cdef int64_t* si = self.slot_i + b * S_FIELDS
        cdef int status
        self.n_buckets += 1
        si[S_N] = self.m
        si[S_LEVEL] = 0
        si[S_LO] = self.n_buckets
        si[S_HI] = self.n_buckets
        self.slot_weight[b] = _seqsum(self.pool_w + b * self.m, self.m)
        status = self._insert(0, b)
        if status < 0:
            return status
        self._release(b)
        self.b_slot = self._alloc()
        if self.b_slot < 0:
            return <int>self.b_slot
        self.b_n = 0
        return 0

    cdef int _online_init(self) noexcept nogil:
        cdef Py_ssize_t n = self._gather(NULL, 0, True)
        cdef double f = 0.0
        self._solve_union(n, &f)
        self._keep_online()
        self.phi0 = f
        self.est_cost = f
        self.initialised = True
        return 0


cdef Py_ssize_t _gather_t(Engine e, floating* pool_x, floating* union_x, const int64_t* parts,
                          Py_ssize_t n_parts, bint with_partial) noexcept nogil:
    """Copy the points, weights and spread of ``parts`` (and the partial bucket)
    into the union buffers."""
    cdef Py_ssize_t i, cnt, n = 0, md = e.m * e.d
    cdef int64_t s
    for i in range(n_parts):
        s = parts[i]
        cnt = e.slot_i[s * S_FIELDS + S_N]
        memcpy(union_x + n * e.d, pool_x + s * md, cnt * e.d * sizeof(floating))
        memcpy(e.union_w + n, e.pool_w + s * e.m, cnt * sizeof(double))
        memcpy(e.union_s + n, e.pool_s + s * e.m, cnt * sizeof(double))
        n += cnt
    if with_partial and e.b_n > 0:
        s = e.b_slot
        memcpy(union_x + n * e.d, pool_x + s * md, e.b_n * e.d * sizeof(floating))
        memcpy(e.union_w + n, e.pool_w + s * e.m, e.b_n * sizeof(double))
        memcpy(e.union_s + n, e.pool_s + s * e.m, e.b_n * sizeof(double))
        n += e.b_n
    return n


cdef inline void _macqueen(Engine e, const floating* x, double w) noexcept nogil:
    """Move the nearest online centre towards x; EstCost grows by w * d² (Lemma 10)."""
    cdef double d2, tot
    cdef Py_ssize_t j, q
    cdef double* c
    j = nearest(x, e.online_c, e.k, e.d, &d2)
    e.est_cost = e.est_cost + w * d2
    c = e.online_c + j * e.d
    tot = e.online_w[j] + w
    for q in range(e.d):
        c[q] = (e.online_w[j] * c[q] + w * <double>x[q]) / tot
    e.online_w[j] = tot


cdef int _learn(Engine e, const floating* x, double w) noexcept nogil:
    """UPDATE(x, w) of the driver (docs/algorithms.md §3, §7, §8)."""
    cdef Py_ssize_t q
    cdef floating* row
    e.n_points += 1
    e.n_seen = e.n_seen + w
    e.dirty = True
    if e.code == KIND_SEQUENTIAL:
        if e.n_centers < e.k:
            for q in range(e.d):
                e.online_c[e.n_centers * e.d + q] = <double>x[q]
            e.online_w[e.n_centers] = w
            e.n_centers += 1
        else:
            _macqueen(e, x, w)
        return 0
    row = <floating*>e.pool_x + (e.b_slot * e.m + e.b_n) * e.d
    for q in range(e.d):
        row[q] = x[q]
    e.pool_w[e.b_slot * e.m + e.b_n] = w
    e.pool_s[e.b_slot * e.m + e.b_n] = 0.0          # a raw point has no spread
    e.b_n += 1
    if e.code == KIND_ONLINECC:
        if e.initialised:
            _macqueen(e, x, w)
        elif e.n_points == e.online_init_points:
            e._online_init()
    if e.b_n == e.m:
        return e._close_bucket()
    return 0



cdef int _learn_checked(Engine e, const floating* x, double w) noexcept nogil:
    """_learn after checking that every coordinate is finite."""
    cdef Py_ssize_t q
    for q in range(e.d):
        if not isfinite(x[q]):
            return ERR_NONFINITE
    return _learn(e, x, w)
