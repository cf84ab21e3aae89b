"""Shared helpers for the kernel and engine tests: builders, base-r digit
arithmetic (docs/algorithms.md §5.1) and structural checks on an engine's buffers.

Both backends expose the state buffers (``edgekm._defaults.STATE_BUFFERS``):
the compiled engine in ``engine.buffers`` (with its scratch space), the
reference as ``engine.a``.
"""

import numpy as np

from edgekm import _defaults
from edgekm._core._engine import Engine as CythonEngine
from edgekm._reference.engine import Engine as ReferenceEngine

BACKENDS = {"cython": CythonEngine, "reference": ReferenceEngine}

#: buffers that hold the state of a structure (the rest is scratch space that
#: only the compiled kernels write into; the reference uses NumPy temporaries)
STATE_BUFFERS = _defaults.STATE_BUFFERS

EMPTY = -1
# columns of slot_i
S_N, S_LEVEL, S_LO, S_HI, S_REF = range(5)


def make_engine(backend, kind, *, d=3, k=3, m=8, degrees=(2,), max_levels=8, n_init=2,
                max_iter=10, alpha=1.2, dtype=np.float64, seed=0):
    """An engine built directly, with the positional signature of docs/internals.md."""
    return BACKENDS[backend](kind, d, k, m, tuple(degrees), max_levels, n_init, max_iter,
                             alpha, dtype, seed)


def bufs(engine):
    """The engine's buffer dict, whichever backend."""
    return engine.buffers if hasattr(engine, "buffers") else engine.a


def ones(n):
    return np.ones(n, dtype=np.float64)


# ---------------------------------------------------------------- base-r digits
def digits(n, r):
    """Base-r digits of n, least significant first."""
    out = []
    while n:
        out.append(n % r)
        n //= r
    return out


def chi(n, r):
    """Number of non-zero base-r digits of n."""
    return sum(1 for x in digits(n, r) if x)


def floor_log(n, r):
    """floor(log_r n) for n >= 1, in exact integer arithmetic."""
    out = 0
    while r ** (out + 1) <= n:
        out += 1
    return out


def terms(n, r):
    """The non-zero terms beta_i r^alpha_i of n, smallest first."""
    return [x * r ** i for i, x in enumerate(digits(n, r)) if x]


def minor(n, r):
    return terms(n, r)[0]


def major(n, r):
    return n - minor(n, r)


def prefixsum(n, r):
    """{N_kappa : 2 <= kappa <= chi(n)}: drop the kappa-1 smallest non-zero terms."""
    t = terms(n, r)
    return {sum(t[i:]) for i in range(1, len(t))}


def expected_absorptions(n_buckets, r, levels):
    """docs/algorithms.md §11: 1 + floor((N - r^L) / ((r-1) r^(L-1))) for N >= r^L, else 0."""
    if n_buckets < r ** levels:
        return 0
    return 1 + (n_buckets - r ** levels) // ((r - 1) * r ** (levels - 1))


# ---------------------------------------------------------------- data
def mixture(rng, n, centers, sd=1.0):
    """n points from an isotropic Gaussian mixture around ``centers`` (float64)."""
    centers = np.asarray(centers, dtype=np.float64)
    labels = rng.integers(0, len(centers), size=n)
    return centers[labels] + rng.normal(scale=sd, size=(n, centers.shape[1]))


# ---------------------------------------------------------------- structure checks
def cache_entries(engine, g=0):
    """{key: slot} of instance g's cache."""
    b = bufs(engine)
    return {int(key): int(slot) for key, slot in zip(b["cache_key"][g], b["cache_slot"][g])
            if key != EMPTY}


def list_slots(engine, g, lvl):
    b = bufs(engine)
    return [int(s) for s in b["list_slot"][g, lvl, :int(b["list_cnt"][g, lvl])]]


def live_slots(engine):
    """Slots not on the free stack."""
    b = bufs(engine)
    used = np.ones(len(b["free"]), dtype=bool)
    used[b["free"][:int(engine.free_top)]] = False
    return set(np.flatnonzero(used).tolist())


def check_pool(engine):
    """Every live slot is referenced, with a reference count equal to its uses.

    A slot's uses: one per list entry (outer and inner lists share buckets),
    one per cache entry, and one for the partial bucket.  A leak shows as a
    live slot with no use; a double free as a use of a free slot.
    """
    b = bufs(engine)
    uses = {}
    n_inst = b["inst_i"].shape[0]
    for g in range(n_inst):
        for lvl in range(b["list_cnt"].shape[1]):
            for s in list_slots(engine, g, lvl):
                uses[s] = uses.get(s, 0) + 1
        for s in cache_entries(engine, g).values():
            uses[s] = uses.get(s, 0) + 1
    bs = int(engine.b_slot)
    uses[bs] = uses.get(bs, 0) + 1
    live = live_slots(engine)
    assert set(uses) == live, (sorted(uses), sorted(live))
    for s, count in uses.items():
        assert int(b["slot_i"][s, S_REF]) == count, (s, count, int(b["slot_i"][s, S_REF]))
    return live


def check_unit_weight_slots(engine):
    """Unit-weight stream: every stored bucket covers base buckets [lo, hi] and
    weighs exactly (hi - lo + 1) * m, and its points' weights sum to that."""
    b = bufs(engine)
    m = b["pool_w"].shape[1]
    for s in live_slots(engine) - {int(engine.b_slot)}:
        n, _, lo, hi, _ = (int(v) for v in b["slot_i"][s])
        assert 1 <= lo <= hi <= engine.n_buckets, (s, lo, hi)
        assert b["slot_weight"][s] == (hi - lo + 1) * m, (s, lo, hi, b["slot_weight"][s])
        assert np.cumsum(b["pool_w"][s, :n])[-1] == b["slot_weight"][s]


def check_inner_structures(engine):
    """RCC: the inner structure of (g, level) has received exactly the buckets
    of that level's list (it is reset when the list is merged; ALGORITHMS §10
    bug 3 kept it), and its cached coreset for them has their total weight."""
    b = bufs(engine)
    for g in range(b["inst_i"].shape[0]):
        for lvl in range(b["list_cnt"].shape[1]):
            c = int(b["child"][g, lvl])
            if c == EMPTY:
                continue
            slots = list_slots(engine, g, lvl)
            assert int(b["inst_i"][c, 1]) == len(slots), (g, lvl, c)
            if not slots:
                assert cache_entries(engine, c) == {}
                assert not b["list_cnt"][c].any()
            entry = cache_entries(engine, c).get(len(slots))
            if entry is not None:
                expected = sum(float(b["slot_weight"][s]) for s in slots)
                assert b["slot_weight"][entry] == expected
