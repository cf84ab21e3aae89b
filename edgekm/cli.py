"""The ``edgekm`` command line.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its
arguments and sets ``handler``, a function ``handler(args) -> int``.  To add a
subcommand, write both and list the ``_add_`` function in ``_SUBCOMMANDS``.

Exit codes: 0 success, 1 a failure inside edgekm, 2 a usage error (bad
argument, unreadable data file), reported as ``edgekm: error: ...`` with no
traceback, 130 interrupted.
"""

import argparse
import sys

__all__ = ["main", "UsageError"]

PROG = "edgekm"


class UsageError(Exception):
    """A mistake in the command line or its input files; exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        raise UsageError(message)


def _int_at_least(minimum, what="an integer", bound=None):
    """An argparse type: an int >= minimum, with the messages the CLI uses."""
    bound = bound or f"must be at least {minimum}"

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{bound}, got {value}")
        return value
    return parse


_positive_int = _int_at_least(1)
_seed = _int_at_least(0, bound="must be >= 0")


# ---------------------------------------------------------------- demo


def _add_demo(subparsers):
    p = subparsers.add_parser(
        "demo",
        help="stream a data set through every algorithm and compare with batch k-means",
        description=(
            "Stream a data set (by default the bundled Shuttle data, shuffled) through each "
            "streaming algorithm, querying the centers every N points, and print the final "
            "cost relative to batch k-means, the update time per point, the time per query "
            "and the memory used."
        ),
    )
    p.add_argument(
        "--data",
        metavar="FILE",
        help="a .npy, .csv or .csv.gz file of shape (n_samples, n_features); "
        "a CSV header line is detected and skipped (default: the bundled Shuttle data)",
    )
    p.add_argument("--k", type=_positive_int, default=10, help="number of clusters (default 10)")
    p.add_argument(
        "--algorithms",
        default="ct,cc,rcc,onlinecc,sequential",
        metavar="LIST",
        help="comma-separated subset of ct,cc,rcc,onlinecc,sequential (default: all)",
    )
    p.add_argument(
        "--query-every",
        type=_positive_int,
        default=100,
        metavar="N",
        help="read the centers after every N points (default 100, the paper's q)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1024,
        metavar="N",
        help="points per partial_fit call (default 1024)",
    )
    p.add_argument(
        "--limit", type=_positive_int, metavar="N", help="use only the first N points"
    )
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument(
        "--shuffle",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="shuffle the rows before streaming (default: shuffle the bundled data, "
        "keep a file's order)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args):
    # Imported here so that `edgekm --help` works even if the core fails to import.
    from edgekm import demo

    try:
        result = demo.run_demo(
            data=args.data,
            n_clusters=args.k,
            algorithms=args.algorithms,
            query_every=args.query_every,
            batch_size=args.batch_size,
            seed=args.seed,
            limit=args.limit,
            progress=not args.no_progress,
            out=None if args.json else sys.stdout,
            shuffle=args.shuffle,
        )
    except demo.DemoInputError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(demo.to_json(result))
    return 0 if result["ok"] else 1


# ---------------------------------------------------------------- aggregator


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def _port(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535, got {value}")
    return value


def _add_db(p):
    p.add_argument("--db", required=True, metavar="PATH",
                   help="the aggregator's SQLite database (created if missing)")


def _open_aggregator(path):
    """An Aggregator for an administration command; a bad database is a usage error."""
    import sqlite3

    from edgekm.sync.aggregator import Aggregator
    from edgekm.sync.store import SchemaError

    try:
        return Aggregator(path)
    except (sqlite3.Error, SchemaError, OSError) as exc:
        raise UsageError(f"cannot open the database {path!r}: {exc}") from None


def _print_json(value):
    import json

    print(json.dumps(value, indent=2, sort_keys=True))


def _add_serve(subparsers):
    p = subparsers.add_parser(
        "serve",
        help="run the cloud aggregator (HTTP API v1) until SIGTERM",
        description=(
            "Serve the aggregator's HTTP API with uvicorn: devices POST signed coreset frames "
            "to /v1/models/MODEL/frames; GET /healthz reports health. Runs until SIGTERM or "
            "SIGINT, then finishes the requests in flight, closes the database and exits 0. "
            "Needs the 'server' extra (pip install 'edgekm[server]')."
        ),
    )
    _add_db(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=_port, default=8750, help="port to listen on (default 8750)")
    p.add_argument("--admin-token", metavar="TOKEN",
                   help="bearer token of the admin endpoints (fit, model info); default: the "
                   "EDGEKM_ADMIN_TOKEN environment variable, which keeps it out of the process "
                   "list; without a token those endpoints answer 403")
    p.add_argument("--window-seconds", type=_positive_float, default=3600.0, metavar="S",
                   help="length of a time window, for models created from now on (default 3600)")
    p.add_argument("--coreset-size", type=_positive_int, default=200, metavar="M",
                   help="points per bucket of the aggregate (default 200)")
    p.add_argument("--merge-degree", type=_positive_int, default=2, metavar="R",
                   help="buckets merged at once in the aggregate's trees (default 2)")
    p.add_argument("--retain-windows", type=_positive_int, metavar="N",
                   help="keep the per-window aggregates of only the N most recent windows "
                   "(default: keep all; the all-time aggregate is always kept)")
    p.add_argument("--durability", choices=("full", "normal"), default="full",
                   help="SQLite synchronous setting: full survives power loss (default full)")
    p.add_argument("--no-auto-create-models", action="store_true",
                   help="refuse frames for models not registered with 'edgekm models add'")
    p.add_argument("--max-concurrency", type=_positive_int, default=64, metavar="N",
                   help="requests in progress at once; more get 503 (default 64)")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn log level (default info)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(handler=_cmd_serve)


def _cmd_serve(args):
    if args.merge_degree < 2:
        raise UsageError("--merge-degree must be at least 2")
    try:
        from edgekm.sync.server import serve
    except ImportError as exc:
        raise UsageError(f"the server needs the 'server' extra "
                         f"(pip install 'edgekm[server]'): {exc}") from None
    import sqlite3

    from edgekm.sync.store import SchemaError

    try:
        return serve(args.db, args.host, args.port, args.admin_token, log_level=args.log_level,
                     access_log=args.access_log, max_concurrency=args.max_concurrency,
                     coreset_size=args.coreset_size, merge_degree=args.merge_degree,
                     window_seconds=args.window_seconds, retain_windows=args.retain_windows,
                     durability=args.durability,
                     auto_create_models=not args.no_auto_create_models)
    except (sqlite3.Error, SchemaError) as exc:
        raise UsageError(f"cannot open the database {args.db!r}: {exc}") from None


def _add_devices(subparsers):
    p = subparsers.add_parser(
        "devices",
        help="register, list and revoke device keys",
        description="Manage the devices allowed to upload frames to the aggregator.",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    add = sub.add_parser("add", help="register a device and print its secret key",
                         description="Register a device and print its new secret key (hex). "
                         "The key is shown once; give it to the device.")
    add.add_argument("device_id", metavar="DEVICE_ID")
    lst = sub.add_parser("list", help="list the devices (never their keys)")
    rev = sub.add_parser("revoke", help="revoke a device (kept for audit)",
                         description="Revoke a device: its requests get 403 from now on. "
                         "The device stays listed, with its revocation time.")
    rev.add_argument("device_id", metavar="DEVICE_ID")
    for q in (add, lst, rev):
        _add_db(q)
        q.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_cmd_devices)


def _cmd_devices(args):
    from edgekm.sync.aggregator import DeviceExistsError, UnknownDeviceError
    from edgekm.sync.frame import FrameError

    with _open_aggregator(args.db) as agg:
        try:
            if args.action == "add":
                key = agg.add_device(args.device_id)
                if args.json:
                    _print_json({"device_id": args.device_id, "key": key})
                else:
                    print(f"device {args.device_id} added; its key (shown once):\n{key}")
            elif args.action == "revoke":
                agg.revoke_device(args.device_id)
                if args.json:
                    _print_json({"device_id": args.device_id, "revoked": True})
                else:
                    print(f"device {args.device_id} revoked")
            else:
                devices = agg.list_devices()
                if args.json:
                    _print_json(devices)
                else:
                    _print_devices(devices)
        except (DeviceExistsError, UnknownDeviceError, FrameError) as exc:
            raise UsageError(str(exc)) from None
    return 0


def _when(timestamp):
    import datetime

    if timestamp is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _print_devices(devices):
    print(f"{'device':<24} {'status':<8} {'frames':>8}  {'created':<20} {'last frame':<20}")
    for d in devices:
        status = "revoked" if d["revoked"] is not None else "active"
        print(f"{d['device_id']:<24} {status:<8} {d['frames']:>8}  {_when(d['created']):<20} "
              f"{_when(d['last_received']):<20}")


def _add_models(subparsers):
    p = subparsers.add_parser(
        "models",
        help="register and list models",
        description="Manage the models of the aggregator (needed when the server runs with "
        "--no-auto-create-models).",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    add = sub.add_parser("add", help="register a model")
    add.add_argument("model", metavar="MODEL")
    add.add_argument("--n-features", type=_positive_int, required=True, metavar="D",
                     help="number of features of the model's points")
    add.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                     help="storage type of the aggregate's points (default float32)")
    add.add_argument("--window-seconds", type=_positive_float, metavar="S",
                     help="length of the model's time windows (default 3600)")
    lst = sub.add_parser("list", help="list the models with their weights and frame counts")
    for q in (add, lst):
        _add_db(q)
        q.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_cmd_models)


def _cmd_models(args):
    from edgekm.sync.frame import FrameError

    with _open_aggregator(args.db) as agg:
        try:
            if args.action == "add":
                agg.add_model(args.model, args.n_features, dtype=args.dtype,
                              window_seconds=args.window_seconds)
                info = agg.model_info(args.model, with_windows=False)
                if args.json:
                    _print_json(info)
                else:
                    print(f"model {args.model} ({info['n_features']} features, "
                          f"{info['dtype']}) registered")
            else:
                models = agg.list_models()
                if args.json:
                    _print_json(models)
                else:
                    print(f"{'model':<24} {'features':>8} {'frames':>10} {'devices':>8} "
                          f"{'total weight':>16}")
                    for m in models:
                        print(f"{m['model']:<24} {m['n_features']:>8} {m['frames']:>10} "
                              f"{m['devices']:>8} {m['total_weight']:>16.0f}")
        except (ValueError, FrameError) as exc:
            raise UsageError(str(exc)) from None
    return 0


_version_id = _int_at_least(1, "a version id", "a version id is at least 1")


def _pin_version(text):
    return None if text.lower() == "none" else _version_id(text)


def _percent(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"must be in (0, 100], got {text}")
    return value


def _add_versions(subparsers):
    p = subparsers.add_parser(
        "versions",
        help="publish centroid versions and roll them out (canary, promote, rollback, pin)",
        description="Publish versioned centroids fitted on a model's aggregate and control "
        "which devices get which version. Every change is recorded in the event log "
        "('versions events').",
    )
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser, required=True)
    lst = sub.add_parser("list", help="list the versions with their status")
    pub = sub.add_parser("publish", help="fit centres on the aggregate and store a new version",
                         description="Fit centres on the aggregate (all time, or the last N "
                         "windows) and store an immutable version whose labels are matched to "
                         "the active version's. The first version becomes active; later ones "
                         "start as candidates.")
    pub.add_argument("--k", type=_positive_int, required=True, help="number of clusters")
    pub.add_argument("--windows", type=_positive_int, metavar="N",
                     help="fit on the last N time windows (default: all time)")
    pub.add_argument("--n-init", type=_positive_int, default=10, metavar="N",
                     help="k-means restarts (default 10)")
    pub.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    can = sub.add_parser("canary", help="send a version to a percentage of the devices")
    can.add_argument("version", type=_version_id, metavar="V")
    can.add_argument("--percent", type=_percent, required=True, metavar="P",
                     help="percentage of devices, in (0, 100]; devices stay in as it grows")
    pro = sub.add_parser("promote", help="make a version active (the previous one is retired)")
    pro.add_argument("version", type=_version_id, metavar="V")
    rb = sub.add_parser("rollback", help="retire the active version and restore the previous one")
    pin = sub.add_parser("pin", help="pin a device to a version ('none' unpins it)")
    pin.add_argument("device_id", metavar="DEVICE")
    pin.add_argument("version", type=_pin_version, metavar="V")
    drift = sub.add_parser("drift", help="the drift report: centre movement, cluster sizes, "
                           "device drift, compression")
    ev = sub.add_parser("events", help="the event log of the versions")
    for q in (lst, pub, can, pro, rb, pin, drift, ev):
        _add_db(q)
        q.add_argument("--model", required=True, metavar="M", help="the model")
        q.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_cmd_versions)


def _cmd_versions(args):
    from edgekm.exceptions import EdgekmError, NotFittedError
    from edgekm.sync.aggregator import UnknownDeviceError, UnknownModelError
    from edgekm.sync.frame import FrameError
    from edgekm.sync.versions import RolloutError, UnknownVersionError

    with _open_aggregator(args.db) as agg:
        try:
            result = _run_versions(agg, args)
        except (UnknownModelError, UnknownVersionError, UnknownDeviceError, RolloutError,
                FrameError, NotFittedError) as exc:
            raise UsageError(str(exc)) from None
        except ValueError as exc:
            if isinstance(exc, EdgekmError):
                raise
            raise UsageError(str(exc)) from None
    if args.json:
        _print_json(result)
    else:
        _print_versions_result(args.action, result)
    return 0


def _run_versions(agg, args):
    model, action = args.model, args.action
    if action == "list":
        return {"model": model, **agg.rollout_state(model), "versions": agg.versions(model)}
    if action == "publish":
        v = agg.publish(model, args.k, args.windows, n_init=args.n_init,
                        random_state=args.seed, actor="cli")
        return [i for i in agg.versions(model) if i["version"] == v][0]
    if action == "canary":
        return agg.canary(model, args.version, args.percent, actor="cli")
    if action == "promote":
        return agg.promote(model, args.version, actor="cli")
    if action == "rollback":
        return agg.rollback(model, actor="cli")
    if action == "pin":
        return agg.pin(model, args.device_id, args.version, actor="cli")
    if action == "drift":
        return agg.drift(model)
    return agg.version_events(model)


def _print_versions_result(action, result):
    if action == "list":
        print(f"{'version':>7} {'status':<10} {'k':>4} {'parent':>6} {'shift':>10} "
              f"{'cost':>12} {'created':<20}")
        for v in result["versions"]:
            status = v["status"] + (f" {v['canary_percent']:g}%" if v["status"] == "canary"
                                    else "")
            shift = "-" if v["shift"] is None else f"{v['shift']:.4g}"
            print(f"{v['version']:>7} {status:<10} {v['k']:>4} {v['parent'] or '-':>6} "
                  f"{shift:>10} {v['cost']:>12.5g} {_when(v['created']):<20}")
        for device, v in result["pins"].items():
            print(f"pinned: {device} -> {v}")
    elif action == "publish":
        print(f"version {result['version']} published ({result['status']}, k={result['k']}, "
              f"cost {result['cost']:.5g})")
    elif action == "canary":
        print(f"version {result['version']} is the canary for {result['percent']:g}% of devices")
    elif action in ("promote", "rollback"):
        retired = result["retired"]
        print(f"version {result['active']} is active"
              + (f"; version {retired} retired" if retired is not None else ""))
    elif action == "pin":
        if result["version"] is None:
            print(f"device {result['device']} unpinned")
        else:
            print(f"device {result['device']} pinned to version {result['version']}")
    elif action == "drift":
        d = result["devices"]
        print(f"model {result['model']}: active {result['active']}, canary {result['canary']}")
        for v in result["versions"]:
            print(f"  version {v['version']} ({v['status']}): shift {v['shift']}, share change "
                  f"{v['share_change']}, empty {v['empty_clusters']}, cost {v['cost']:.5g}")
        print(f"  devices reporting {d['reporting']}: mean drift {d['mean_drift_score']}, "
              f"max {d['max_drift_score']}, over {d['threshold']:g}: {d['over_threshold']}")
        print(f"  compression ratio {result['telemetry']['compression_ratio']}")
    else:
        for e in result:
            print(f"{_when(e['at'])} {e['actor']:<6} {e['action']:<9} v{e['version']} "
                  f"{e['old_status'] or '-'} -> {e['new_status'] or '-'} {e['detail'] or ''}")


# ---------------------------------------------------------------- assign


def _add_assign(subparsers):
    p = subparsers.add_parser(
        "assign",
        help="assign the points of a file to a centroid version (offline)",
        description=(
            "Assign each row of a .npy, .csv or .csv.gz file to its nearest centre of a "
            "centroid version and write a CSV with the columns label, sqdist (squared "
            "distance), score (anomaly score: sqdist over the cluster's 99th percentile) and "
            "version. The version is an encoded version document (as served by the "
            "aggregator, digest checked), or read from an aggregator database with --db."
        ),
    )
    p.add_argument("--version", dest="version_file", metavar="FILE",
                   help="an encoded version document")
    p.add_argument("--db", metavar="PATH", help="read the version from this aggregator database")
    p.add_argument("--model", metavar="M", help="the model (with --db)")
    p.add_argument("--version-id", type=_positive_int, metavar="V",
                   help="the version id (with --db)")
    p.add_argument("input", metavar="INPUT", help="a .npy, .csv or .csv.gz file")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the CSV to write")
    p.add_argument("--batch-size", type=_positive_int, default=65536, metavar="N",
                   help="rows assigned and written at a time (default 65536)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler=_cmd_assign)


def _load_version(args):
    from edgekm.sync.version import VersionError, decode_version

    if args.version_file is not None:
        if args.db is not None:
            raise UsageError("give either --version FILE or --db with --model and --version-id")
        try:
            with open(args.version_file, "rb") as fh:
                return decode_version(fh.read())
        except OSError as exc:
            raise UsageError(f"cannot read {args.version_file!r}: {exc}") from None
        except VersionError as exc:
            raise UsageError(f"{args.version_file!r} is not a valid version: {exc}") from None
    if args.db is None or args.model is None or args.version_id is None:
        raise UsageError("give --version FILE, or --db PATH --model M --version-id V")
    with _open_aggregator(args.db) as agg:
        if not hasattr(agg, "version"):
            raise UsageError("this aggregator has no versions; use --version FILE")
        try:
            return agg.version(args.model, args.version_id)
        except (KeyError, LookupError, ValueError) as exc:
            raise UsageError(f"no version {args.version_id} of {args.model!r}: {exc}") from None


def _cmd_assign(args):
    import time

    import numpy as np

    from edgekm import Assigner
    from edgekm._progress import Progress
    from edgekm.datasets import load_array

    version = _load_version(args)
    try:
        X = load_array(args.input, dtype=version.centers.dtype.type)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read {args.input!r}: {exc}") from None
    if X.shape[1] != version.n_features:
        raise UsageError(f"{args.input!r} has {X.shape[1]} columns; version "
                         f"{version.version} has {version.n_features} features")
    assigner = Assigner(version)
    n = X.shape[0]
    counts = np.zeros(version.n_clusters, dtype=np.int64)
    anomalies = 0
    start = time.perf_counter()
    assign_seconds = 0.0
    try:
        out = open(args.output, "w", encoding="ascii", newline="")
    except OSError as exc:
        raise UsageError(f"cannot write {args.output!r}: {exc}") from None
    with out, Progress(n, "assign", enabled=not args.no_progress) as bar:
        out.write("label,sqdist,score,version\n")
        for a in range(0, n, args.batch_size):
            t0 = time.perf_counter()
            r = assigner.assign(X[a:a + args.batch_size])
            assign_seconds += time.perf_counter() - t0
            counts += np.bincount(r.labels, minlength=version.n_clusters)
            anomalies += int((r.scores > 1.0).sum())
            out.writelines(f"{lab},{d!r},{s!r},{r.version}\n" for lab, d, s in
                           zip(r.labels.tolist(), r.distances.tolist(), r.scores.tolist()))
            bar.update(len(r.labels))
    summary = {"input": args.input, "output": args.output, "model": version.model,
               "version": version.version, "digest": version.digest, "n_points": int(n),
               "n_clusters": version.n_clusters, "counts": counts.tolist(),
               "anomalies": anomalies, "assign_seconds": assign_seconds,
               "seconds": time.perf_counter() - start}
    if args.json:
        _print_json(summary)
    else:
        print(f"assigned {n} points to version {version.version} of {version.model!r} "
              f"({anomalies} beyond their cluster's p99) -> {args.output}")
    return 0


_SUBCOMMANDS = (_add_demo, _add_serve, _add_devices, _add_models, _add_versions, _add_assign)


# ---------------------------------------------------------------- main


def _version():
    from importlib import metadata

    try:
        return metadata.version("edgekm")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def build_parser():
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog=PROG,
        description="Fixed-memory streaming k-means for edge devices.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv=None):
    """Run the ``edgekm`` command line; return the exit status.

    Parameters
    ----------
    argv : list of str or None, default=None
        The arguments after the program name; None reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        0 success, 1 failure, 2 usage error, 130 interrupted.
    """
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:  # --help and --version exit through argparse
            return exc.code if isinstance(exc.code, int) else 0
        if args.command is None:
            parser.print_usage(sys.stderr)
            raise UsageError("a command is required")
        return args.handler(args)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
