"""Reference fixed-memory engine: the twin of ``cython_src/_engine.pyx``.

One engine runs one algorithm (CT, CC, RCC, OnlineCC or sequential k-means)
over a pool of bucket slots (see ``edgekm._defaults.plan``).  CT and CC are
RCC of one order, with and without the cache.  Buckets are immutable and
reference-counted, so an inner structure shares the buckets of its owner's
list.  Inputs are assumed valid.

The twin mirrors the compiled engine's behaviour, not its memory layout: it
keeps the state buffers (the pool, the slot table, the lists, the cache,
``edgekm._defaults.STATE_BUFFERS``) under the same names so that tests can
compare states, computes everything else with NumPy temporaries, and reports
the compiled engine's ``memory_bytes`` from the plan.
"""

import numpy as np

from .. import _defaults
from . import ops
from .rng import Rng

_EMPTY = _defaults.EMPTY
_N, _LEVEL, _LO, _HI, _REF = (_defaults.SLOT_FIELDS.index(f)
                              for f in ("n", "level", "lo", "hi", "ref"))


class Engine:
    def __init__(self, kind, n_features, n_clusters, coreset_size, merge_degrees,
                 max_levels, n_init, max_iter, switch_threshold, dtype, seed,
                 representative=None):
        if representative is None:
            representative = _defaults.REDUCE_REPRESENTATIVE
        if representative not in ("mean", "sample"):
            raise ValueError(f"representative must be 'mean' or 'sample'; got {representative!r}")
        self.mean_rep = representative == "mean"
        self.kind = kind
        self.d = int(n_features)
        self.k = int(n_clusters)
        self.m = int(coreset_size)
        self.n_init = int(n_init)
        self.max_iter = int(max_iter)
        self.alpha = float(switch_threshold)
        self.dtype = np.dtype(dtype)
        self.init_args = (kind, n_features, n_clusters, coreset_size, tuple(merge_degrees),
                          max_levels, n_init, max_iter, switch_threshold, self.dtype.str, seed,
                          representative)
        lay = _defaults.plan(kind, self.m, merge_degrees, max_levels)
        self.lay = lay
        self.rng = Rng(seed)
        d, k, m = self.d, self.k, self.m
        planned = _defaults.buffers(lay, d, k, m, self.dtype)
        self.a = {name: np.zeros(*planned[name]) for name in _defaults.STATE_BUFFERS}
        self.online_c = np.zeros((k, d))     # OnlineCC / sequential centres and weights
        self.online_w = np.zeros(k)
        self._memory_bytes = _defaults.memory_bytes(lay, d, k, m, self.dtype)
        self._init_state()

    # ------------------------------------------------------------ layout
    def _init_state(self):
        a, lay = self.a, self.lay
        self.free_top = lay.n_slots
        self.n_points = 0
        self.n_seen = 0.0
        self.n_buckets = 0
        self.b_slot = _EMPTY
        self.b_n = 0
        self.dirty = True
        self.inertia = 0.0
        self.absorptions = 0
        self.hits = 0
        self.misses = 0
        self.fallbacks = 0
        self.initialised = False
        self.phi0 = 0.0
        self.est_cost = 0.0
        self.n_centers = 0
        self.n_iter = 0
        _defaults.reset_buffers(lay, a)
        self.online_c[...] = 0.0
        self.online_w[...] = 0.0
        if lay.use_buckets:
            self.b_slot = self._alloc()

    @property
    def memory_bytes(self):
        """What the compiled engine allocates for this plan."""
        return self._memory_bytes

    # ------------------------------------------------------------ slots
    def _alloc(self):
        if self.free_top == 0:
            raise RuntimeError("edgekm engine: bucket pool exhausted (a bug)")
        self.free_top -= 1
        s = int(self.a["free"][self.free_top])
        si = self.a["slot_i"][s]
        si[:] = 0
        si[_REF] = 1
        self.a["slot_weight"][s] = 0.0
        return s

    def _ref(self, s):
        self.a["slot_i"][s, _REF] += 1

    def _release(self, s):
        si = self.a["slot_i"][s]
        si[_REF] -= 1
        if si[_REF] == 0:
            self.a["free"][self.free_top] = s
            self.free_top += 1

    def _slot_points(self, s):
        n = int(self.a["slot_i"][s, _N])
        return self.a["pool_x"][s, :n], self.a["pool_w"][s, :n], self.a["pool_s"][s, :n]

    # ------------------------------------------------------------ reduce
    def _union(self, parts, with_partial=False):
        """(points, weights, spread) of the slots in ``parts``, then the partial bucket."""
        pieces = [self._slot_points(s) for s in parts]
        if with_partial and self.b_n:
            b = self.b_slot
            pieces.append((self.a["pool_x"][b, :self.b_n], self.a["pool_w"][b, :self.b_n],
                           self.a["pool_s"][b, :self.b_n]))
        if not pieces:
            return np.zeros((0, self.d), self.dtype), np.zeros(0), np.zeros(0)
        return tuple(np.concatenate(col) for col in zip(*pieces))

    def _reduce_parts(self, parts):
        """REDUCE the union of ``parts`` into a new slot (refcount 1)."""
        X, w, sp = self._union(parts)
        P, W, S = ops._reduce(X, w, sp, self.m, self.rng, self.mean_rep)
        s = self._alloc()
        cnt = len(W)
        self.a["pool_x"][s, :cnt] = P
        self.a["pool_w"][s, :cnt] = W
        self.a["pool_s"][s, :cnt] = S
        si = self.a["slot_i"]
        si[s, _N] = cnt
        si[s, _LEVEL] = max(int(si[p, _LEVEL]) for p in parts) + (1 if len(w) > self.m else 0)
        si[s, _LO] = si[parts[0], _LO]
        si[s, _HI] = si[parts[-1], _HI]
        self.a["slot_weight"][s] = ops.seqsum(W)
        return s

    # ------------------------------------------------------------ structure
    def _levels(self, g):
        return self.lay.levels[int(self.a["inst_i"][g, 0])]

    def _insert(self, g, slot):
        a = self.a
        order = int(a["inst_i"][g, 0])
        r = self.lay.degrees[order]
        nlev = self.lay.levels[order]
        a["inst_i"][g, 1] += 1
        n = int(a["inst_i"][g, 1])
        carry, lo, hi = slot, n, n
        self._ref(carry)
        for lvl in range(nlev):
            cnt = int(a["list_cnt"][g, lvl])
            if cnt < r - 1:
                self._append(g, lvl, carry, lo, hi)
                break
            parts = [int(s) for s in a["list_slot"][g, lvl, :cnt]] + [carry]
            merged = self._reduce_parts(parts)
            lo = int(a["list_span"][g, lvl, 0, 0])
            self._clear_level(g, lvl)
            self._release(carry)
            carry = merged
            if lvl == nlev - 1:
                if g == 0:
                    self.absorptions += 1
                self._append(g, lvl, carry, lo, hi)
        self._release(carry)
        if self.kind != "ct":
            self._evict(g)

    def _append(self, g, lvl, s, lo, hi):
        a = self.a
        cnt = int(a["list_cnt"][g, lvl])
        a["list_slot"][g, lvl, cnt] = s
        a["list_span"][g, lvl, cnt] = (lo, hi)
        a["list_cnt"][g, lvl] = cnt + 1
        self._ref(s)
        child = int(a["child"][g, lvl])
        if child != _EMPTY:
            self._insert(child, s)

    def _clear_level(self, g, lvl):
        a = self.a
        for i in range(int(a["list_cnt"][g, lvl])):
            self._release(int(a["list_slot"][g, lvl, i]))
            a["list_slot"][g, lvl, i] = _EMPTY
        a["list_cnt"][g, lvl] = 0
        child = int(a["child"][g, lvl])
        if child != _EMPTY:
            self._reset(child)

    def _reset(self, g):
        a = self.a
        for lvl in range(self._levels(g)):
            self._clear_level(g, lvl)
            if a["cache_key"][g, lvl] != _EMPTY:
                self._release(int(a["cache_slot"][g, lvl]))
                a["cache_key"][g, lvl] = _EMPTY
                a["cache_slot"][g, lvl] = _EMPTY
        a["inst_i"][g, 1] = 0

    def _nonempty_levels(self, g):
        """Non-empty levels of instance g, highest (oldest) first."""
        cnt = self.a["list_cnt"][g]
        return [lvl for lvl in range(self._levels(g) - 1, -1, -1) if cnt[lvl] > 0]

    def _prefix_keys(self, g):
        a = self.a
        levels = self._nonempty_levels(g)
        keys = {int(a["inst_i"][g, 1])}
        for lvl in levels[1:]:           # all but the highest non-empty level
            keys.add(int(a["list_span"][g, lvl, 0, 0]) - 1)
        return keys

    def _evict(self, g):
        a = self.a
        keys = self._prefix_keys(g)
        for e in range(self._levels(g)):
            key = int(a["cache_key"][g, e])
            if key != _EMPTY and key not in keys:
                self._release(int(a["cache_slot"][g, e]))
                a["cache_key"][g, e] = _EMPTY
                a["cache_slot"][g, e] = _EMPTY

    def _cache_find(self, g, key):
        hits = np.flatnonzero(self.a["cache_key"][g] == key)
        return int(hits[0]) if len(hits) else _EMPTY

    def _minor_part(self, g, lvl):
        a = self.a
        child = int(a["child"][g, lvl])
        if child != _EMPTY:
            return [self._coreset(child)]
        return [int(s) for s in a["list_slot"][g, lvl, :int(a["list_cnt"][g, lvl])]]

    def _coreset(self, g):
        """CORESET() of instance g: a slot held by g's cache."""
        a = self.a
        n = int(a["inst_i"][g, 1])
        e = self._cache_find(g, n)
        if e != _EMPTY:
            return int(a["cache_slot"][g, e])
        levels = self._nonempty_levels(g)
        low = levels[-1]
        key = int(a["list_span"][g, low, 0, 0]) - 1
        e = self._cache_find(g, key) if key > 0 else _EMPTY
        if e != _EMPTY:
            self.hits += 1
            parts = [int(a["cache_slot"][g, e])] + self._minor_part(g, low)
        else:
            if key > 0:  # a miss only when a cached prefix could have served
                self.misses += 1
            parts = []
            for lvl in levels:
                parts.extend(self._minor_part(g, lvl))
        if len(parts) == 1 and a["slot_i"][parts[0], _N] <= self.m:
            s = parts[0]
            self._ref(s)
        else:
            s = self._reduce_parts(parts)
        e = self._cache_find(g, _EMPTY)
        a["cache_key"][g, e] = n
        a["cache_slot"][g, e] = s
        self._evict(g)
        return s

    def _tree_union(self):
        """CT: every bucket of the tree, oldest first."""
        a = self.a
        parts = []
        for lvl in self._nonempty_levels(0):
            parts.extend(int(s) for s in a["list_slot"][0, lvl, :int(a["list_cnt"][0, lvl])])
        return parts

    # ------------------------------------------------------------ driver
    def partial_fit(self, X, w):
        for i in range(X.shape[0]):
            self._learn(X[i], float(w[i]))

    def learn_one(self, x, w=1.0):
        """Feed one point; False (no change) unless x is a contiguous 1-D array of
        the engine's dtype and length."""
        if (type(x) is not np.ndarray or x.ndim != 1 or x.shape[0] != self.d
                or x.dtype != self.dtype or not x.dtype.isnative or not x.flags.c_contiguous):
            return False
        if not (w > 0 and w < np.inf):
            raise ValueError(f"the weight must be finite and > 0; got {w!r}.")
        if not np.isfinite(x).all():
            raise ValueError("Input x contains NaN or infinity.")
        self._learn(x, w)
        return True

    def _learn(self, x, w):
        a = self.a
        self.n_points += 1
        self.n_seen += w
        self.dirty = True
        if self.kind == "sequential":
            self._sequential_step(x, w)
            return
        b = self.b_slot
        a["pool_x"][b, self.b_n] = x
        a["pool_w"][b, self.b_n] = w
        a["pool_s"][b, self.b_n] = 0.0          # a raw point has no spread
        self.b_n += 1
        if self.kind == "onlinecc":
            if self.initialised:
                self._macqueen(x, w)
            elif self.n_points == self._n_online_init():
                self._online_init()
        if self.b_n == self.m:
            self.n_buckets += 1
            si = a["slot_i"][b]
            si[_N] = self.m
            si[_LEVEL] = 0
            si[_LO] = si[_HI] = self.n_buckets
            a["slot_weight"][b] = ops.seqsum(a["pool_w"][b])
            self._insert(0, b)
            self._release(b)
            self.b_slot = self._alloc()
            self.b_n = 0

    def _n_online_init(self):
        return min(_defaults.ONLINE_INIT_PER_CLUSTER * self.k, self.m)

    def _macqueen(self, x, w):
        C, W = self.online_c, self.online_w
        d2 = ops.sqdist_to(C, x)
        j = int(np.argmin(d2))
        self.est_cost += w * float(d2[j])
        tot = W[j] + w
        C[j] = (W[j] * C[j] + w * x.astype(np.float64)) / tot
        W[j] = tot

    def _sequential_step(self, x, w):
        a = self.a
        if self.n_centers < self.k:
            self.online_c[self.n_centers] = x
            self.online_w[self.n_centers] = w
            self.n_centers += 1
            return
        self._macqueen(x, w)

    def _solve_union(self, parts):
        """SOLVE on the union of ``parts`` and the partial bucket; the cost is the
        solver's plus the union's carried spread (summed first, as the engine does)."""
        X, w, sp = self._union(parts, with_partial=True)
        spread = ops.seqsum(sp)
        C, W, f, self.n_iter = ops._solve(X, w, self.k, self.n_init, self.max_iter, self.rng)
        return C, W, f + spread

    def _online_init(self):
        C, W, f = self._solve_union([])
        self.online_c[...] = C
        self.online_w[...] = W
        self.phi0 = self.est_cost = f
        self.initialised = True

    def _summary_parts(self):
        if self.kind == "ct":
            return self._tree_union()
        if self.n_buckets == 0:
            return []
        return [self._coreset(0)]

    def query(self):
        if not self.dirty:
            return self.a["out_c"].copy(), self.inertia
        if self.kind in ("sequential", "onlinecc") and (self.kind == "sequential" or self.initialised):
            if self.kind == "onlinecc" and self.est_cost > self.alpha * self.phi0:
                self.fallbacks += 1
                C, W, f = self._solve_union(self._summary_parts())
                self.online_c[...] = C
                self.online_w[...] = W
                self.phi0 = self.est_cost = f
            self.a["out_c"][:] = self.online_c
            self.inertia = self.est_cost
        else:
            C, W, f = self._solve_union(self._summary_parts())
            self.a["out_c"][:] = C
            self.inertia = f
        self.dirty = False
        return self.a["out_c"].copy(), self.inertia

    def coreset(self):
        """(points, weights, spread, level) of the summary a query solves on."""
        if self.kind == "sequential":
            n = self.n_centers
            return (self.online_c[:n].astype(self.dtype), self.online_w[:n].copy(),
                    np.zeros(n), 0)
        parts = self._summary_parts()
        X, w, sp = self._union(parts, with_partial=True)
        level = max([int(self.a["slot_i"][s, _LEVEL]) for s in parts] + [0])
        return X.copy(), w.copy(), sp.copy(), level

    # ------------------------------------------------------------ diagnostics
    def stats(self):
        a = self.a
        live = []
        if self.lay.use_buckets:
            used = np.ones(self.lay.n_slots, dtype=bool)
            used[a["free"][:self.free_top]] = False
            live = np.flatnonzero(used)
        return {
            "n_points": self.n_points,
            "n_buckets": self.n_buckets,
            "live_buckets": len(live),
            "bucket_capacity": self.lay.n_slots,
            "max_level": int(max([a["slot_i"][s, _LEVEL] for s in live] + [0])),
            "absorptions": self.absorptions,
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "fallbacks": self.fallbacks,
        }

    # ------------------------------------------------------------ pickling
    _SCALARS = ("free_top", "n_points", "n_seen", "n_buckets", "b_slot", "b_n", "dirty",
                "inertia", "absorptions", "hits", "misses", "fallbacks", "initialised",
                "phi0", "est_cost", "n_centers", "n_iter")

    def __reduce__(self):
        state = {name: getattr(self, name) for name in self._SCALARS}
        state["rng"] = self.rng.state
        state["arrays"] = dict(self.a, online_c=self.online_c, online_w=self.online_w)
        return (Engine, self.init_args, state)

    def __setstate__(self, state):
        for name in self._SCALARS:
            setattr(self, name, state[name])
        self.rng.state = state["rng"]
        arrays = dict(state["arrays"])
        self.online_c[...] = arrays.pop("online_c")
        self.online_w[...] = arrays.pop("online_w")
        for key, value in arrays.items():
            self.a[key][...] = value
