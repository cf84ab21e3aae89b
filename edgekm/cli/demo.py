"""``edgekm demo``: a simulated fleet against a real aggregator (:mod:`edgekm.demo`)."""

import argparse
import sys

from edgekm.cli._common import (PROG, add_json, add_seed, positive_int, print_json)
from edgekm.exceptions import FleetDemoError, UsageError


def add_parser(subparsers):
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
    p.add_argument("--devices", dest="n_devices", type=positive_int, default=8, metavar="N",
                   help="devices in the fleet (default 8)")
    p.add_argument("--points", dest="n_points", type=positive_int, metavar="N",
                   help="points streamed through the fleet in all (default: the generator's "
                   "default, or every row of --data)")
    p.add_argument("--k", type=positive_int, default=8, help="number of clusters (default 8)")
    add_seed(p)
    p.add_argument("--report", metavar="OUT.html", help="also write an HTML report there")
    p.add_argument("--workdir", metavar="DIR",
                   help="keep the aggregator's database and the devices' state in DIR "
                   "(new or empty; default: a temporary directory, removed at the end)")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=None,
                   help="shuffle the rows before streaming (default: keep the stream order, "
                   "which is what shows drift)")
    add_json(p, "the report")
    p.add_argument("--no-progress", action="store_true", help="do not show a progress bar")
    p.set_defaults(handler=run)


def run(args):
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
    except FleetDemoError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print_json(result, args)
    if not result.get("ok"):
        failures = result.get("failures") or ["the demo did not succeed"]
        print(f"{PROG}: demo failed: {'; '.join(map(str, failures))}", file=sys.stderr)
        return 1
    return 0
