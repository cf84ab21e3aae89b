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


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


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
        default=1000,
        metavar="N",
        help="read the centers after every N points (default 1000)",
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


_SUBCOMMANDS = (_add_demo,)


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
