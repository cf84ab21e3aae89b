"""``edgekm fit``: fit centroids on a data file larger than memory.

:func:`fit_file` streams the file in chunks (:mod:`edgekm._io`) through
:meth:`edgekm.StreamingKMeans.partial_fit`: the memory used is one chunk plus
the estimator's fixed structure (``memory_bytes``), whatever the size of the
file.  The centres are the estimator's answer on its coreset; the cluster
weights and the per-cluster p50/p95/p99 of the squared distance (the anomaly
thresholds of a centroid version) are computed from the same coreset and its
spread (:func:`edgekm.solve.cluster_statistics`, which also gives any other level
in the Python API; the version format carries these three).

:func:`write_centroids` writes the result as

- ``.npy``: the centres only, an array of shape ``(n_clusters, n_features)``;
- ``.json``: the centres, cluster weights, quantiles and the fit's figures;
- ``.msgpack``: an encoded :class:`edgekm.sync.wire.version.CentroidVersion`,
  digest included, as an aggregator publishes it.

``edgekm assign --version FILE`` reads the ``.msgpack`` and ``.json`` files
(:func:`edgekm.cli.assign.read_centroids_json` reads the ``.json``).
"""

import json
import os
import sys
import time

import numpy as np

from edgekm._io import open_chunks
from edgekm._progress import Progress
from edgekm._validation import check_params
from edgekm.streaming import StreamingKMeans
from edgekm.solve import cluster_statistics
from edgekm.cli._common import (PROG, add_input_options, add_json, add_output, add_seed,
                                check_output_path, input_options, positive_int, print_json)
from edgekm.exceptions import DataError, FitError, UsageError

__all__ = ["FitError", "fit_file", "write_centroids", "OUTPUT_SUFFIXES", "FIT_ALGORITHMS"]

#: the suffixes :func:`write_centroids` writes
OUTPUT_SUFFIXES = (".npy", ".json", ".msgpack")

#: algorithms that keep a coreset to solve on (sequential k-means keeps none)
FIT_ALGORITHMS = ("ct", "cc", "rcc", "onlinecc")

#: ``"kind"`` of the JSON documents of :func:`write_centroids`
JSON_KIND = "edgekm-centroids"


def _check_output(path):
    name = os.fspath(path)
    suffix = os.path.splitext(name)[1].lower()
    if suffix not in OUTPUT_SUFFIXES:
        raise FitError(f"the output {name!r} must end with one of {', '.join(OUTPUT_SUFFIXES)}")
    return suffix


def fit_file(path, n_clusters, *, coreset_size=None, algorithm="cc", chunk_rows=65536,
             random_state=0, progress=True, stdin=None, dtype=np.float32, columns=None,
             delimiter=None):
    """Fit ``n_clusters`` centres on a data file in bounded memory.

    Parameters
    ----------
    path : str or os.PathLike
        A ``.npy``, ``.csv``, ``.csv.gz`` or ``.parquet`` file, or ``"-"``
        for CSV lines on standard input.
    n_clusters : int
        k.
    coreset_size : int or None, default=None
        m, the points per bucket (None: the estimator's default).
    algorithm : {"ct", "cc", "rcc", "onlinecc"}, default="cc"
    chunk_rows : int, default=65536
        Rows read and given to ``partial_fit`` at a time.
    random_state : int or None, default=0
    progress : bool, default=True
        A progress bar on stderr (only when it is a terminal).
    stdin : text file, default=None
        What ``"-"`` reads.
    dtype : {numpy.float32, numpy.float64}, default=numpy.float32
        The estimator's storage type, and the dtype chunks are read in (one
        chunk is ``chunk_rows * n_features * itemsize`` bytes).  Data far from
        zero (clusters 0.5 apart at an offset of 1e7) needs float64 here:
        float32 chunks are rounded before the model sees them.
    columns, delimiter : default=None
        The columns to read and the CSV delimiter (:func:`edgekm._io.open_chunks`).

    Returns
    -------
    result : dict
        ``centers`` (ndarray of shape (n_clusters, n_features)),
        ``cluster_weights`` (ndarray of shape (n_clusters,)), ``quantiles``
        (ndarray of shape (n_clusters, 3), p50/p95/p99 of the squared
        distance, from the coreset's spread, each at least a positive floor), and the JSON-ready figures ``input``, ``n_samples``,
        ``n_features``, ``n_clusters``, ``algorithm``, ``coreset_size``,
        ``chunk_rows``, ``largest_chunk_bytes``, ``memory_bytes`` (the
        estimator's fixed structure), ``coreset_points``, ``inertia`` (cost on
        the coreset), ``skipped_columns`` (the non-numeric columns left out)
        and ``seconds``.

    Raises
    ------
    edgekm._io.DataError
        An unreadable or malformed file.
    FitError
        A bad parameter, or fewer points than ``n_clusters``.
    """
    if algorithm not in FIT_ALGORITHMS:
        raise FitError(f"algorithm must be one of {', '.join(FIT_ALGORITHMS)}, got {algorithm!r}")
    start = time.perf_counter()
    reader = open_chunks(path, chunk_rows, dtype, stdin=stdin, columns=columns,
                         delimiter=delimiter)
    est = StreamingKMeans(n_clusters, algorithm=algorithm, coreset_size=coreset_size,
                          dtype=dtype, random_state=random_state)
    try:
        cfg = check_params(est.get_params())     # before reading a byte of a large file
    except (TypeError, ValueError) as exc:
        raise FitError(str(exc)) from None
    n_samples = 0
    largest = 0
    with Progress(reader.total or 0, f"fit ({reader.unit})", enabled=progress) as bar:
        for X, advance in reader:
            est.partial_fit(X)                  # X is finite and of a fixed width
            n_samples += X.shape[0]
            largest = max(largest, X.nbytes)
            bar.update(advance)
    if n_samples < n_clusters:
        raise FitError(f"{reader.name} has {n_samples} points, fewer than k={n_clusters}")
    centers = np.ascontiguousarray(est.cluster_centers_)
    inertia = est.inertia_
    coreset = est.coreset()
    weights, quantiles = cluster_statistics(coreset, centers)
    return {
        "input": reader.name,
        "n_samples": n_samples,
        "n_features": int(centers.shape[1]),
        "n_clusters": int(n_clusters),
        "algorithm": algorithm,
        "coreset_size": int(cfg["coreset_size"]),
        "dtype": np.dtype(cfg["dtype"]).name,
        "chunk_rows": chunk_rows,
        "largest_chunk_bytes": largest,
        "memory_bytes": est.memory_bytes,
        "coreset_points": len(coreset),
        "inertia": float(inertia),
        "skipped_columns": list(reader.skipped),
        "seconds": time.perf_counter() - start,
        "centers": centers,
        "cluster_weights": weights,
        "quantiles": quantiles,
    }


def write_centroids(result, path, *, model="offline"):
    """Write the result of :func:`fit_file` to ``path``; the suffix selects the format.

    Parameters
    ----------
    result : dict
        From :func:`fit_file`.
    path : str or os.PathLike
        Ends with ``.npy``, ``.json`` or ``.msgpack``.
    model : str, default="offline"
        The model name recorded in a ``.json`` or ``.msgpack`` file.

    Returns
    -------
    digest : str or None
        The SHA-256 of a ``.msgpack`` version's payload; None otherwise.
    """
    suffix = _check_output(path)
    from edgekm.sync.wire.frame import FrameError, check_id

    try:
        check_id(model, "model")
    except FrameError as exc:
        raise FitError(str(exc)) from None
    centers = result["centers"]
    name = os.fspath(path)
    tmp = name + ".tmp"
    digest = None
    if suffix == ".npy":
        with open(tmp, "wb") as f:
            np.save(f, centers)
    else:
        version = _as_version(result, model)
        if suffix == ".msgpack":
            from edgekm.sync.wire.version import encode_version

            body, digest = encode_version(version)
        else:
            doc = {"kind": JSON_KIND, "model": model, "dtype": centers.dtype.name,
                   "centers": centers.tolist(),
                   "cluster_weights": version.cluster_weights.tolist(),
                   "quantiles": version.quantiles.tolist(),
                   "training_weight": version.training_weight, "cost": version.cost,
                   "created": version.created,
                   **{k: result[k] for k in ("input", "n_samples", "algorithm",
                                             "coreset_size")}}
            body = (json.dumps(doc, indent=1, allow_nan=False) + "\n").encode("utf-8")
        with open(tmp, "wb") as f:
            f.write(body)
    os.replace(tmp, name)
    return digest


def _as_version(result, model, created=None):
    from edgekm.sync.wire.version import CentroidVersion

    return CentroidVersion(
        model=model, version=1, parent=None,
        created=time.time() if created is None else float(created),
        centers=result["centers"], cluster_weights=np.asarray(result["cluster_weights"]),
        quantiles=np.asarray(result["quantiles"]),
        training_weight=float(result["n_samples"]), cost=float(result["inertia"]))


# ---------------------------------------------------------------- the command


def add_parser(subparsers):
    p = subparsers.add_parser(
        "fit",
        help="fit centroids on a large file in bounded memory",
        description=(
            "Stream a .npy (memory-mapped), .csv, .csv.gz or .parquet file, or CSV lines on "
            "standard input (-), in chunks through StreamingKMeans.partial_fit: memory is one "
            "chunk plus the estimator's fixed structure, whatever the size of the file. "
            "Non-numeric columns (a text timestamp) are skipped and named; --columns chooses. "
            "Write the centres to --output: .npy (the centres only), .json (centres, cluster "
            "weights, anomaly quantiles) or .msgpack (a centroid version document). "
            "'edgekm assign --version' reads the .json and .msgpack files."
        ),
    )
    p.add_argument("input", metavar="INPUT",
                   help="a .npy, .csv, .csv.gz or .parquet file, or - for standard input")
    p.add_argument("--k", type=positive_int, required=True, help="number of clusters")
    p.add_argument("--coreset-size", type=positive_int, metavar="M",
                   help="points per bucket (default 40 k)")
    p.add_argument("--algorithm", choices=FIT_ALGORITHMS, default="cc",
                   help="the streaming algorithm (default cc)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="the model's storage type and the chunks' (default float32; "
                        "float64 for data far from zero, e.g. offsets of 1e7)")
    p.add_argument("--chunk-rows", type=positive_int, default=65536, metavar="N",
                   help="rows read and fitted at a time (default 65536)")
    add_seed(p)
    p.add_argument("--model", default="offline", metavar="M",
                   help="model name recorded in a .json or .msgpack output (default offline)")
    add_output(p, "where to write the centres: .npy, .json or .msgpack", required=True)
    add_input_options(p)
    add_json(p, "a summary (n_samples, seconds, inertia, output)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler=run)


def run(args):
    try:
        _check_output(args.output)
        check_output_path(args.output, FitError)
        result = fit_file(args.input, args.k, coreset_size=args.coreset_size,
                          algorithm=args.algorithm, chunk_rows=args.chunk_rows,
                          random_state=args.seed, progress=not args.no_progress,
                          dtype=np.dtype(args.dtype).type, **input_options(args))
        digest = write_centroids(result, args.output, model=args.model)
    except (DataError, FitError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write {args.output!r}: {exc.strerror or exc}") from None
    summary = {k: v for k, v in result.items()
               if k not in ("centers", "cluster_weights", "quantiles")}
    summary.update(output=args.output, model=args.model, digest=digest)
    if result["skipped_columns"]:
        print(f"{PROG}: fit: skipped non-numeric column(s) "
              f"{', '.join(result['skipped_columns'])}", file=sys.stderr)
    if args.json:
        print_json(summary, args)
    else:
        print(f"fitted k={args.k} on {result['n_samples']} points x {result['n_features']} "
              f"features in {result['seconds']:.2f} s (inertia on the coreset "
              f"{result['inertia']:.6g}; fixed memory {result['memory_bytes']} bytes, chunks "
              f"of at most {result['largest_chunk_bytes']} bytes) -> {args.output}")
    return 0
