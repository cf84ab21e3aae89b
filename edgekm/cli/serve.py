"""``edgekm serve``: run the cloud aggregator's HTTP API under uvicorn."""

import os
import sys

from edgekm.cli._common import (PROG, Failure, add_db, db_location, fraction, port_number,
                               positive_float, positive_int, print_json)
from edgekm.exceptions import SchemaError, UnavailableError, UsageError


def add_parser(subparsers):
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
    add_db(p, create=True)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=8750,
                   help="port to listen on; 0 picks a free one (default 8750)")
    p.add_argument("--admin-token", metavar="TOKEN",
                   help="bearer token of the admin endpoints (fit, model info); default: the "
                   "EDGEKM_ADMIN_TOKEN environment variable, which keeps it out of the process "
                   "list; without a token those endpoints answer 403")
    p.add_argument("--window-seconds", type=positive_float, default=3600.0, metavar="S",
                   help="length of a time window, for models created from now on (default 3600)")
    p.add_argument("--coreset-size", type=positive_int, default=200, metavar="M",
                   help="points per bucket of the aggregate (default 200)")
    p.add_argument("--merge-degree", type=positive_int, default=2, metavar="R",
                   help="buckets merged at once in the aggregate's trees (default 2)")
    p.add_argument("--retain-windows", type=positive_int, metavar="N",
                   help="keep the per-window aggregates of only the N most recent windows "
                   "(default: keep all; the all-time aggregate is always kept)")
    p.add_argument("--durability", choices=("full", "normal"), default="full",
                   help="SQLite synchronous setting: full survives power loss (default full)")
    p.add_argument("--no-auto-create-models", action="store_true",
                   help="refuse frames for models not registered with 'edgekm models add'")
    p.add_argument("--max-concurrency", type=positive_int, default=64, metavar="N",
                   help="requests in progress at once; more get 503 (default 64)")
    p.add_argument("--max-device-weight", type=positive_float, metavar="W",
                   help="cap on the weight one device may add to a model per window "
                   "(default: no cap); see --weight-cap-policy")
    p.add_argument("--weight-cap-policy", choices=("reject", "clip"), default="reject",
                   help="over the cap: reject answers 429 until the window ends (422 for a "
                   "frame heavier than the cap), clip scales the frame down to the cap and "
                   "records the clipped weight (default reject)")
    p.add_argument("--publish-trim", type=fraction, default=0.0, metavar="T",
                   help="publish with trimmed k-means, leaving out up to this fraction of the "
                   "weight farthest from the centres (0 <= T < 0.5; default 0, plain k-means)")
    p.add_argument("--compact-windows", type=positive_int, default=168, metavar="N",
                   help="compaction merges the per-window aggregates older than the N most "
                   "recent windows into one (default 168)")
    p.add_argument("--dedup-seconds", type=positive_float, default=7 * 86400.0, metavar="S",
                   help="per-frame dedup records older than this collapse into per-device "
                   "runs of sequence numbers (default 604800, a week)")
    p.add_argument("--compact-interval", type=positive_float, default=600.0, metavar="S",
                   help="seconds between two compactions (default 600)")
    p.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn log level (default info)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--json", action="store_true",
                   help="print one JSON line {host, port, db, config} on stdout once the "
                   "server accepts connections")
    p.set_defaults(handler=run)


def run(args):
    if args.merge_degree < 2:
        raise UsageError("--merge-degree must be at least 2")
    try:
        from edgekm.sync.cloud.http import serve
    except ImportError as exc:
        raise UsageError(f"the server needs the 'server' extra "
                         f"(pip install 'edgekm[server]'): {exc}") from None
    import sqlite3

    port = args.port if args.port != 0 else _free_port(args.host)
    _check_port_free(args.host, port)
    if args.admin_token is None:
        print(f"{PROG}: serve: warning: no --admin-token (or EDGEKM_ADMIN_TOKEN): the admin "
              "endpoints (fit, model info) answer 403", file=sys.stderr, flush=True)
    if args.json:
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
    except (sqlite3.Error, SchemaError, UnavailableError) as exc:
        raise UsageError(f"cannot open the database {args.db!r}: {exc}") from None
    except OSError as exc:               # e.g. the port is taken
        raise Failure(f"cannot serve on {args.host}:{port}: {exc}") from None


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
    raise Failure(f"cannot serve on {host}:{port}: something already listens there (the port "
                  "is in use: stop it, or choose another with --port; --port 0 picks a free "
                  "one)")


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
        print_json({"listening": True, "host": host, "port": port,
                     "url": f"http://{probe if ':' not in probe else f'[{probe}]'}:{port}",
                     "db": db_location(args.db)}, args, indent=None)

    threading.Thread(target=wait, name="edgekm-serve-announce", daemon=True).start()
