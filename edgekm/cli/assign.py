"""``edgekm assign``: label the points of a file with a centroid version, offline."""

import json
import os
import sys
import time

import numpy as np

from edgekm.cli._common import (add_input_options, add_json, add_output, check_output_path,
                               chosen_version, note_skipped, open_aggregator, open_input,
                               positive_int, print_json)
from edgekm.cli.fit import JSON_KIND, _as_version
from edgekm.exceptions import DataError, UsageError, VersionError

__all__ = ["read_centroids_json"]


def add_parser(subparsers):
    p = subparsers.add_parser(
        "assign",
        help="assign the points of a file to a centroid version (offline)",
        description=(
            "Assign each row of a .npy, .csv, .csv.gz or .parquet file (or - for CSV lines on "
            "standard input) to its nearest centre of a centroid version and write a CSV with "
            "the columns label, sqdist (squared distance), score (anomaly score: sqdist over "
            "the cluster's 99th percentile) and version. The version is a file: an encoded "
            "version document (as served by the aggregator, digest checked) or the .msgpack "
            "or .json written by 'edgekm fit' or 'edgekm versions export'; or it is read from "
            "an aggregator database with --db and --model (the active version unless "
            "--version-id). The CSV goes to --output, or to standard output without it. The "
            "input is read in chunks of --batch-size rows."
        ),
    )
    p.add_argument("--version", dest="version_file", metavar="FILE",
                   help="a version file: .msgpack (version document) or .json (edgekm fit)")
    p.add_argument("--db", metavar="PATH", help="read the version from this aggregator database")
    p.add_argument("--model", metavar="M", help="the model (with --db)")
    p.add_argument("--version-id", type=positive_int, metavar="V",
                   help="the version id (with --db; default: the active version)")
    p.add_argument("input", metavar="INPUT",
                   help="a .npy, .csv, .csv.gz or .parquet file, or - for standard input")
    add_output(p, "the CSV to write", default_help="default: standard output")
    add_input_options(p)
    p.add_argument("--batch-size", type=positive_int, default=65536, metavar="N",
                   help="rows read, assigned and written at a time (default 65536)")
    add_json(p, "a summary")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler=run)


def _read_version_file(path):
    from edgekm.sync.wire.version import decode_version

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    if data.startswith(b"\x93NUMPY"):
        raise UsageError(f"{path!r} is a .npy array of centres only; assign needs a version "
                         "(write one with 'edgekm fit --output FILE.msgpack' or FILE.json)")
    try:
        if data.lstrip()[:1] == b"{":
            return read_centroids_json(data)
        return decode_version(data)
    except VersionError as exc:
        raise UsageError(f"{path!r} is not a valid version: {exc}") from None


def _load_version(args):
    by_flag = {name: s.source == "flag" for name, s in args.settings.items()}
    if args.version_file is not None:
        # A database from the environment or a file does not compete with a --version flag.
        if args.db is not None and (by_flag["db"] or not by_flag["version_file"]):
            raise UsageError("give either --version FILE or --db with --model")
        return _read_version_file(args.version_file)
    if args.db is None or args.model is None:
        raise UsageError("give --version FILE, or --db PATH --model M [--version-id V]")
    with open_aggregator(args.db) as agg:
        version = chosen_version(agg, args.model, args.version_id)
        try:
            return agg.version(args.model, version)
        except (KeyError, LookupError, ValueError) as exc:
            raise UsageError(f"no version {version} of {args.model!r}: {exc}") from None


def read_centroids_json(data):
    """A :class:`~edgekm.sync.wire.version.CentroidVersion` from the JSON of
    :func:`edgekm.cli.fit.write_centroids`.

    Raises
    ------
    edgekm.sync.wire.version.VersionError
        Not such a document, or values that a version refuses.
    """
    from edgekm.sync.wire.version import decode_version, encode_version

    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise VersionError(f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("kind") != JSON_KIND:
        raise VersionError(f"not an {JSON_KIND} JSON document (written by edgekm fit)")
    try:
        dtype = np.dtype(doc["dtype"])
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype {dtype} is not float32 or float64")
        centers = np.array(doc["centers"], dtype=dtype)
        result = {"centers": centers, "cluster_weights": np.array(doc["cluster_weights"], float),
                  "quantiles": np.array(doc["quantiles"], float),
                  "n_samples": float(doc["training_weight"]), "inertia": float(doc["cost"])}
        if centers.ndim != 2:
            raise ValueError("centers must be a list of rows")
        version = _as_version(result, doc["model"], doc["created"])
        body, _ = encode_version(version)     # one validator for every source
    except VersionError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise VersionError(f"bad {JSON_KIND} document: {exc!r:.200}") from None
    return decode_version(body)


class _Stdout:
    """Standard output as the CSV file (left open: it is not ours to close)."""

    def __enter__(self):
        return sys.stdout

    def __exit__(self, *exc):
        sys.stdout.flush()

    def write(self, text):
        sys.stdout.write(text)

    def writelines(self, lines):
        sys.stdout.writelines(lines)


def _open_output(path):
    """The temporary file that becomes ``path`` once every row is written: (file, its name).

    Without ``path``, standard output (and no temporary file)."""
    if path is None:
        return _Stdout(), None
    check_output_path(path)
    tmp = path + ".tmp"
    try:
        return open(tmp, "w", encoding="ascii", newline=""), tmp
    except OSError as exc:
        raise UsageError(f"cannot write {path!r}: {exc.strerror or exc}") from None


def _assign_to_csv(version, reader, out, progress):
    """Write one CSV row per point of ``reader``; returns (points, counts, anomalies, seconds)."""
    from edgekm import Assigner
    from edgekm._progress import Progress

    assigner = Assigner(version)
    counts = np.zeros(version.n_clusters, dtype=np.int64)
    anomalies = 0
    n = 0
    assign_seconds = 0.0
    with out, Progress(reader.total or 0, f"assign ({reader.unit})", enabled=progress) as bar:
        out.write("label,sqdist,score,version\n")
        for X, advance in reader:
            if X.shape[1] != version.n_features:
                raise UsageError(f"{reader.name} has {X.shape[1]} columns; version "
                                 f"{version.version} has {version.n_features} features")
            t0 = time.perf_counter()
            r = assigner.assign(X)
            assign_seconds += time.perf_counter() - t0
            counts += np.bincount(r.labels, minlength=version.n_clusters)
            anomalies += int((r.scores > 1.0).sum())
            out.writelines(f"{lab},{d!r},{s!r},{r.version}\n" for lab, d, s in
                           zip(r.labels.tolist(), r.distances.tolist(), r.scores.tolist()))
            n += X.shape[0]
            bar.update(advance)
    return n, counts, anomalies, assign_seconds


def run(args):
    version = _load_version(args)
    reader = open_input(args.input, args.batch_size, version.centers.dtype.type, args)
    start = time.perf_counter()
    out, tmp = _open_output(args.output)
    try:
        n, counts, anomalies, assign_seconds = _assign_to_csv(version, reader, out,
                                                              not args.no_progress)
        if tmp is not None:
            os.replace(tmp, args.output)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    note_skipped(reader)
    summary = {"input": args.input, "output": args.output, "model": version.model,
               "version": version.version, "digest": version.digest, "n_points": int(n),
               "n_clusters": version.n_clusters, "counts": counts.tolist(),
               "anomalies": anomalies, "assign_seconds": assign_seconds,
               "skipped_columns": list(reader.skipped),
               "seconds": time.perf_counter() - start}
    # with the CSV on standard output, the summary goes to stderr
    stream = sys.stdout if args.output is not None else sys.stderr
    if args.json:
        print_json(summary, args, stream=stream)
    else:
        print(f"assigned {n} points to version {version.version} of {version.model!r} "
              f"({anomalies} beyond their cluster's p99) -> {args.output or 'standard output'}",
              file=stream)
    return 0
