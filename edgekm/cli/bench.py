"""``edgekm bench``: stream a data set through every algorithm and compare.

For each algorithm the benchmark feeds the data to a fresh
:class:`edgekm.StreamingKMeans` in batches, reads ``cluster_centers_`` (a
query) every ``query_every`` points, and reports:

- the final k-means cost on all the data, divided by the cost of batch k-means
  (k-means++ and Lloyd, best of 10) on all the data;
- the update time per point (``partial_fit`` only);
- the time per query;
- ``memory_bytes``, the fixed memory of the estimator.

It uses the public API only, so it doubles as a smoke test of an installation.

Baselines from other libraries run the same stream when they are installed,
and are reported as skipped otherwise: scikit-learn's ``MiniBatchKMeans``
(``partial_fit`` on the same batches) and river's ``STREAMKMeans`` (one
``learn_one`` per point).  Their cost ratio and times are measured the same
way; their memory is not reported (they have no fixed-memory figure).
"""

import argparse
import contextlib
import io
import json
import math
import sys
import time
import traceback
import warnings

import numpy

import edgekm
from edgekm._progress import Progress
from edgekm._validation import check_int
from edgekm.datasets import load_array, load_shuttle
from edgekm.cli._common import (add_json, add_seed, positive_int, with_config)
from edgekm.exceptions import BenchInputError, UsageError

__all__ = ["ALGORITHMS", "BASELINES", "BenchInputError", "run_bench", "format_table", "to_json"]

#: Algorithms that ``StreamingKMeans(algorithm=...)`` accepts, in the benchmark's order.
ALGORITHMS = ("ct", "cc", "rcc", "onlinecc", "sequential")

#: Baselines from other libraries, run when they are installed.
BASELINES = ("minibatch", "river")

#: Points per chunk of river's STREAMKMeans.
RIVER_CHUNK_SIZE = 100

#: Restarts of the batch k-means reference.
BATCH_N_INIT = 10


def _check_int(name, value, minimum, allow_none=False):
    return check_int(name, value, minimum, allow_none=allow_none, error=BenchInputError)


def _check_names(names, known, what, allow_empty=False):
    if isinstance(names, str):
        names = [] if names.strip().lower() in ("", "none") and allow_empty else names.split(",")
    names = tuple(a.strip().lower() for a in names)
    if not names and not allow_empty:
        raise BenchInputError(f"no {what} given")
    unknown = [a for a in names if a not in known]
    if unknown:
        raise BenchInputError(f"unknown {what} {unknown[0]!r}; choose from {', '.join(known)}")
    if len(set(names)) != len(names):
        raise BenchInputError(f"an {what} is listed twice: {','.join(names)}")
    return names


def _check_algorithms(algorithms):
    return _check_names(algorithms, ALGORITHMS, "algorithm")


def _check_baselines(baselines):
    return _check_names(baselines, BASELINES, "baseline", allow_empty=True)


def _load(data, seed, shuffle):
    """Return (X, description dict); X is float32, C-contiguous, 2-D, finite."""
    if data is None:
        X = load_shuttle()
        name = "shuttle (bundled)"
        shuffle = True if shuffle is None else shuffle
    elif isinstance(data, numpy.ndarray):
        X = data
        name = "array"
    else:
        try:
            X = load_array(data)
        except ValueError as exc:
            raise BenchInputError(str(exc)) from None
        name = str(data)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise BenchInputError(f"the data must be a non-empty 2-D array, got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise BenchInputError(f"the data must be numeric, got dtype {X.dtype}")
    X = numpy.ascontiguousarray(X, dtype=numpy.float32)
    if not numpy.isfinite(X).all():
        raise BenchInputError(f"{name}: the data contains NaN or infinite values")
    if shuffle:
        X = X[numpy.random.default_rng(seed).permutation(X.shape[0])]
    return X, {"name": name, "shuffled": bool(shuffle)}


def _finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


def _backend_text():
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        edgekm.show_config()
    return buf.getvalue().strip()


def _stream(X, name, n_clusters, query_every, batch_size, seed, progress):
    """Stream X through one estimator; return its result dict (raises on failure)."""
    n = X.shape[0]
    est = edgekm.StreamingKMeans(n_clusters=n_clusters, algorithm=name, random_state=seed)
    update_s = 0.0
    query_s = 0.0
    n_queries = 0
    pos = 0
    next_query = query_every
    with Progress(n, f"{name:<10}", enabled=progress) as bar:
        while pos < n:
            end = min(pos + batch_size, next_query, n)
            batch = X[pos:end]
            t0 = time.perf_counter()
            est.partial_fit(batch)
            update_s += time.perf_counter() - t0
            bar.update(end - pos)
            pos = end
            if pos == next_query:
                next_query += query_every
                if pos >= n_clusters:
                    t0 = time.perf_counter()
                    centers = est.cluster_centers_
                    query_s += time.perf_counter() - t0
                    n_queries += 1
                    if centers.shape != (n_clusters, X.shape[1]):
                        raise RuntimeError(f"cluster_centers_ has shape {centers.shape}")

    cost = -float(est.score(X))
    n_seen = float(est.n_seen_)
    memory = int(est.memory_bytes)
    if not math.isfinite(cost) or cost < 0:
        raise RuntimeError(f"the final cost is {cost!r}")
    if n_seen != n:
        raise RuntimeError(f"n_seen_ is {n_seen!r} after {n} points")
    if memory <= 0:
        raise RuntimeError(f"memory_bytes is {memory!r}")
    return _row(cost, n, update_s, n_queries, query_s, memory, n_seen)


def _batches(n, batch_size, query_every):
    """Yield (start, end, query_after) cutting at batch_size and at every query point."""
    pos = 0
    next_query = query_every
    while pos < n:
        end = min(pos + batch_size, next_query, n)
        query = end == next_query
        if query:
            next_query += query_every
        yield pos, end, query
        pos = end


def _import_baseline(name):
    """The baseline's module, or None when its library is not installed."""
    try:
        if name == "minibatch":
            from sklearn import cluster
        else:
            from river import cluster
    except ImportError:
        return None
    return cluster


_BASELINE_LIBRARY = {"minibatch": "scikit-learn", "river": "river"}


def _stream_baseline(X, name, cluster, n_clusters, query_every, batch_size, seed, progress):
    """Stream X through a baseline of another library; same cadence and cost as _stream."""
    n, d = X.shape
    update_s = query_s = 0.0
    n_queries = 0
    centers = None
    if name == "minibatch":
        est = cluster.MiniBatchKMeans(n_clusters=n_clusters, batch_size=batch_size,
                                      random_state=seed, n_init="auto")
        pending = 0                  # MiniBatchKMeans needs >= k points in its first call

        def learn(a, b):
            nonlocal pending
            if not hasattr(est, "cluster_centers_") and b - pending < n_clusters:
                return
            est.partial_fit(X[pending:b])
            pending = b

        def query():
            return est.cluster_centers_ if hasattr(est, "cluster_centers_") else None
    else:
        # river draws its initial centres from N(mu, sigma): centre them on the data.
        est = cluster.STREAMKMeans(chunk_size=RIVER_CHUNK_SIZE, n_clusters=n_clusters,
                                   seed=seed, mu=float(X.mean()), sigma=float(X.std()) or 1.0)
        rows = None

        def learn(a, b):
            for row in rows:
                est.learn_one(row)

        def query():
            if len(est.centers) < n_clusters:
                return None
            return numpy.array([[c.get(j, 0.0) for j in range(d)]
                                for c in est.centers.values()])

    with warnings.catch_warnings(), Progress(n, f"{name:<10}", enabled=progress) as bar:
        # Another library's warnings (e.g. fewer distinct points than clusters in a
        # batch) are about its own run; they must not stop the benchmark.
        warnings.simplefilter("ignore")
        for a, b, at_query in _batches(n, batch_size, query_every):
            if name == "river":
                rows = [dict(enumerate(r)) for r in X[a:b].tolist()]   # outside the timer
            t0 = time.perf_counter()
            learn(a, b)
            update_s += time.perf_counter() - t0
            bar.update(b - a)
            if at_query and b >= n_clusters:
                t0 = time.perf_counter()
                centers = query()
                query_s += time.perf_counter() - t0
                n_queries += centers is not None
        centers = query()
    if centers is None:
        raise RuntimeError("no centres after the whole stream")
    centers = numpy.ascontiguousarray(centers, dtype=numpy.float64)
    if centers.shape != (n_clusters, d):
        raise RuntimeError(f"the centres have shape {centers.shape}")
    cost = edgekm.Coreset(X, numpy.ones(n)).cost(centers)
    if not math.isfinite(cost) or cost < 0:
        raise RuntimeError(f"the final cost is {cost!r}")
    return {"library": _BASELINE_LIBRARY[name],
            **_row(cost, n, update_s, n_queries, query_s, None, float(n))}


def _row(cost, n, update_s, n_queries, query_s, memory, n_seen):
    """One result row: the cost, the update and query times, the memory (None: unknown)."""
    return {
        "cost": cost,
        "update_us_per_point": update_s / n * 1e6,
        "update_seconds": update_s,
        "n_queries": n_queries,
        "query_ms_per_query": query_s / n_queries * 1e3 if n_queries else None,
        "query_seconds": query_s,
        "memory_bytes": memory,
        "memory_kib": None if memory is None else memory / 1024,
        "n_seen": n_seen,
    }


def run_bench(
    data=None,
    n_clusters=10,
    algorithms=ALGORITHMS,
    query_every=100,
    batch_size=1024,
    seed=0,
    limit=None,
    progress=True,
    out=sys.stdout,
    shuffle=None,
    baselines=BASELINES,
):
    """Stream a data set through each algorithm and compare it with batch k-means.

    Parameters
    ----------
    data : None, str, os.PathLike or ndarray of shape (n_samples, n_features), default=None
        None streams the bundled Shuttle data set (49,097 x 9), shuffled with
        ``seed``.  A path is read with :func:`edgekm.datasets.load_array`.
    n_clusters : int, default=10
        k.
    algorithms : sequence of str or comma-separated str, default=ALGORITHMS
        Any of ``ct``, ``cc``, ``rcc``, ``onlinecc``, ``sequential``.
    query_every : int, default=100
        Read ``cluster_centers_`` after every ``query_every`` points (only once at
        least ``n_clusters`` points have been seen).
    batch_size : int, default=1024
        Largest batch given to one ``partial_fit`` call.  Batches are also cut at
        the query points.
    seed : int, default=0
        Seeds the shuffle, every estimator and the batch reference.
    limit : int or None, default=None
        Use only the first ``limit`` points (after shuffling).
    progress : bool, default=True
        Show a progress bar on stderr (only when stderr is a terminal).
    out : file object or None, default=sys.stdout
        Where the table is printed; None prints nothing.
    shuffle : bool or None, default=None
        Shuffle the rows before streaming.  None shuffles the bundled data set
        and keeps the order of ``data`` given by the caller (a file's order may
        be the real stream order).
    baselines : sequence of str or comma-separated str, default=BASELINES
        Baselines of other libraries to run when installed: ``minibatch``
        (scikit-learn ``MiniBatchKMeans``), ``river`` (river ``STREAMKMeans``).
        ``"none"`` or an empty sequence runs none.

    Returns
    -------
    result : dict
        ``{"ok", "data", "n_samples", "n_features", "n_clusters", "query_every",
        "batch_size", "seed", "backend", "batch", "algorithms"}``; ``"batch"`` has
        the reference ``cost`` and ``seconds``, and ``"algorithms"`` maps each
        name to its ``cost``, ``cost_ratio``, ``update_us_per_point``,
        ``n_queries``, ``query_ms_per_query``, ``memory_bytes``,
        ``memory_kib`` and ``n_seen``, or to ``{"error": message}`` if it
        failed.  ``"baselines"`` maps each requested baseline to the same
        fields plus ``library`` (``memory_bytes`` is None), or to
        ``{"skipped": reason}`` when its library is not installed.  ``"ok"`` is
        False if anything failed.

    Raises
    ------
    BenchInputError
        (a ValueError) for a bad parameter or unreadable data.
    """
    n_clusters = _check_int("n_clusters", n_clusters, 1)
    query_every = _check_int("query_every", query_every, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    limit = _check_int("limit", limit, 1, allow_none=True)
    seed = _check_int("seed", seed, 0)
    algorithms = _check_algorithms(algorithms)
    baselines = _check_baselines(baselines)
    X, data_info = _load(data, seed, shuffle)
    if limit is not None:
        X = X[:limit]
    n_samples, n_features = X.shape
    if n_samples < n_clusters:
        raise BenchInputError(
            f"the data has {n_samples} points, fewer than n_clusters={n_clusters}"
        )

    result = {
        "ok": True,
        "data": data_info,
        "n_samples": n_samples,
        "n_features": n_features,
        "n_clusters": n_clusters,
        "query_every": query_every,
        "batch_size": batch_size,
        "seed": seed,
        "backend": _backend_text(),
        "batch": None,
        "algorithms": {},
        "baselines": {},
    }
    batch_cost = _batch_reference(result, X, n_clusters, seed)
    args = (n_clusters, query_every, batch_size, seed, progress)
    for name in algorithms:
        result["algorithms"][name] = _guarded(
            result, f"algorithm {name!r}", batch_cost, _stream, X, name, *args)
    for name in baselines:
        cluster = _import_baseline(name)
        if cluster is None:
            result["baselines"][name] = {
                "skipped": f"{_BASELINE_LIBRARY[name]} is not installed"}
            continue
        result["baselines"][name] = _guarded(
            result, f"baseline {name!r}", batch_cost, _stream_baseline, X, name, cluster, *args)

    if out is not None:
        out.write(format_table(result, stream=out))
        out.flush()
    return result


def _fail(result, where, exc):
    """Report a failed run on stderr, mark ``result`` not ok; the row that says why."""
    result["ok"] = False
    print(f"edgekm bench: {where} failed:", file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    return {"error": f"{type(exc).__name__}: {exc}"}


def _batch_reference(result, X, n_clusters, seed):
    """Batch k-means on all of X (best of BATCH_N_INIT): its cost, or None if it failed."""
    t0 = time.perf_counter()
    try:
        ref = edgekm.Coreset(X, numpy.ones(X.shape[0]))
        _, _, batch_cost = ref.fit_centers(n_clusters, n_init=BATCH_N_INIT, random_state=seed)
        batch_cost = float(batch_cost)
        if not math.isfinite(batch_cost) or batch_cost < 0:
            raise RuntimeError(f"the batch cost is {batch_cost!r}")
        result["batch"] = {"cost": batch_cost, "seconds": time.perf_counter() - t0}
    except Exception as exc:  # report, carry on with the streaming runs
        result["batch"] = _fail(result, "batch k-means", exc)
        batch_cost = None
    return batch_cost


def _guarded(result, where, batch_cost, stream, *args):
    """The row of ``stream(*args)`` with its cost ratio, or the error row if it failed."""
    try:
        row = stream(*args)
    except Exception as exc:  # report, carry on with the next run
        return _fail(result, where, exc)
    row["cost_ratio"] = _ratio(row["cost"], batch_cost)
    return row


def _ratio(cost, batch_cost):
    if batch_cost is None:
        return None
    if batch_cost > 0:
        return cost / batch_cost
    return 1.0 if cost == 0 else None  # every point is a center: any exact solution is as good


def _fmt(x, spec):
    return "-" if x is None else format(x, spec)


def _micro(stream):
    """The micro sign if ``stream`` can encode it, else ``u``."""
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        "\u00b5".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "u"
    return "\u00b5"


def format_table(result, stream=None):
    """Render a :func:`run_bench` result as a plain-text table."""
    mu = _micro(stream if stream is not None else sys.stdout)
    lines = []
    data = result["data"]
    order = ", shuffled" if data["shuffled"] else ", file order"
    lines.append(
        f"data: {data['name']}{order}: {result['n_samples']} points x "
        f"{result['n_features']} features; k = {result['n_clusters']}; "
        f"a query every {result['query_every']} points; seed {result['seed']}"
    )
    if result["backend"]:
        lines.extend(result["backend"].splitlines())
    batch = result["batch"]
    if batch is not None and "error" not in batch:
        lines.append(
            f"batch k-means (k-means++ and Lloyd, best of {BATCH_N_INIT}) on all the data: "
            f"cost {batch['cost']:.6g} in {batch['seconds']:.2f} s"
        )
    lines.append("")
    header = (
        f"{'algorithm':<12}{'cost/batch':>11}{'update ' + mu + 's/pt':>16}"
        f"{'query ms':>11}{'queries':>9}{'memory B':>12}{'KiB':>9}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    rows = list(result["algorithms"].items())
    rows += [(f"{name} *", row) for name, row in result.get("baselines", {}).items()]
    for name, row in rows:
        if "error" in row:
            lines.append(f"{name:<12}FAILED: {row['error']}")
            continue
        if "skipped" in row:
            lines.append(f"{name:<12}skipped: {row['skipped']}")
            continue
        lines.append(
            f"{name:<12}{_fmt(row['cost_ratio'], '.4f'):>11}"
            f"{_fmt(row['update_us_per_point'], '.2f'):>16}"
            f"{_fmt(row['query_ms_per_query'], '.3f'):>11}{row['n_queries']:>9}"
            f"{_fmt(row['memory_bytes'], 'd'):>12}{_fmt(row['memory_kib'], '.1f'):>9}"
        )
    lines.append("")
    lines.append(
        "cost/batch: final cost on all the data / batch k-means cost (lower is better, "
        "1 = as good)."
    )
    if result.get("baselines"):
        lines.append(
            "* baselines of other libraries: minibatch = scikit-learn MiniBatchKMeans "
            "(partial_fit), river = river STREAMKMeans (learn_one); memory not comparable."
        )
    if not result["ok"]:
        lines.append("Some runs FAILED; see the messages on stderr.")
    return "\n".join(lines) + "\n"


def _json_safe(obj):
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return _finite_or_none(obj)
    return obj


def to_json(result):
    """The result as strict JSON text (non-finite numbers become null)."""
    return json.dumps(_json_safe(result), indent=2, allow_nan=False)


# ---------------------------------------------------------------- the command


def add_parser(subparsers):
    p = subparsers.add_parser(
        "bench",
        help="stream a data set through every algorithm and compare with batch k-means",
        description=(
            "Stream a data set (by default the bundled Shuttle data, shuffled) through each "
            "streaming algorithm, querying the centers every N points, and print the final "
            "cost relative to batch k-means, the update time per point, the time per query "
            "and the memory used. scikit-learn's MiniBatchKMeans and river's STREAMKMeans "
            "run the same stream when they are installed (reported as skipped otherwise)."
        ),
    )
    p.add_argument(
        "--data",
        metavar="FILE",
        help="a .npy, .csv or .csv.gz file of shape (n_samples, n_features); "
        "a CSV header line is detected and skipped (default: the bundled Shuttle data)",
    )
    p.add_argument("--k", type=positive_int, default=10, help="number of clusters (default 10)")
    p.add_argument(
        "--algorithms",
        default="ct,cc,rcc,onlinecc,sequential",
        metavar="LIST",
        help="comma-separated subset of ct,cc,rcc,onlinecc,sequential (default: all)",
    )
    p.add_argument(
        "--baselines",
        default="minibatch,river",
        metavar="LIST",
        help="comma-separated subset of minibatch,river, or none: the other libraries' "
        "algorithms to compare with, when installed (default: both)",
    )
    p.add_argument(
        "--query-every",
        type=positive_int,
        default=100,
        metavar="N",
        help="read the centers after every N points (default 100, the paper's q)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=1024,
        metavar="N",
        help="points per partial_fit call (default 1024)",
    )
    p.add_argument(
        "--limit", type=positive_int, metavar="N", help="use only the first N points"
    )
    add_seed(p)
    p.add_argument(
        "--shuffle",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="shuffle the rows before streaming (default: shuffle the bundled data, "
        "keep a file's order)",
    )
    add_json(p, "the results")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler=run)


def run(args):
    """``edgekm bench``: :func:`run_bench` with the command's arguments; the exit status."""
    try:
        result = run_bench(
            data=args.data,
            n_clusters=args.k,
            algorithms=args.algorithms,
            baselines=args.baselines,
            query_every=args.query_every,
            batch_size=args.batch_size,
            seed=args.seed,
            limit=args.limit,
            progress=not args.no_progress,
            out=None if args.json else sys.stdout,
            shuffle=args.shuffle,
        )
    except BenchInputError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(to_json(with_config(result, args)))
    return 0 if result["ok"] else 1
