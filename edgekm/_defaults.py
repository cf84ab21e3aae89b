"""Defaults, limits and the fixed-memory layout, shared by both backends.

Both engines (``edgekm._core._engine`` and ``edgekm._reference.engine``)
allocate exactly the buffers that :func:`plan` describes, once, at
construction, so ``memory_bytes`` is identical across backends and never
changes while a stream runs.
"""

from dataclasses import dataclass

ALGORITHMS = ("ct", "cc", "rcc", "onlinecc", "sequential")
KIND_CODE = {name: i for i, name in enumerate(ALGORITHMS)}

#: bucket (coreset) size per cluster: m = 40 k.  The paper uses 20 k; with the
#: 20 Lloyd iterations of a query, 20 k left CC 2-6% above batch KMeans(n_init=10)
#: on Power at k = 20, and 40 k brought every tree method within 2%
#: (docs/benchmarks.md).  Memory and query time double; update time barely moves.
CORESET_SIZE_PER_CLUSTER = 40
#: representative of a leaf in the reduce: "mean" (the leaf's weighted mean,
#: which carries the leaf's spread exactly) or "sample" (the sampled point,
#: StreamKM++ as published; kept for measurements, docs/internals.md)
REDUCE_REPRESENTATIVE = "mean"
#: OnlineCC initialises on the first ``10 k`` points (the authors' code)
ONLINE_INIT_PER_CLUSTER = 10
#: default number of base buckets the outermost tree holds before it starts
#: absorbing into its top level: 2**24 buckets (3.4e9 points at m = 200)
DEFAULT_BUCKET_CAPACITY_LOG2 = 24
#: k-means++ restarts per query; the paper uses 5, scikit-learn's KMeans baseline 10
DEFAULT_N_INIT = 10
DEFAULT_MAX_ITER = 20
DEFAULT_SWITCH_THRESHOLD = 1.2
DEFAULT_NESTING_DEPTH = 3
#: limits on parameters (validated in Python before anything is allocated)
MAX_COMPOSED_LEVELS = 64
MAX_MERGE_DEGREE = 1 << 16


def rcc_degrees(merge_degree, nesting_depth):
    """Merge degrees per order for RCC: r_j = r_{j-1}**2, starting at ``merge_degree``.

    ``nesting_depth`` counts the tiers (orders 0 .. nesting_depth-1).
    """
    degrees = [merge_degree]
    for _ in range(nesting_depth - 1):
        degrees.append(degrees[-1] ** 2)
    return tuple(degrees)


def n_digits(value, base):
    """Number of base-``base`` digits of a positive integer."""
    count = 0
    while value > 0:
        value //= base
        count += 1
    return count


def default_max_levels(outer_degree):
    """Levels of the outermost tree so that it holds 2**24 base buckets."""
    levels = 1
    while outer_degree ** levels < (1 << DEFAULT_BUCKET_CAPACITY_LOG2):
        levels += 1
    return levels


@dataclass(frozen=True)
class Layout:
    """Sizes of every buffer an engine allocates."""

    n_orders: int
    degrees: tuple
    levels: tuple          # levels per order
    instances: tuple       # instance count per order (index = order)
    n_instances: int
    max_levels: int        # max over orders
    max_list: int          # max(degree) - 1
    n_slots: int
    union_rows: int
    use_buckets: bool


def _slot_capacity(degrees, levels, cached):
    """Upper bound on live buckets (docs/algorithms.md §11), in slots."""
    cap = 0
    for j, (r, lv) in enumerate(zip(degrees, levels)):
        cap = lv * (r - 1) + (lv if cached else 0) + (lv * cap if j > 0 else 0)
    return cap


def plan(kind, coreset_size, degrees, max_levels):
    """Return the :class:`Layout` for one engine."""
    m = coreset_size
    if kind == "sequential":
        return Layout(0, (), (), (), 0, 0, 0, 0, 0, False)
    degrees = tuple(int(r) for r in degrees)
    n_orders = len(degrees)
    levels = [n_digits(degrees[j + 1] - 1, degrees[j]) for j in range(n_orders - 1)]
    levels.append(int(max_levels))
    instances = [1] * n_orders
    for j in range(n_orders - 2, -1, -1):
        instances[j] = instances[j + 1] * levels[j + 1]
    cached = kind != "ct"
    # + 1 slot for the partial bucket, + 1 for a merge in flight and + 1 for
    # a query's reduce at every order (an upper bound; usage is far lower).
    n_slots = _slot_capacity(degrees, levels, cached) + 2 + n_orders
    r_max = max(degrees)
    union = r_max * m                                  # a merge
    union = max(union, levels[0] * (degrees[0] - 1) * m + m)  # order-0 fallback, + B
    for j in range(1, n_orders):
        union = max(union, levels[j] * m + m)          # order-j fallback on inner coresets
    if kind == "ct":
        union = max(union, levels[-1] * (degrees[-1] - 1) * m + m)  # tree union + B
    return Layout(
        n_orders=n_orders,
        degrees=degrees,
        levels=tuple(levels),
        instances=tuple(instances),
        n_instances=sum(instances),
        max_levels=max(levels),
        max_list=r_max - 1,
        n_slots=n_slots,
        union_rows=union,
        use_buckets=True,
    )


EMPTY = -1
#: the columns of ``slot_i``, one row per bucket slot
SLOT_FIELDS = ("n", "level", "lo", "hi", "ref")
#: the buffers that hold a structure's state; the rest of :func:`buffers` is
#: scratch space of the compiled kernels
STATE_BUFFERS = ("pool_x", "pool_w", "pool_s", "slot_i", "slot_weight", "free", "inst_i",
                 "list_slot", "list_span", "list_cnt", "cache_key", "cache_slot", "child",
                 "out_c")


def reset_buffers(layout, b):
    """Initial state of an engine's buffers (both backends call this).

    Frees every slot, empties the lists and caches, and lays out the nested
    RCC instances: instance 0 is the outermost order; each instance of order
    j > 0 owns one instance of order j - 1 per level (``child``), numbered
    breadth-first.  ``inst_i[g] = (order, buckets received)``.
    """
    import numpy as np

    for array in b.values():
        array[...] = 0
    if not layout.use_buckets:
        return
    b["free"][:] = np.arange(layout.n_slots - 1, -1, -1)
    for name in ("list_slot", "cache_key", "cache_slot", "child"):
        b[name][...] = EMPTY
    b["inst_i"][0, 0] = layout.n_orders - 1
    tier, gid = [0], 1
    for j in range(layout.n_orders - 1, 0, -1):
        below = []
        for g in tier:
            for lvl in range(layout.levels[j]):
                b["child"][g, lvl] = gid
                b["inst_i"][gid, 0] = j - 1
                below.append(gid)
                gid += 1
        tier = below


def buffers(layout, n_features, n_clusters, coreset_size, dtype):
    """Every buffer an engine owns: ``{name: (shape, dtype)}``.

    Both backends allocate exactly these, once; ``memory_bytes`` is their sum.
    """
    import numpy as np

    S, G = layout.n_slots, layout.n_instances
    Lm, Rl, U = layout.max_levels, layout.max_list, layout.union_rows
    d, k = n_features, n_clusters
    m = coreset_size if layout.use_buckets else 0
    i8, f8 = np.int64, np.float64
    return {
        # bucket pool: points, weights, spread, (n, level, lo, hi, refcount), total weight
        "pool_x": ((S, m, d), dtype),
        "pool_w": ((S, m), f8),
        "pool_s": ((S, m), f8),       # the spread each point carries
        "slot_i": ((S, 5), i8),
        "slot_weight": ((S,), f8),
        "free": ((S,), i8),
        # structure instances: (order, n received), lists, spans, cache, children
        "inst_i": ((G, 2), i8),
        "list_slot": ((G, Lm, Rl), i8),
        "list_span": ((G, Lm, Rl, 2), i8),
        "list_cnt": ((G, Lm), i8),
        "cache_key": ((G, Lm), i8),
        "cache_slot": ((G, Lm), i8),
        "child": ((G, Lm), i8),
        # workspace: the union of buckets, the reduce tree, the solver
        "union_x": ((U, d), dtype),
        "union_w": ((U,), f8),
        "work_i": ((2, U), np.intp),
        "work_f": ((5, U), f8),
        "labels": ((2, U), np.int32),
        "node_i": ((max(2 * m - 1, 0), 7), np.intp),
        "node_cost": ((max(2 * m - 1, 0),), f8),
        "rep_leaf": ((m, 2), np.intp),
        "reduce_mean": ((d,), f8),    # a leaf's weighted sum of points
        "solve_c": ((4, k, d), f8),   # centres, best centres, sums, online centres
        "solve_w": ((3, k), f8),      # cluster weights, best weights, online weights
        "chosen": ((k,), np.intp),
        "parts": ((layout.n_orders, S), i8),   # the parts of a union, per order
        "out_c": ((k, d), dtype),
    }


def memory_bytes(layout, n_features, n_clusters, coreset_size, dtype):
    """Bytes of every buffer in :func:`buffers`: an engine's ``memory_bytes``."""
    import numpy as np

    total = 0
    for shape, dt in buffers(layout, n_features, n_clusters, coreset_size, dtype).values():
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize
    return total


#: the squared-distance quantiles a centroid version carries per cluster (p50, p95, p99)
QUANTILES = (0.50, 0.95, 0.99)
#: the floor of every published quantile (``edgekm.solve.cluster_statistics``): this
#: fraction of the set's mean squared distance to its nearest centres ...
QUANTILE_FLOOR_FRACTION = 1e-3
#: ... and at least this times 1 + the largest squared norm of a centre
QUANTILE_FLOOR_ABSOLUTE = 1e-12
#: values per coreset point of the spread mixture, per method of ``cluster_statistics``
QUANTILE_DRAWS = {"moment": 64, "mc": 256}

#: raw anomalies one telemetry summary may carry (the filter's cap and the codec's limit)
MAX_ANOMALIES = 65536

#: Batches of float32 points go through the float32 filter of the assignment
#: kernel (cython_src/_assign.pyx, assign_scores_f32) from this many clusters
#: on.  Its per-point cost (error bound, exact recomputation of the winner,
#: transposition) is O(d) and it saves about k d / 8 vector operations, so it
#: pays from about k = 24: callgrind instruction counts of assign_into on 20,000
#: points against the float64 kernel: d=10 k=30 0.74x, d=74 k=30 0.83x, but
#: d=10 k=10 1.13x and d=34 k=10 1.26x.
ASSIGN_F32_FILTER_MIN_CLUSTERS = 20

#: ``DeviceAgent(**LEAN_AGENT, ...)``: a preset for small devices (tens of MiB of RAM, slow
#: flash).  Half the default bucket size (m = 100 instead of 200: the local model and the
#: sync window take about half the memory, and frames half the bytes; a frame still holds
#: 10 points per cluster at k = 10) and at most 16 queued frames instead of 64 (beyond that
#: the outbox merges them).  benchmarks/agent_footprint.py measures both presets.
LEAN_AGENT = {"coreset_size": 100, "max_pending": 16}
