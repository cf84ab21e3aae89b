"""The ``edgekm`` command line.

Each subcommand is one ``_add_<name>(subparsers)`` function that declares its
arguments and sets ``handler``, a function ``handler(args) -> int``.  To add a
subcommand, write both and list the ``_add_`` function in ``_SUBCOMMANDS``.

Every option can also come from an environment variable ``EDGEKM_<OPTION>``
or a TOML file (``--config FILE`` or ``EDGEKM_CONFIG``); see
:mod:`edgekm.cli._config` for the rules and ``edgekm config COMMAND`` for what a
run would use.  Every command has ``--json``; its JSON objects carry
``"config"``, the configuration file used (or null).

Exit codes: 0 success, 1 a failure inside edgekm or of the work asked for
(an aggregator that does not acknowledge every frame, a failed demo run), 2 a
usage error (bad argument, setting or input file, unknown model or version),
reported as ``edgekm: error: ...`` with no traceback, 130 interrupted.  An
unexpected internal error exits 1 with a one-line message; ``EDGEKM_DEBUG=1``
adds the traceback.
"""

import argparse
import os
import sys

from edgekm.cli import _config
from edgekm.exceptions import UsageError

__all__ = ["main", "UsageError", "build_parser"]

PROG = "edgekm"


class Failure(Exception):
    """The work asked for did not succeed (exit status 1); the message says why."""


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


# ---------------------------------------------------------------- output


def _add_json(p, what="the result"):
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def _add_config(p):
    p.add_argument("--config", dest="config_file", metavar="FILE", default=argparse.SUPPRESS,
                   help=f"a TOML configuration file (default: ${_config.CONFIG_ENV})")


def _with_config(value, args):
    """Add ``"config"`` (the configuration file used, or None) to a JSON object."""
    if isinstance(value, dict) and "config" not in value:
        value = dict(value, config=getattr(args, "config_path", None))
    return value


def _json_ready(value):
    """Strict JSON values: non-finite floats become None, numpy values plain ones."""
    import math

    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):   # numpy
        return _json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _print_json(value, args=None, indent=2):
    import json

    print(json.dumps(_json_ready(_with_config(value, args)), indent=indent, sort_keys=True,
                     allow_nan=False), flush=True)


# ---------------------------------------------------------------- demo and bench


def _add_demo(subparsers):
    p = subparsers.add_parser(
        "demo",
        help="run a simulated fleet of devices against a real aggregator and report",
        description=(
            "Start an aggregator on a free local port, stream a data set (by default a "
            "generated drifting stream) through a fleet of device agents that sync coreset "
            "frames to it, publish and roll out centroid versions, and report the traffic, "
            "the cost against batch k-means and the drift. Exits 1 if a step failed."
        ),
    )
    p.add_argument("--data", metavar="FILE",
                   help="a .npy, .csv or .csv.gz file of shape (n_samples, n_features) "
                   "(default: a generated drifting stream)")
    p.add_argument("--devices", dest="n_devices", type=_positive_int, default=8, metavar="N",
                   help="devices in the fleet (default 8)")
    p.add_argument("--points", dest="n_points", type=_positive_int, metavar="N",
                   help="points streamed through the fleet in all (default: the generator's "
                   "default, or every row of --data)")
    p.add_argument("--k", type=_positive_int, default=8, help="number of clusters (default 8)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--report", metavar="OUT.html", help="also write an HTML report there")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep the aggregator's database and the devices' state in DIR "
                   "(new or empty; default: a temporary directory, removed at the end)")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None,
                   help="shuffle the rows before streaming (default: keep the stream order, "
                   "which is what shows drift)")
    _add_json(p, "the report")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler=_cmd_demo)


def _cmd_demo(args):
    try:
        from edgekm.demo import fleet
    except ImportError as exc:
        raise UsageError(f"the demo needs the 'server' extra "
                         f"(pip install 'edgekm[server]'): {exc}") from None
    try:
        result = fleet.run_fleet_demo(
            data=args.data, n_devices=args.n_devices, n_points=args.n_points,
            n_clusters=args.k, seed=args.seed, report=args.report,
            progress=not args.no_progress, out=None if args.json else sys.stdout,
            workdir=args.workdir, shuffle=args.shuffle)
    except fleet.FleetDemoError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        _print_json(result, args)
    if not result.get("ok"):
        failures = result.get("failures") or ["the demo did not succeed"]
        print(f"{PROG}: demo failed: {'; '.join(map(str, failures))}", file=sys.stderr)
        return 1
    return 0


def _add_bench(subparsers):
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
    p.add_argument("--k", type=_positive_int, default=10, help="number of clusters (default 10)")
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
    _add_json(p, "the results")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler=_cmd_bench)


def _cmd_bench(args):
    # Imported here so that `edgekm --help` works even if the core fails to import.
    from edgekm.cli import bench

    try:
        result = bench.run_bench(
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
    except bench.BenchInputError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(bench.to_json(_with_config(result, args)))
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

    from edgekm.sync.cloud.aggregator import Aggregator
    from edgekm.sync.cloud.database import SchemaError

    try:
        return Aggregator(path)
    except (sqlite3.Error, SchemaError, OSError) as exc:
        raise UsageError(f"cannot open the database {path!r}: {exc}") from None


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
    p.add_argument("--port", type=_port, default=8750,
                   help="port to listen on; 0 picks a free one (default 8750)")
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
    p.add_argument("--max-device-weight", type=_positive_float, metavar="W",
                   help="cap on the weight one device may add to a model per window "
                   "(default: no cap); see --weight-cap-policy")
    p.add_argument("--weight-cap-policy", choices=("reject", "clip"), default="reject",
                   help="over the cap: reject answers 429 until the window ends (422 for a "
                   "frame heavier than the cap), clip scales the frame down to the cap and "
                   "records the clipped weight (default reject)")
    p.add_argument("--publish-trim", type=_fraction, default=0.0, metavar="T",
                   help="publish with trimmed k-means, leaving out up to this fraction of the "
                   "weight farthest from the centres (0 <= T < 0.5; default 0, plain k-means)")
    p.add_argument("--compact-windows", type=_positive_int, default=168, metavar="N",
                   help="compaction merges the per-window aggregates older than the N most "
                   "recent windows into one (default 168)")
    p.add_argument("--dedup-seconds", type=_positive_float, default=7 * 86400.0, metavar="S",
                   help="per-frame dedup records older than this collapse into per-device "
                   "runs of sequence numbers (default 604800, a week)")
    p.add_argument("--compact-interval", type=_positive_float, default=600.0, metavar="S",
                   help="seconds between two compactions (default 600)")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn log level (default info)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--json", action="store_true",
                   help="print one JSON line {host, port, db, config} on stdout once the "
                   "server accepts connections")
    p.set_defaults(handler=_cmd_serve)


def _cmd_serve(args):
    if args.merge_degree < 2:
        raise UsageError("--merge-degree must be at least 2")
    try:
        from edgekm.sync.cloud.http import serve
    except ImportError as exc:
        raise UsageError(f"the server needs the 'server' extra "
                         f"(pip install 'edgekm[server]'): {exc}") from None
    import sqlite3

    from edgekm.sync.cloud.database import SchemaError

    port = args.port if args.port != 0 else _free_port(args.host)
    if args.json:
        _check_port_free(args.host, port)
        _announce_when_listening(args.host, port, args)
    try:
        return serve(args.db, args.host, port, args.admin_token, log_level=args.log_level,
                     access_log=args.access_log, max_concurrency=args.max_concurrency,
                     coreset_size=args.coreset_size, merge_degree=args.merge_degree,
                     window_seconds=args.window_seconds, retain_windows=args.retain_windows,
                     durability=args.durability,
                     auto_create_models=not args.no_auto_create_models,
                     compact_interval=args.compact_interval,
                     max_device_weight=args.max_device_weight,
                     weight_cap_policy=args.weight_cap_policy, publish_trim=args.publish_trim,
                     compact_windows=args.compact_windows, dedup_seconds=args.dedup_seconds)
    except (sqlite3.Error, SchemaError) as exc:
        raise UsageError(f"cannot open the database {args.db!r}: {exc}") from None
    except OSError as exc:               # e.g. the port is taken
        raise Failure(f"cannot serve on {args.host}:{port}: {exc}") from None


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"must be in [0, 0.5), got {value}")
    return value


def _free_port(host):
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family) as s:
            s.bind((host, 0))
            return s.getsockname()[1]
    except OSError as exc:
        raise UsageError(f"cannot listen on {host!r}: {exc}") from None


def _probe_host(host):
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


def _check_port_free(host, port):
    """Fail early if something already answers on the port (the announcement would lie)."""
    import socket

    try:
        with socket.create_connection((_probe_host(host), port), timeout=0.5):
            pass
    except OSError:
        return
    raise Failure(f"cannot serve on {host}:{port}: something already listens there")


def _announce_when_listening(host, port, args):
    """Print the JSON line of ``serve --json`` once ``host:port`` accepts connections."""
    import socket
    import threading
    import time

    probe = _probe_host(host)

    def wait():
        while True:
            try:
                with socket.create_connection((probe, port), timeout=1.0):
                    break
            except OSError:
                time.sleep(0.05)
        _print_json({"listening": True, "host": host, "port": port,
                     "url": f"http://{probe if ':' not in probe else f'[{probe}]'}:{port}",
                     "db": os.path.abspath(args.db)}, args, indent=None)

    threading.Thread(target=wait, name="edgekm-serve-announce", daemon=True).start()


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
    from edgekm.sync.cloud.aggregator import DeviceExistsError, UnknownDeviceError
    from edgekm.sync.wire.frame import FrameError

    with _open_aggregator(args.db) as agg:
        try:
            if args.action == "add":
                key = agg.add_device(args.device_id)
                if args.json:
                    _print_json({"device_id": args.device_id, "key": key}, args)
                else:
                    print(f"device {args.device_id} added; its key (shown once):\n{key}")
            elif args.action == "revoke":
                agg.revoke_device(args.device_id)
                if args.json:
                    _print_json({"device_id": args.device_id, "revoked": True}, args)
                else:
                    print(f"device {args.device_id} revoked")
            else:
                devices = agg.list_devices()
                if args.json:
                    _print_json(devices, args)
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
    from edgekm.sync.wire.frame import FrameError

    with _open_aggregator(args.db) as agg:
        try:
            if args.action == "add":
                agg.add_model(args.model, args.n_features, dtype=args.dtype,
                              window_seconds=args.window_seconds)
                info = agg.model_info(args.model, with_windows=False)
                if args.json:
                    _print_json(info, args)
                else:
                    print(f"model {args.model} ({info['n_features']} features, "
                          f"{info['dtype']}) registered")
            else:
                models = agg.list_models()
                if args.json:
                    _print_json(models, args)
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
        help="publish centroid versions and roll them out (canary, promote, rollback, abort, pin)",
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
    ab = sub.add_parser("abort", help="withdraw the canary (back to candidate); the active "
                        "version stays")
    pin = sub.add_parser("pin", help="pin a device to a version ('none' unpins it)")
    pin.add_argument("device_id", metavar="DEVICE")
    pin.add_argument("version", type=_pin_version, metavar="V")
    drift = sub.add_parser("drift", help="the drift report: centre movement, cluster sizes, "
                           "device drift, compression")
    ev = sub.add_parser("events", help="the event log of the versions")
    for q in (lst, pub, can, pro, rb, ab, pin, drift, ev):
        _add_db(q)
        q.add_argument("--model", required=True, metavar="M", help="the model")
        q.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(handler=_cmd_versions)


def _cmd_versions(args):
    from edgekm.exceptions import EdgekmError, NotFittedError
    from edgekm.sync.cloud.aggregator import UnknownDeviceError, UnknownModelError
    from edgekm.sync.wire.frame import FrameError
    from edgekm.sync.cloud.versions import RolloutError, UnknownVersionError

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
        _print_json(result, args)
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
    if action == "abort":
        return agg.abort_canary(model, actor="cli")
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
    elif action == "abort":
        active = result["active"]
        print(f"canary version {result['aborted']} withdrawn (candidate again); "
              + (f"version {active} is active" if active is not None else "no active version"))
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
            "Assign each row of a .npy, .csv, .csv.gz or .parquet file (or - for CSV lines on "
            "standard input) to its nearest centre of a centroid version and write a CSV with "
            "the columns label, sqdist (squared distance), score (anomaly score: sqdist over "
            "the cluster's 99th percentile) and version. The version is a file: an encoded "
            "version document (as served by the aggregator, digest checked) or the .msgpack "
            "or .json written by 'edgekm fit'; or it is read from an aggregator database "
            "with --db. The input is read in chunks of --batch-size rows."
        ),
    )
    p.add_argument("--version", dest="version_file", metavar="FILE",
                   help="a version file: .msgpack (version document) or .json (edgekm fit)")
    p.add_argument("--db", metavar="PATH", help="read the version from this aggregator database")
    p.add_argument("--model", metavar="M", help="the model (with --db)")
    p.add_argument("--version-id", type=_positive_int, metavar="V",
                   help="the version id (with --db)")
    p.add_argument("input", metavar="INPUT",
                   help="a .npy, .csv, .csv.gz or .parquet file, or - for standard input")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="the CSV to write")
    p.add_argument("--batch-size", type=_positive_int, default=65536, metavar="N",
                   help="rows read, assigned and written at a time (default 65536)")
    _add_json(p, "a summary")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler=_cmd_assign)


def _read_version_file(path):
    from ._offline import read_centroids_json
    from edgekm.sync.wire.version import VersionError, decode_version

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    if data.startswith(b"\x93NUMPY"):
        raise UsageError(f"{path!r} is a .npy array of centres only; assign needs a version "
                         "(write one with 'edgekm fit --out FILE.msgpack' or FILE.json)")
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
            raise UsageError("give either --version FILE or --db with --model and --version-id")
        return _read_version_file(args.version_file)
    if args.db is None or args.model is None or args.version_id is None:
        raise UsageError("give --version FILE, or --db PATH --model M --version-id V")
    with _open_aggregator(args.db) as agg:
        try:
            return agg.version(args.model, args.version_id)
        except (KeyError, LookupError, ValueError) as exc:
            raise UsageError(f"no version {args.version_id} of {args.model!r}: {exc}") from None


def _open_input(path, chunk_rows, dtype=None):
    """A chunked reader of an input file; a bad file is a usage error."""
    import numpy as np

    from edgekm._io import DataError, open_chunks

    try:
        return open_chunks(path, chunk_rows, np.float32 if dtype is None else dtype)
    except DataError as exc:
        raise UsageError(str(exc)) from None


def _cmd_assign(args):
    import time

    import numpy as np

    from edgekm import Assigner
    from edgekm._io import DataError
    from edgekm._progress import Progress

    version = _load_version(args)
    reader = _open_input(args.input, args.batch_size, version.centers.dtype.type)
    assigner = Assigner(version)
    counts = np.zeros(version.n_clusters, dtype=np.int64)
    anomalies = 0
    n = 0
    start = time.perf_counter()
    assign_seconds = 0.0
    out_dir = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(out_dir):
        raise UsageError(f"cannot write {args.output!r}: no directory {out_dir!r}")
    if os.path.isdir(args.output):
        raise UsageError(f"cannot write {args.output!r}: it is a directory")
    tmp = args.output + ".tmp"
    try:
        out = open(tmp, "w", encoding="ascii", newline="")
    except OSError as exc:
        raise UsageError(f"cannot write {args.output!r}: {exc.strerror or exc}") from None
    try:
        with out, Progress(reader.total or 0, f"assign ({reader.unit})",
                           enabled=not args.no_progress) as bar:
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
        os.replace(tmp, args.output)
    except DataError as exc:
        raise UsageError(str(exc)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    summary = {"input": args.input, "output": args.output, "model": version.model,
               "version": version.version, "digest": version.digest, "n_points": int(n),
               "n_clusters": version.n_clusters, "counts": counts.tolist(),
               "anomalies": anomalies, "assign_seconds": assign_seconds,
               "seconds": time.perf_counter() - start}
    if args.json:
        _print_json(summary, args)
    else:
        print(f"assigned {n} points to version {version.version} of {version.model!r} "
              f"({anomalies} beyond their cluster's p99) -> {args.output}")
    return 0


# ---------------------------------------------------------------- fit


def _add_fit(subparsers):
    from ._offline import FIT_ALGORITHMS

    p = subparsers.add_parser(
        "fit",
        help="fit centroids on a large file in bounded memory",
        description=(
            "Stream a .npy (memory-mapped), .csv, .csv.gz or .parquet file, or CSV lines on "
            "standard input (-), in chunks through StreamingKMeans.partial_fit: memory is one "
            "chunk plus the estimator's fixed structure, whatever the size of the file. "
            "Write the centres to --out: .npy (the centres only), .json (centres, cluster "
            "weights, anomaly quantiles) or .msgpack (a centroid version document). "
            "'edgekm assign --version' reads the .json and .msgpack files."
        ),
    )
    p.add_argument("input", metavar="INPUT",
                   help="a .npy, .csv, .csv.gz or .parquet file, or - for standard input")
    p.add_argument("--k", type=_positive_int, required=True, help="number of clusters")
    p.add_argument("--coreset-size", type=_positive_int, metavar="M",
                   help="points per bucket (default 40 k)")
    p.add_argument("--algorithm", choices=FIT_ALGORITHMS, default="cc",
                   help="the streaming algorithm (default cc)")
    p.add_argument("--chunk-rows", type=_positive_int, default=65536, metavar="N",
                   help="rows read and fitted at a time (default 65536)")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--model", default="offline", metavar="M",
                   help="model name recorded in a .json or .msgpack output (default offline)")
    p.add_argument("-o", "--out", required=True, metavar="FILE",
                   help="where to write the centres: .npy, .json or .msgpack")
    _add_json(p, "a summary (n_samples, seconds, inertia, output)")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler=_cmd_fit)


def _cmd_fit(args):
    from edgekm._io import DataError
    from ._offline import FitError, _check_output, fit_file, write_centroids

    try:
        _check_output(args.out)
        out_dir = os.path.dirname(os.path.abspath(args.out))
        if not os.path.isdir(out_dir):
            raise FitError(f"cannot write {args.out!r}: no directory {out_dir!r}")
        if os.path.isdir(args.out):
            raise FitError(f"cannot write {args.out!r}: it is a directory")
        result = fit_file(args.input, args.k, coreset_size=args.coreset_size,
                          algorithm=args.algorithm, chunk_rows=args.chunk_rows,
                          random_state=args.seed, progress=not args.no_progress)
        digest = write_centroids(result, args.out, model=args.model)
    except (DataError, FitError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot write {args.out!r}: {exc.strerror or exc}") from None
    summary = {k: v for k, v in result.items()
               if k not in ("centers", "cluster_weights", "quantiles")}
    summary.update(output=args.out, model=args.model, digest=digest)
    if args.json:
        _print_json(summary, args)
    else:
        print(f"fitted k={args.k} on {result['n_samples']} points x {result['n_features']} "
              f"features in {result['seconds']:.2f} s (inertia on the coreset "
              f"{result['inertia']:.6g}; fixed memory {result['memory_bytes']} bytes, chunks "
              f"of at most {result['largest_chunk_bytes']} bytes) -> {args.out}")
    return 0


# ---------------------------------------------------------------- device


def _add_device(subparsers):
    p = subparsers.add_parser(
        "device",
        help="run a device agent over a file or standard input, syncing to an aggregator",
        description=(
            "Run a DeviceAgent: stream the rows of a .npy, .csv, .csv.gz or .parquet file, or "
            "CSV lines from standard input (-, the default), into the device's model, sync "
            "the coreset frames to the aggregator every N points and at the end, and print a "
            "summary. Frames are kept in --state-dir until the aggregator acknowledges them. "
            "Exits 0 only if every frame was acknowledged; otherwise 1, and the frames that "
            "are still pending stay in the outbox for the next run."
        ),
    )
    p.add_argument("--server", required=True, metavar="URL",
                   help="base URL of the aggregator, e.g. http://127.0.0.1:8750")
    p.add_argument("--model", required=True, metavar="M", help="the model")
    p.add_argument("--device-id", required=True, metavar="ID", help="this device's id")
    p.add_argument("--key", required=True, metavar="KEY",
                   help="the device's secret key (hex, from 'edgekm devices add'); better "
                   "given as the EDGEKM_DEVICE_KEY environment variable, out of the process list")
    p.add_argument("--state-dir", required=True, metavar="DIR",
                   help="the agent's outbox and lock; survives restarts")
    p.add_argument("--input", default="-", metavar="FILE",
                   help="a .npy, .csv, .csv.gz or .parquet file, or - for CSV lines on "
                   "standard input (default -)")
    p.add_argument("--sync-every", type=_positive_int, default=10000, metavar="N",
                   help="sync after every N points (default 10000); and always at the end")
    p.add_argument("--k", type=_positive_int, default=8,
                   help="clusters of the device's local model (default 8)")
    p.add_argument("--coreset-size", type=_positive_int, default=200, metavar="M",
                   help="points per frame (default 200)")
    p.add_argument("--timeout", type=_positive_float, default=10.0, metavar="S",
                   help="seconds per HTTP request (default 10)")
    p.add_argument("--max-retries", type=_int_at_least(0), default=3, metavar="N",
                   help="retries of a frame within one sync, with backoff (default 3)")
    p.add_argument("--seed", type=_seed, metavar="SEED", help="random seed (default: random)")
    _add_json(p, "the summary")
    p.set_defaults(handler=_cmd_device)


def _pending_bytes(agent):
    """{seq: bytes} of the frames waiting in the agent's outbox."""
    return {p.seq: len(p.body) for p in agent.outbox.pending()}


def _cmd_device(args):
    from edgekm._io import DataError
    from edgekm.sync.device.agent import AgentLockedError, DeviceAgent
    from edgekm.sync.device.outbox import OutboxError

    reader = _open_input(args.input, min(args.sync_every, 65536))
    try:
        agent = DeviceAgent(args.server, args.model, args.device_id, args.key, args.state_dir,
                            n_clusters=args.k, coreset_size=args.coreset_size,
                            timeout=args.timeout, max_retries=args.max_retries,
                            backoff_max=min(30.0, 4 * args.timeout), random_state=args.seed)
    except AgentLockedError as exc:
        raise Failure(str(exc)) from None
    except (ValueError, OutboxError) as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot use the state directory {args.state_dir!r}: "
                         f"{exc.strerror or exc}") from None
    totals = {"uploaded": 0, "accepted": 0, "duplicates": 0, "rejected": 0,
              "failed_attempts": 0, "bytes_uploaded": 0, "syncs": 0}
    errors = []

    def sync():
        agent.flush()
        before = _pending_bytes(agent)
        report = agent.sync()
        # the frames that left the queue were acknowledged, or rejected (kept aside)
        gone = set(before) - set(_pending_bytes(agent))
        if report["rejected"]:
            gone -= {r.seq for r in agent.outbox.rejected()}
        totals["bytes_uploaded"] += sum(before[seq] for seq in gone)
        for key in ("uploaded", "accepted", "duplicates", "rejected", "failed_attempts"):
            totals[key] += report[key]
        totals["syncs"] += 1
        if report["error"]:
            errors.append(report["error"])
        return report

    points = 0
    since_sync = 0
    report = None
    try:
        with agent:
            for X, _ in reader:
                pos = 0
                while pos < X.shape[0]:
                    take = X[pos:pos + args.sync_every - since_sync]
                    agent.ingest(take)
                    pos += take.shape[0]
                    points += take.shape[0]
                    since_sync += take.shape[0]
                    if since_sync == args.sync_every:
                        report = sync()
                        since_sync = 0
            if since_sync or report is None or agent.outbox.stats()["pending"]:
                report = sync()
            stats = agent.stats()
    except DataError as exc:
        raise UsageError(f"{exc} (the {points} points before it were kept in the outbox)") \
            from None
    except ValueError as exc:            # a row of another width than the outbox's frames
        raise UsageError(str(exc)) from None
    summary = {"server": args.server, "model": args.model, "device_id": args.device_id,
               "state_dir": args.state_dir, "input": reader.name, "points": points,
               "frames_sent": totals["uploaded"], "frames_accepted": totals["accepted"],
               "frames_duplicate": totals["duplicates"], "frames_rejected": totals["rejected"],
               "frames_pending": stats["pending"], "weight_pending": stats["pending_weight"],
               "weight_acked": stats["weight_acked"], "bytes_uploaded": totals["bytes_uploaded"],
               "syncs": totals["syncs"], "failed_attempts": totals["failed_attempts"],
               "last_error": errors[-1] if errors else None,
               "ok": stats["pending"] == 0 and totals["rejected"] == 0}
    summary["version"] = report.get("version")
    if args.json:
        _print_json(summary, args)
    else:
        print(f"device {args.device_id}: {points} points, {summary['frames_sent']} frames sent "
              f"({summary['bytes_uploaded']} bytes), {summary['frames_pending']} pending, "
              f"{summary['frames_rejected']} rejected")
    if summary["ok"]:
        return 0
    if summary["frames_rejected"]:
        why = (f"the aggregator refused {summary['frames_rejected']} frame(s) "
               f"(kept aside in {args.state_dir}): {summary['last_error']}")
    else:
        why = (f"{summary['frames_pending']} frame(s) not acknowledged, kept in "
               f"{args.state_dir} for the next run: {summary['last_error']}")
    print(f"{PROG}: device: {why}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------- config


def _add_config_command(subparsers):
    p = subparsers.add_parser(
        "config",
        help="show every effective setting of a command and where it comes from",
        description=(
            "Print the settings a command would run with, each with its source: flag, env "
            "(EDGEKM_<OPTION>), file (the TOML file of --config or EDGEKM_CONFIG, top-level "
            "keys or a [command] table) or default. Give the command and, optionally, its "
            "flags (e.g. 'edgekm config fit --k 5'); without a command, every command. "
            "--json after the command's flags works too. Secrets are masked."
        ),
    )
    p.add_argument("rest", nargs=argparse.REMAINDER, metavar="COMMAND ...",
                   help="a command, its subcommand and flags")
    _add_json(p, "the settings")
    _add_config(p)
    p.set_defaults(handler=_cmd_config)


def _relax_positionals(parser):
    """Make every positional optional (config shows settings without input files)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _relax_positionals(child)
        elif not action.option_strings:
            action.nargs = "?"
            action.required = False


def _cmd_config(args):
    settings = args.config_sources
    if args.rest:
        parser = build_parser()
        tree = _config.prepare(parser)
        _relax_positionals(parser)
        rest = args.rest[1:] if args.rest[0] == "--" else args.rest
        inner = parser.parse_args(rest)
        if inner.command is None:
            raise UsageError("a command is required")
        if inner.command == "config":
            raise UsageError("'config' has no settings of its own")
        if getattr(inner, "config_file", None) is not None:
            path, source = _config.find_file(inner.config_file, settings.environ)
            settings = _config.Settings(tree, settings.environ, path, source)
        paths = [_command_path(inner, tree)]
        namespaces = {paths[0]: inner}
        as_json = args.json or bool(getattr(inner, "json", False))
    else:
        tree = settings.tree
        paths = [p for p in tree.leaves() if p[0] != "config"]
        namespaces = {p: argparse.Namespace() for p in paths}
        as_json = args.json
    report = {}
    for path in paths:
        resolved = settings.resolve(path, namespaces[path], check_required=False)
        report[" ".join(path)] = {
            dest: {"value": s.shown(), "source": s.source, "from": s.where}
            for dest, s in resolved.items()}
    file_info = {"config": settings.file, "config_from": settings.file_source}
    if as_json:
        _print_json({**file_info, "commands": report})
        return 0
    if settings.file is None:
        print(f"config file: none (give --config FILE or set {_config.CONFIG_ENV})")
    else:
        how = "--config" if settings.file_source == "flag" else _config.CONFIG_ENV
        print(f"config file: {settings.file} (from {how})")
    for name, values in report.items():
        print(f"\n{name}")
        width = max((len(d) for d in values), default=0)
        for dest, v in values.items():
            where = f" ({v['from']})" if v["from"] and v["source"] != "default" else ""
            print(f"  {dest:<{width}} = {v['value']!r:<24} {v['source']}{where}")
    return 0


_SUBCOMMANDS = (_add_demo, _add_serve, _add_devices, _add_models, _add_versions,
                _add_device, _add_fit, _add_assign, _add_bench, _add_config_command)


# ---------------------------------------------------------------- main


def _version():
    from importlib import metadata

    try:
        return metadata.version("edgekm")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _add_config_everywhere(parser):
    """``--config FILE`` on every command, so that it may follow the command's name."""
    sub = _config._subparsers(parser)
    if sub is None:
        _add_config(parser)
        return
    for child in sub.choices.values():
        _add_config_everywhere(child)


def build_parser():
    """The argument parser with every subcommand."""
    parser = _Parser(
        prog=PROG,
        description="Fixed-memory streaming k-means for edge devices. Every option can also "
        "be set by an environment variable EDGEKM_<OPTION> or in a TOML file (--config FILE "
        "or EDGEKM_CONFIG); 'edgekm config COMMAND' shows what a command would use.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_config(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for add in _SUBCOMMANDS:
        add(subparsers)
    for name, child in subparsers.choices.items():
        if name != "config":            # it declares its own, before COMMAND ...
            _add_config_everywhere(child)
    return parser


def _command_path(args, tree):
    path = (args.command,)
    if path in tree.children:
        path += (args.action,)
    return path


def _run(argv, environ):
    parser = build_parser()
    tree = _config.prepare(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version exit through argparse
        return exc.code if isinstance(exc.code, int) else 0
    if args.command is None:
        parser.print_usage(sys.stderr)
        raise UsageError("a command is required")
    path, source = _config.find_file(getattr(args, "config_file", None), environ)
    sources = _config.Settings(tree, environ, path, source)
    args.config_path = path
    args.config_sources = sources
    args.settings = sources.resolve(_command_path(args, tree), args)
    return args.handler(args)


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
    environ = os.environ
    try:
        return _run(argv, environ)
    except (UsageError, _config.ConfigError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except Failure as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): stop quietly.
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return 1
    except Exception as exc:
        if environ.get(_config.DEBUG_ENV, "").strip() not in ("", "0"):
            import traceback

            traceback.print_exc()
        else:
            print(f"{PROG}: internal error: {type(exc).__name__}: {exc} "
                  f"(set {_config.DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
