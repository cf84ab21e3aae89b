"""``edgekm config``: every effective setting of a command and where it comes from."""

import argparse

from edgekm.cli._common import add_config, add_json, print_json
from edgekm.cli._config import CONFIG_ENV, Settings, Tree, find_file
from edgekm.exceptions import UsageError


def add_parser(subparsers, build_parser):
    """Declare ``edgekm config``; ``build_parser(relaxed=True)`` builds the parser it reads."""
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
    add_json(p, "the settings")
    add_config(p)
    p.set_defaults(handler=run, build_parser=build_parser)


def run(args):
    settings = args.config_sources
    if args.rest:
        tree = Tree(args.build_parser(relaxed=True))
        rest = args.rest[1:] if args.rest[0] == "--" else args.rest
        inner = tree.parser.parse_args(rest)
        if inner.command is None:
            raise UsageError("a command is required")
        if inner.command == "config":
            raise UsageError("'config' has no settings of its own")
        if getattr(inner, "config_file", None) is not None:
            path, source = find_file(inner.config_file, settings.environ)
            settings = Settings(tree, settings.environ, path, source)
        paths = [tree.command_path(inner)]
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
        print_json({**file_info, "commands": report})
        return 0
    if settings.file is None:
        print(f"config file: none (give --config FILE or set {CONFIG_ENV})")
    else:
        how = "--config" if settings.file_source == "flag" else CONFIG_ENV
        print(f"config file: {settings.file} (from {how})")
    for name, values in report.items():
        print(f"\n{name}")
        width = max((len(d) for d in values), default=0)
        for dest, v in values.items():
            where = f" ({v['from']})" if v["from"] and v["source"] != "default" else ""
            print(f"  {dest:<{width}} = {v['value']!r:<24} {v['source']}{where}")
    return 0

