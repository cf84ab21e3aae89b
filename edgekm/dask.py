"""Offline fitting on a Dask cluster: a coreset per partition, a tree of merges, centres.

For a history too large for one machine.  :func:`fit_coreset` builds one
coreset per partition on the workers (a :class:`~edgekm.StreamingKMeans`
structure, the compiled core), merges them in a tree inside Dask
(Observation 1: the union of coresets of disjoint data is a coreset of the
union; a node whose union exceeds ``coreset_size`` points is reduced by the
StreamKM++ coreset tree, :meth:`edgekm.Coreset.merge`), and solves k-means
on the root coreset with the project's solver
(:meth:`edgekm.Coreset.fit_centers`).  Weights are kept exactly: the root's
total weight is the number of rows.

The result can go to an aggregator: :func:`push_seed` uploads the root
coreset as signed frames (it joins the model's aggregate, like a device's
data), and :func:`publish` stores the centres as a centroid version.

Needs the ``dask`` extra (``pip install "edgekm[dask]"``).  ``import edgekm``
never imports this module, and nothing on the device does.
"""

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np

try:
    import dask
    import dask.array as da
except ImportError as exc:      # pragma: no cover - the extra is installed for the tests
    raise ImportError(
        "edgekm.dask needs Dask: install edgekm[dask] (pip install \"edgekm[dask]\").") from exc

from ._defaults import DEFAULT_MAX_ITER, DEFAULT_N_INIT, QUANTILES
from ._validation import (Options, Satisfies, _first_bad_row, check_array, check_coreset_size,
                          resolve_seed, validate_params)
from .coreset import Coreset
from .solve import cluster_statistics
from edgekm.exceptions import EdgekmError, SeedUploadError
from .streaming import StreamingKMeans
from .sync.device.client import Outcome, SignedClient, check_key, check_server_url

__all__ = ["fit_coreset", "DaskFitResult", "push_seed", "publish", "data_cost",
           "SeedUploadError", "ALGORITHMS"]

#: structures whose coreset a partition contributes (sequential k-means keeps none)
ALGORITHMS = ("ct", "cc", "rcc", "onlinecc")

#: fit_coreset's own rules (the rest are the table's)
_RULES = {"algorithm": Options(ALGORITHMS, note="sequential k-means keeps no coreset"),
          "dtype": [None, Satisfies(lambda v: np.dtype(v) in (np.float32, np.float64),
                                    "numpy.float32 or numpy.float64")]}
#: rows per partition when a NumPy array is split: at least this many coresets' worth ...
_MIN_ROWS_PER_CORESET = 10
#: ... and at most this many bytes of float64 per partition
_MAX_PARTITION_BYTES = 64 << 20
#: partitions a NumPy array is split into, at most, before the byte cap
_TARGET_PARTITIONS = 32

# seed streams: one per role, so that no two tasks share a seed
_LEAF, _LEAF_REDUCE, _NODE, _SOLVE = 0, 1, 2, 3


@dataclass(frozen=True)
class DaskFitResult:
    """The outcome of :func:`fit_coreset`.

    Attributes
    ----------
    centers : ndarray of shape (n_clusters, n_features)
    cluster_weights : ndarray of shape (n_clusters,)
        Weight of the root coreset assigned to each centre.
    inertia : float
        Weighted k-means cost of the root coreset against ``centers`` (an
        estimate of the cost of the data; use :func:`data_cost` for the
        exact one).
    coreset : edgekm.Coreset
        The root coreset (at most ``coreset_size`` points).
    n_samples : int
        Rows of the data, counted by the partitions.
    n_partitions : int
    random_state : int
        The seed every task's seed was derived from.
    created : float
        Unix time of the fit; :func:`push_seed` stamps the frames with it,
        so that pushing the same result twice gives identical frames.
    """

    centers: np.ndarray
    cluster_weights: np.ndarray
    inertia: float
    coreset: Coreset = field(repr=False)
    n_samples: int
    n_partitions: int
    random_state: int
    created: float

    def cluster_statistics(self, quantiles=QUANTILES):
        """Per-cluster weights and quantiles of the squared distance, from the root
        coreset and its spread (:func:`edgekm.solve.cluster_statistics`).

        Returns ``(cluster_weights (k,), quantiles (k, len(quantiles)))``; the default
        levels are a version's p50/p95/p99, and any levels in (0, 1) are accepted.
        """
        return cluster_statistics(self.coreset, self.centers, quantiles)

    @property
    def total_weight(self):
        """Total weight of the root coreset; equals ``n_samples`` exactly."""
        return self.coreset.total_weight

    @property
    def n_clusters(self):
        return self.centers.shape[0]

    @property
    def n_features(self):
        return self.centers.shape[1]


# ---------------------------------------------------------------- seeds


def _seed(base, role, *index):
    """A uint64 seed for one task, from the fit's seed, the task's role and position."""
    return int(np.random.SeedSequence([base, role, *index]).generate_state(1, np.uint64)[0])


# ---------------------------------------------------------------- worker tasks


def _partition_coreset(block, index, offset, n_clusters, algorithm, coreset_size, dtype, seed,
                       reduce_seed):
    """On a worker: ``(coreset or None, rows)`` of one partition (ndarray or pandas frame)."""
    if hasattr(block, "to_numpy") and hasattr(block, "columns"):
        block = block.to_numpy(dtype=np.float64, na_value=np.nan)
    block = np.asarray(block)
    rows = int(block.shape[0])
    if rows == 0:
        return None, 0
    where = f"partition {index}"
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        r = _first_bad_row(block)
        at = "" if offset is None else f" (row {offset + r} of the data)"
        raise ValueError(f"Input contains NaN or infinity: {where}, row {r} of the "
                         f"partition{at}.")
    try:
        X = check_array(block, dtype)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    model = StreamingKMeans(n_clusters, algorithm=algorithm, coreset_size=coreset_size,
                            dtype=dtype, n_init=1, max_iter=1, random_state=seed)
    coreset = model.partial_fit(X).coreset()
    if len(coreset) > coreset_size:
        coreset = coreset.merge(size=coreset_size, random_state=reduce_seed)
    return coreset, rows


def _merge_node(children, coreset_size, seed):
    """On a worker: the union of the children's coresets, reduced to ``coreset_size``."""
    parts = [c for c, _ in children if c is not None]
    rows = sum(n for _, n in children)
    if not parts:
        return None, rows
    return Coreset.merge(*parts, size=coreset_size, random_state=seed), rows


# ---------------------------------------------------------------- input


def _is_instance(value, module, name):
    """isinstance against ``module.name`` when that module is already imported."""
    mod = sys.modules.get(module)
    return mod is not None and isinstance(value, getattr(mod, name))


def _check_frame_columns(dtypes):
    """Raise naming every column that is not numeric (int, unsigned or float)."""
    bad = [f"{col!r} ({dt})" for col, dt in dtypes.items()
           if getattr(dt, "kind", "O") not in "iuf"]
    if bad:
        raise TypeError("fit_coreset takes numeric columns only; non-numeric columns: "
                        + ", ".join(bad) + ". Select or encode them first.")
    if len(dtypes) == 0:
        raise ValueError("the dataframe has no columns.")


def _numpy_chunks(n, d, coreset_size):
    rows = max(_MIN_ROWS_PER_CORESET * coreset_size, -(-n // _TARGET_PARTITIONS))
    return max(1, min(rows, _MAX_PARTITION_BYTES // (8 * d)))


def _blocks(data, coreset_size):
    """``(delayed blocks, row offsets or Nones, n_rows or None, n_features, input dtype)``."""
    if _is_instance(data, "dask.dataframe", "Series") or _is_instance(data, "pandas", "Series"):
        raise TypeError("fit_coreset takes a 2-D collection; got a Series. Use "
                        "series.to_frame() for a single feature.")
    if _is_instance(data, "pandas", "DataFrame"):
        import dask.dataframe as dd

        _check_frame_columns(data.dtypes)
        n = len(data)
        chunk = _numpy_chunks(max(n, 1), data.shape[1], coreset_size)
        data = dd.from_pandas(data, npartitions=max(1, -(-n // chunk)), sort=False)
    if _is_instance(data, "dask.dataframe", "DataFrame"):
        _check_frame_columns(data.dtypes)
        parts = list(data.to_delayed())
        dtype = np.float32 if all(np.dtype(dt) == np.float32 for dt in data.dtypes) \
            else np.float64
        return parts, [None] * len(parts), None, len(data.columns), dtype
    if isinstance(data, da.Array):
        X = data
    else:
        if hasattr(data, "toarray") or hasattr(data, "tocsr"):
            raise TypeError("fit_coreset does not accept sparse input; convert it with "
                            ".toarray() or use a dask array.")
        if not (hasattr(data, "__array__") or isinstance(data, (list, tuple))):
            raise TypeError("data must be a dask array, a dask or pandas DataFrame or an "
                            f"array-like of numbers; got {type(data).__name__}.")
        raw = np.asarray(data)
        if raw.ndim == 2 and raw.shape[0] > 0 and raw.shape[1] > 0:
            X = da.from_array(raw, chunks=(_numpy_chunks(*raw.shape, coreset_size),
                                           raw.shape[1]))
        else:
            X = raw         # the shape errors below
    if X.ndim != 2:
        raise ValueError(f"Expected 2-D data, got {X.ndim}-D with shape {X.shape}. Reshape "
                         "it with X.reshape(-1, 1) for a single feature.")
    if X.dtype.kind not in "biuf":
        raise TypeError(f"data must contain numbers only; got dtype {X.dtype}.")
    n, d = X.shape
    if d == 0 or (not np.isnan(n) and n == 0):
        raise ValueError(f"Found data with shape {X.shape}; at least one row and one column "
                         "are required.")
    if len(X.chunks[1]) != 1:
        X = X.rechunk({1: d})           # every block holds whole rows
    dtype = X.dtype.type if X.dtype in (np.float32, np.float64) else np.float64
    row_chunks = X.chunks[0]
    known = not any(np.isnan(c) for c in row_chunks)
    offsets = ([int(o) for o in np.cumsum((0,) + row_chunks[:-1])] if known
               else [None] * len(row_chunks))
    return list(X.to_delayed().ravel()), offsets, (int(n) if known else None), int(d), dtype


# ---------------------------------------------------------------- fitting


def _tree(leaves, split_every, coreset_size, base, token):
    """Delayed tree: fan-in ``split_every`` merges up to one root."""
    merge = dask.delayed(_merge_node)
    level, depth = leaves, 0
    while len(level) > 1:
        depth += 1
        level = [merge(level[i:i + split_every], coreset_size,
                       _seed(base, _NODE, depth, j),
                       dask_key_name=f"edgekm-merge-{depth}-{j}-{token}")
                 for j, i in enumerate(range(0, len(level), split_every))]
    if depth == 0:       # a single partition: the root is its (reduced) coreset
        level = [merge(level, coreset_size, _seed(base, _NODE, 1, 0),
                       dask_key_name=f"edgekm-merge-1-0-{token}")]
    return level[0]


def fit_coreset(data, n_clusters, *, coreset_size=None, algorithm="ct", n_init=DEFAULT_N_INIT,
                max_iter=DEFAULT_MAX_ITER, random_state=0, split_every=4, client=None,
                dtype=None):
    """Fit k-means on a Dask collection: one coreset per partition, a merge tree, centres.

    Parameters
    ----------
    data : dask.array.Array, dask.dataframe.DataFrame, pandas.DataFrame or array-like
        2-D data of shape (n_samples, n_features).  A dask array is rechunked
        so that each block holds whole rows; each block (or dataframe
        partition) is one partition.  A dataframe must have numeric columns
        only.  A NumPy array is split into partitions of
        ``max(10 * coreset_size, n_samples / 32)`` rows (at most 64 MiB
        each); it travels in the task graph, so pass a dask collection for
        data that does not fit one machine.  NaN or infinity anywhere raises
        ``ValueError`` naming the partition and row.
    n_clusters : int
    coreset_size : int or None, default=None
        m, the points of every coreset (per partition and per merge);
        ``40 * n_clusters`` when None, as for :class:`~edgekm.StreamingKMeans`.
    algorithm : {"ct", "cc", "rcc", "onlinecc"}, default="ct"
        The structure each partition streams through.
    n_init, max_iter : int
        k-means++ restarts and Lloyd iterations of the final solve.
    random_state : None, int, RandomState or Generator, default=0
        Every task's seed is derived from it and the task's position, so the
        same data, partitioning and seed give identical centres on any
        cluster.  None draws a seed (recorded in the result).
    split_every : int, default=4
        Fan-in of the merge tree (>= 2).
    client : dask.distributed.Client or None, default=None
        Where to compute; None uses Dask's default scheduler (the active
        client, if any).
    dtype : {None, numpy.float32, numpy.float64}, default=None
        Storage type of the coresets; None keeps float32 input as float32
        and makes everything else float64.

    Returns
    -------
    DaskFitResult

    Raises
    ------
    ValueError
        Bad parameters, data that is not 2-D, NaN/inf (naming the partition
        and row), or fewer rows than ``n_clusters``.
    TypeError
        Non-numeric data or dataframe columns (named).

    Examples
    --------
    >>> import numpy as np
    >>> from edgekm.dask import fit_coreset
    >>> rng = np.random.default_rng(0)
    >>> X = np.concatenate([rng.normal(c, 0.1, size=(2000, 2)) for c in (0, 5, 10)])
    >>> result = fit_coreset(X, 3, random_state=0)      # the threaded scheduler
    >>> sorted(np.round(result.centers[:, 0]).astype(int).tolist())
    [0, 5, 10]
    >>> result.total_weight == result.n_samples == 6000
    True
    """
    validate_params({"algorithm": algorithm, "split_every": split_every, "dtype": dtype},
                    _RULES)     # np.dtype() raises TypeError for what is not a dtype
    cfg = validate_params({"n_clusters": n_clusters, "coreset_size": coreset_size,
                           "n_init": n_init, "max_iter": max_iter, "random_state": random_state})
    m = check_coreset_size(n_clusters, coreset_size)
    base = resolve_seed(random_state)
    blocks, offsets, n_rows, d, in_dtype = _blocks(data, m)
    if n_rows is not None and n_rows < n_clusters:
        raise ValueError(f"n_samples={n_rows} should be >= n_clusters={n_clusters}.")
    dtype = in_dtype if dtype is None else np.dtype(dtype).type
    token = dask.base.tokenize([b.key for b in blocks], n_clusters, algorithm, m, dtype, base,
                               split_every)
    leaf = dask.delayed(_partition_coreset)
    leaves = [leaf(block, i, offsets[i], int(n_clusters), algorithm, m, dtype,
                   _seed(base, _LEAF, i), _seed(base, _LEAF_REDUCE, i),
                   dask_key_name=f"edgekm-partition-{i}-{token}")
              for i, block in enumerate(blocks)]
    root = _tree(leaves, int(split_every), m, base, token)
    if client is not None:
        coreset, rows = client.compute(root, sync=True)
    else:
        coreset, rows = dask.compute(root)[0]
    if coreset is None or rows < n_clusters:
        raise ValueError(f"n_samples={rows} should be >= n_clusters={n_clusters}.")
    if coreset.total_weight != rows:     # pragma: no cover - a broken merge
        raise AssertionError(f"the root coreset weighs {coreset.total_weight}, not {rows}.")
    if len(coreset) < n_clusters:
        raise ValueError(f"the root coreset has {len(coreset)} distinct points, fewer than "
                         f"n_clusters={n_clusters}.")
    centers, weights, cost = coreset.fit_centers(int(n_clusters), n_init=cfg["n_init"],
                                                 max_iter=cfg["max_iter"],
                                                 random_state=_seed(base, _SOLVE))
    return DaskFitResult(centers=centers, cluster_weights=weights, inertia=float(cost),
                         coreset=coreset, n_samples=int(rows), n_partitions=len(blocks),
                         random_state=base, created=time.time())


def data_cost(data, centers, *, client=None):
    """The k-means cost of all of ``data`` against ``centers``, computed by the partitions.

    ``data`` is anything :func:`fit_coreset` takes; the sum is in float64.
    """
    C = np.ascontiguousarray(centers, dtype=np.float64)
    blocks, _, _, d, _ = _blocks(data, 1 << 12)
    if C.ndim != 2 or C.shape[1] != d:
        raise ValueError(f"centers must have shape (n_clusters, {d}); got {C.shape}.")

    parts = [dask.delayed(_block_cost)(b, C) for b in blocks]
    total = dask.delayed(sum)(parts)
    return float(client.compute(total, sync=True) if client is not None
                 else dask.compute(total)[0])


def _block_cost(block, centers):
    """On a worker: the k-means cost of one partition (float64)."""
    from . import _backend

    if hasattr(block, "to_numpy") and hasattr(block, "columns"):
        block = block.to_numpy(dtype=np.float64, na_value=np.nan)
    if len(block) == 0:
        return 0.0
    X = check_array(block, np.float64)
    return float(_backend.ops.cost(X, np.ones(len(X)), centers))


# ---------------------------------------------------------------- aggregator


def _seed_frames(result, model, device_id, boot, max_points, max_frame_bytes):
    from .sync.wire.frame import MAX_FRAME_BYTES, MAX_POINTS, check_id, encode_frame

    check_id(model, "model")
    check_id(device_id, "device_id")
    coreset = result.coreset
    max_points = MAX_POINTS if max_points is None else int(max_points)
    max_frame_bytes = MAX_FRAME_BYTES if max_frame_bytes is None else int(max_frame_bytes)
    row_bytes = coreset.n_features * coreset.dtype.itemsize + 16     # + weight + spread
    per_frame = min(max_points, (max_frame_bytes - 512) // row_bytes)
    if per_frame < 1:
        raise ValueError(f"max_frame_bytes={max_frame_bytes} cannot hold one point of "
                         f"{coreset.n_features} features.")
    P, W, S = coreset.points, coreset.weights, coreset.spread
    if boot is None:
        # the same result always gets the same boot: pushing it again is a duplicate
        digest = hashlib.sha256(P.tobytes() + W.tobytes() + repr(result.created).encode())
        boot = int.from_bytes(digest.digest()[:8], "little") >> 1
    first = 0
    frames = []
    for seq, start in enumerate(range(0, len(W), per_frame)):
        w = W[start:start + per_frame]
        weight = int(round(float(np.sum(w))))
        body = encode_frame(model=model, device=device_id, boot=boot, seq=seq,
                            span=(first, first + max(weight, 1) - 1),
                            points=P[start:start + per_frame], weights=w,
                            level=min(coreset.level, 1024), created=result.created,
                            spread=S[start:start + per_frame])
        frames.append(body)
        first += max(weight, 1)
    return frames


def push_seed(result, server_url, model, device_id, key=None, *, boot=None, max_points=None,
              max_frame_bytes=None, timeout=30.0):
    """Upload the root coreset to an aggregator as signed frames (a seed aggregate).

    The frames join the model's aggregate exactly as a device's would: its
    total weight grows by ``result.n_samples``.  The device must be
    registered on the aggregator (``edgekm devices add``).  Pushing the same
    result again with the same frame limits sends identical frames, which
    the aggregator answers as duplicates, so a failed push can simply be
    repeated; with other limits it answers 409 (conflict) instead of counting
    the data twice.

    Parameters
    ----------
    result : DaskFitResult
    server_url : str or edgekm.sync.cloud.aggregator.Aggregator
        The aggregator's base URL (``http://host:port``), or an in-process
        :class:`~edgekm.sync.cloud.aggregator.Aggregator` (then ``key`` is not used).
    model, device_id : str
    key : str
        The device's secret (hex), for a URL.
    boot : int or None, default=None
        Boot id of the frames; None derives it from the coreset and
        ``result.created``.
    max_points, max_frame_bytes : int or None
        Frame limits of the aggregator (the protocol's defaults when None):
        the coreset is split into as many frames as they require.
    timeout : float, default=30.0
        Seconds per HTTP request.

    Returns
    -------
    dict
        ``{"frames": n, "accepted": a, "duplicate": d, "weight": w, "total_weight": t}``,
        ``t`` being the model's total weight after the last frame.

    Raises
    ------
    SeedUploadError
        A frame was refused or the aggregator could not be reached; the
        frames before it stay accepted (push again to finish).
    """
    if not isinstance(result, DaskFitResult):
        raise TypeError(f"result must be a DaskFitResult; got {type(result).__name__}.")
    frames = _seed_frames(result, model, device_id, boot, max_points, max_frame_bytes)
    summary = {"frames": len(frames), "accepted": 0, "duplicate": 0,
               "weight": float(result.total_weight), "total_weight": None}
    if hasattr(server_url, "accept"):              # an in-process Aggregator
        for body in frames:
            answer = server_url.accept(model, device_id, body)
            summary[answer["status"]] += 1
            summary["total_weight"] = answer["total_weight"]
        return summary
    check_server_url(server_url, "an http(s) URL or an Aggregator")
    check_key(key)
    client = SignedClient(server_url, device_id=device_id, key=key, timeout=timeout)
    for seq, body in enumerate(frames):
        status, answer = _http(client, "POST", f"/v1/models/{model}/frames", body,
                               "application/msgpack")
        if status != 200 or answer.get("status") not in ("accepted", "duplicate"):
            raise SeedUploadError(
                f"frame {seq + 1} of {len(frames)} was refused: HTTP {status} "
                f"{answer.get('reason', '')}: {answer.get('error', answer)}"[:400]
                + f" ({summary['accepted'] + summary['duplicate']} frame(s) went through).")
        summary[answer["status"]] += 1
        summary["total_weight"] = answer.get("total_weight")
    return summary


def _http(client, method, path, body, content_type):
    """``(status, JSON object)`` of one request through the device's signed client (no
    retry but the one after a clock-skew 401); no answer raises SeedUploadError."""
    outcome = client.call(method, path, body, max_retries=0,
                          headers={"Content-Type": content_type, "Accept": "application/json"},
                          classify=lambda a: Outcome("answer", status=a.status, answer=a))
    answer = outcome.answer
    if answer.status is None:
        raise SeedUploadError(f"cannot reach the aggregator: {answer.exc}"[:300]) from None
    try:
        parsed = json.loads(answer.body) if answer.body else {}
    except ValueError:
        parsed = {}
    return answer.status, parsed if isinstance(parsed, dict) else {"error": str(parsed)[:200]}


def publish(result, aggregator_or_url, model, *, device_id=None, key=None, admin_token=None,
            max_points=None, max_frame_bytes=None, timeout=30.0):
    """Publish the fit as a centroid version of ``model`` on an aggregator.

    - With an in-process :class:`~edgekm.sync.cloud.aggregator.Aggregator`:
      ``result.centers`` are stored as they are
      (:meth:`~edgekm.sync.cloud.aggregator.Aggregator.publish_centers`), with the
      cluster weights and anomaly quantiles computed on ``result.coreset`` and its
      spread (:meth:`DaskFitResult.cluster_statistics`).
      The model is created if missing; nothing is pushed to its aggregate.
    - With a URL: the root coreset is pushed as a seed (:func:`push_seed`,
      needs ``device_id`` and ``key``), so that the aggregate holds the data,
      and ``result.centers`` are then published as they are
      (``POST /v1/models/{model}/versions`` with ``{"centers": ...}``, needs
      ``admin_token``); cluster weights and anomaly quantiles are computed on
      the model's aggregate, which holds the seed and the devices' data.
      If the seed was pushed before, pass the same ``max_points`` and
      ``max_frame_bytes``: the frames are then duplicates.  (Frames split
      differently answer 409 rather than count the data twice.)

    Returns
    -------
    dict
        The version's info (``version``, ``status``, ``k``, ``training_weight``,
        ``cost``, ...), as :meth:`~edgekm.sync.cloud.aggregator.Aggregator.versions` lists it.
    """
    if not isinstance(result, DaskFitResult):
        raise TypeError(f"result must be a DaskFitResult; got {type(result).__name__}.")
    if hasattr(aggregator_or_url, "publish_centers"):
        agg = aggregator_or_url
        agg.add_model(model, result.n_features, dtype=result.coreset.dtype.name)
        version = agg.publish_centers(model, result.centers, result.coreset,
                                      reason="edgekm.dask offline fit")
        return [v for v in agg.versions(model) if v["version"] == version][0]
    if device_id is None or key is None or admin_token is None:
        raise ValueError("publishing to a URL needs device_id and key (to push the seed) and "
                         "admin_token (to publish).")
    push_seed(result, aggregator_or_url, model, device_id, key, max_points=max_points,
              max_frame_bytes=max_frame_bytes, timeout=timeout)
    body = json.dumps({"centers": np.asarray(result.centers, dtype=np.float64).tolist()}).encode()
    client = SignedClient(aggregator_or_url, admin_token=admin_token, timeout=timeout)
    status, answer = _http(client, "POST", f"/v1/models/{model}/versions", body,
                           "application/json")
    if status != 200:
        raise SeedUploadError(f"publishing failed: HTTP {status} {answer.get('reason', '')}: "
                              f"{answer.get('error', answer)}"[:400])
    return answer
