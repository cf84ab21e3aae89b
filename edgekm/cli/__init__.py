"""The ``edgekm`` command line.

Each command is one module of this package (``demo``, ``serve``, ``devices``,
``models``, ``versions``, ``device``, ``fit``, ``assign``, ``bench``,
``config``) with ``add_parser(subparsers)``, which declares its arguments and
sets ``handler``, and ``run(args) -> int``, the exit status.  To add a
command, write such a module and list it in ``_COMMANDS``.  What the commands
share (argument types, JSON output, opening a database or an input file) is in
:mod:`edgekm.cli._common`.

Every option can also come from an environment variable ``EDGEKM_<OPTION>``
or a TOML file (``--config FILE`` or ``EDGEKM_CONFIG``); see
:mod:`edgekm.cli._config` for the rules and ``edgekm config COMMAND`` for what a
run would use.  Every command has ``--json``; its JSON objects carry
``"config"``, the configuration file used, when there was one.

Exit codes: 0 success, 1 a failure inside edgekm or of the work asked for
(an aggregator that does not acknowledge every frame, a failed demo run), 2 a
usage error (bad argument, setting or input file, unknown model or version),
reported as ``edgekm: error: ...`` with no traceback, 130 interrupted.  An
unexpected internal error exits 1 with a one-line message; ``EDGEKM_DEBUG=1``
adds the traceback.
"""

import os
import sys

from edgekm.cli import (_config, assign, bench, config, demo, device, devices, fit, models,
                        serve, versions)
from edgekm.cli._common import PROG, Failure, add_config
from edgekm.exceptions import ConfigError, UsageError

__all__ = ["main", "UsageError", "build_parser"]

#: the commands, in the order of ``edgekm --help`` (config is added last, with build_parser)
_COMMANDS = (demo, serve, devices, models, versions, device, fit, assign, bench)


def _version():
    from importlib import metadata

    try:
        return metadata.version("edgekm")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _add_config_everywhere(parser):
    """``--config FILE`` on every command, so that it may follow the command's name."""
    if not parser.commands:
        add_config(parser)
        return
    for child in parser.commands.values():
        _add_config_everywhere(child)


def build_parser(relaxed=False):
    """The argument parser with every subcommand.

    ``relaxed`` makes every positional argument optional, for ``edgekm config``.
    """
    parser = _config.parser_class(relaxed)(
        prog=PROG,
        description="Fixed-memory streaming k-means for edge devices. Every option can also "
        "be set by an environment variable EDGEKM_<OPTION> or in a TOML file (--config FILE "
        "or EDGEKM_CONFIG); 'edgekm config COMMAND' shows what a command would use.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    add_config(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in _COMMANDS:
        command.add_parser(subparsers)
    config.add_parser(subparsers, build_parser)
    for name, child in parser.commands.items():
        if name != "config":            # it declares its own, before COMMAND ...
            _add_config_everywhere(child)
    return parser


def _run(argv, environ):
    parser = build_parser()
    tree = _config.Tree(parser)
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
    args.settings = sources.resolve(tree.command_path(args), args)
    return args.handler(args)


def _internal_error(exc, environ):
    if environ.get(_config.DEBUG_ENV, "").strip() not in ("", "0"):
        import traceback

        traceback.print_exc()
    else:
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc} "
              f"(set {_config.DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
    return 1


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
    except (UsageError, ConfigError) as exc:
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
        return _internal_error(exc, environ)


if __name__ == "__main__":
    sys.exit(main())
