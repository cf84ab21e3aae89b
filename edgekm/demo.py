"""The ``edgekm demo``: stream a data set through every algorithm and compare.

For each algorithm the demo feeds the data to a fresh
:class:`edgekm.StreamingKMeans` in batches, reads ``cluster_centers_`` (a
query) every ``query_every`` points, and reports:

- the final k-means cost on all the data, divided by the cost of batch k-means
  (k-means++ and Lloyd, best of 10) on all the data;
- the update time per point (``partial_fit`` only);
- the time per query;
- ``memory_bytes``, the fixed memory of the estimator.

It uses the public API only, so it doubles as a smoke test of an installation.
"""

import contextlib
import io
import json
import math
import sys
import time
import traceback

import numpy

import edgekm
from edgekm._progress import Progress
from edgekm.datasets import load_array, load_shuttle

__all__ = ["ALGORITHMS", "DemoInputError", "run_demo", "format_table", "to_json"]

#: Algorithms that ``StreamingKMeans(algorithm=...)`` accepts, in the demo's order.
ALGORITHMS = ("ct", "cc", "rcc", "onlinecc", "sequential")

#: Restarts of the batch k-means reference.
BATCH_N_INIT = 10


class DemoInputError(ValueError):
    """A problem with the demo's input (data file or parameters), not with edgekm."""


def _check_int(name, value, minimum, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, numpy.bool_)) or not isinstance(value, (int, numpy.integer)):
        raise DemoInputError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise DemoInputError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _check_algorithms(algorithms):
    if isinstance(algorithms, str):
        algorithms = algorithms.split(",")
    algorithms = tuple(a.strip().lower() for a in algorithms)
    if not algorithms:
        raise DemoInputError("no algorithm given")
    unknown = [a for a in algorithms if a not in ALGORITHMS]
    if unknown:
        raise DemoInputError(
            f"unknown algorithm {unknown[0]!r}; choose from {', '.join(ALGORITHMS)}"
        )
    if len(set(algorithms)) != len(algorithms):
        raise DemoInputError(f"an algorithm is listed twice: {','.join(algorithms)}")
    return algorithms


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
            raise DemoInputError(str(exc)) from None
        name = str(data)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DemoInputError(f"the data must be a non-empty 2-D array, got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise DemoInputError(f"the data must be numeric, got dtype {X.dtype}")
    X = numpy.ascontiguousarray(X, dtype=numpy.float32)
    if not numpy.isfinite(X).all():
        raise DemoInputError(f"{name}: the data contains NaN or infinite values")
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
    return {
        "cost": cost,
        "update_us_per_point": update_s / n * 1e6,
        "update_seconds": update_s,
        "n_queries": n_queries,
        "query_ms_per_query": query_s / n_queries * 1e3 if n_queries else None,
        "query_seconds": query_s,
        "memory_bytes": memory,
        "memory_kib": memory / 1024,
        "n_seen": n_seen,
    }


def run_demo(
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

    Returns
    -------
    result : dict
        ``{"ok", "data", "n_samples", "n_features", "n_clusters", "query_every",
        "batch_size", "seed", "backend", "batch", "algorithms"}``; ``"batch"`` has
        the reference ``cost`` and ``seconds``, and ``"algorithms"`` maps each
        name to its ``cost``, ``cost_ratio``, ``update_us_per_point``,
        ``n_queries``, ``query_ms_per_query``, ``memory_bytes``,
        ``memory_kib`` and ``n_seen``, or to ``{"error": message}`` if it
        failed.  ``"ok"`` is False if anything failed.

    Raises
    ------
    DemoInputError
        (a ValueError) for a bad parameter or unreadable data.
    """
    n_clusters = _check_int("n_clusters", n_clusters, 1)
    query_every = _check_int("query_every", query_every, 1)
    batch_size = _check_int("batch_size", batch_size, 1)
    limit = _check_int("limit", limit, 1, allow_none=True)
    seed = _check_int("seed", seed, 0)
    algorithms = _check_algorithms(algorithms)

    X, data_info = _load(data, seed, shuffle)
    if limit is not None:
        X = X[:limit]
    n_samples, n_features = X.shape
    if n_samples < n_clusters:
        raise DemoInputError(
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
    }

    def fail(where, exc):
        result["ok"] = False
        print(f"edgekm demo: {where} failed:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"}

    t0 = time.perf_counter()
    try:
        ref = edgekm.Coreset(X, numpy.ones(n_samples))
        _, _, batch_cost = ref.fit_centers(n_clusters, n_init=BATCH_N_INIT, random_state=seed)
        batch_cost = float(batch_cost)
        if not math.isfinite(batch_cost) or batch_cost < 0:
            raise RuntimeError(f"the batch cost is {batch_cost!r}")
        result["batch"] = {"cost": batch_cost, "seconds": time.perf_counter() - t0}
    except Exception as exc:  # report, carry on with the streaming runs
        result["batch"] = fail("batch k-means", exc)
        batch_cost = None

    for name in algorithms:
        try:
            row = _stream(X, name, n_clusters, query_every, batch_size, seed, progress)
        except Exception as exc:  # report, carry on with the next algorithm
            result["algorithms"][name] = fail(f"algorithm {name!r}", exc)
            continue
        if batch_cost is None:
            ratio = None
        elif batch_cost > 0:
            ratio = row["cost"] / batch_cost
        else:  # every point is a center: any exact solution is as good
            ratio = 1.0 if row["cost"] == 0 else None
        row["cost_ratio"] = ratio
        result["algorithms"][name] = row

    if out is not None:
        out.write(format_table(result, stream=out))
        out.flush()
    return result


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
    """Render a :func:`run_demo` result as a plain-text table."""
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
        f"{'algorithm':<11}{'cost/batch':>11}{'update ' + mu + 's/pt':>16}"
        f"{'query ms':>11}{'queries':>9}{'memory B':>12}{'KiB':>9}"
    )
    lines.append(header)
    lines.append("-" * len(header))
    for name, row in result["algorithms"].items():
        if "error" in row:
            lines.append(f"{name:<11}FAILED: {row['error']}")
            continue
        lines.append(
            f"{name:<11}{_fmt(row['cost_ratio'], '.4f'):>11}"
            f"{_fmt(row['update_us_per_point'], '.2f'):>16}"
            f"{_fmt(row['query_ms_per_query'], '.3f'):>11}{row['n_queries']:>9}"
            f"{row['memory_bytes']:>12}{row['memory_kib']:>9.1f}"
        )
    lines.append("")
    lines.append(
        "cost/batch: final cost on all the data / batch k-means cost (lower is better, "
        "1 = as good)."
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
