"""What the commands of the ``edgekm`` command line share.

Argument types (with the messages the CLI prints), ``--json``, ``--config``
and ``--db``, JSON output, opening an aggregator database or an input file,
and :class:`Failure`.  Errors map to exit codes in :func:`edgekm.cli.main`:
:class:`~edgekm.exceptions.UsageError` and
:class:`~edgekm.exceptions.ConfigError` exit 2, :class:`Failure` exits 1.
"""

import argparse
import json
import math
import os

from edgekm.cli._config import CONFIG_ENV
from edgekm.exceptions import UsageError

PROG = "edgekm"


class Failure(Exception):
    """The work asked for did not succeed (exit status 1); the message says why."""


# ---------------------------------------------------------------- argument types


def int_type(minimum, maximum=None, what="an integer", bound=None):
    """An argparse type: an int in [minimum, maximum], with the messages the CLI uses."""
    if bound is None:
        bound = (f"must be at least {minimum}" if maximum is None
                 else f"must be in {minimum}..{maximum}")

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{bound}, got {value}")
        return value
    return parse


def float_type(accept, bound):
    """An argparse type: a float for which ``accept(value)`` holds, else ``bound``."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"{bound}, got {text}")
        return value
    return parse


positive_int = int_type(1)
non_negative_int = int_type(0)
seed_int = int_type(0, bound="must be >= 0")
port_number = int_type(0, 65535)
version_id = int_type(1, what="a version id", bound="a version id is at least 1")
positive_float = float_type(lambda v: v > 0 and v != math.inf, "must be a finite number > 0")
percent = float_type(lambda v: 0 < v <= 100, "must be in (0, 100]")


def fraction(text):
    """An argparse type: a float in [0, 0.5) (the message shows the parsed value)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 0.5:
        raise argparse.ArgumentTypeError(f"must be in [0, 0.5), got {value}")
    return value


# ---------------------------------------------------------------- shared options


def add_json(p, what="the result"):
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def add_config(p):
    p.add_argument("--config", dest="config_file", metavar="FILE", default=argparse.SUPPRESS,
                   help=f"a TOML configuration file (default: ${CONFIG_ENV})")


#: the one default of ``--seed``, in every command: runs are reproducible unless asked
DEFAULT_SEED = 0


def add_seed(p):
    p.add_argument("--seed", type=seed_int, default=DEFAULT_SEED, metavar="SEED",
                   help=f"random seed, an integer >= 0 (default {DEFAULT_SEED}, as in every "
                   "edgekm command)")


def add_db(p, create=False):
    """``--db PATH|URL``; only the commands that ``create`` a database accept a missing file."""
    p.add_argument("--db", required=True, metavar="PATH|URL",
                   help="the aggregator's SQLite database" + (" (created if missing)" if create
                                                             else " (it must exist)")
                   + ", or a PostgreSQL URL postgresql://user@host:port/dbname")


def is_url(value):
    """Whether ``--db`` names a PostgreSQL server rather than a SQLite file."""
    return value.startswith(("postgresql://", "postgres://"))


def db_location(value):
    """``--db`` as shown to the user: a PostgreSQL URL as given, a SQLite path absolute."""
    return value if is_url(value) else os.path.abspath(value)


def add_output(p, what="the output file", required=False, default_help=None):
    """``-o/--output FILE``, the one spelling of an output file in every command."""
    p.add_argument("-o", "--output", required=required, metavar="FILE",
                   help=what + ("" if default_help is None else f" ({default_help})"))


def add_input_options(p):
    """``--columns`` and ``--delimiter``, for the commands that read a data file."""
    p.add_argument("--columns", metavar="COLS", type=_column_list,
                   help="comma-separated columns to read, by header name or 1-based number "
                   "(default: every numeric column; the others are skipped and named)")
    p.add_argument("--delimiter", metavar="CHAR",
                   help="the CSV delimiter (default: the first of ',', ';' and a tab found in "
                   "the first line); \\t for a tab")


def _column_list(text):
    cols = [c.strip() for c in text.split(",")]
    if not all(cols):
        raise argparse.ArgumentTypeError(f"expected comma-separated column names or numbers, "
                                         f"got {text!r}")
    return cols


# ---------------------------------------------------------------- output


def with_config(value, args):
    """Add ``"config"`` (the configuration file used) to a JSON object, when there was one."""
    path = getattr(args, "config_path", None)
    if isinstance(value, dict) and "config" not in value and path is not None:
        value = dict(value, config=path)
    return value


def json_ready(value):
    """Strict JSON values: non-finite floats become None, numpy values plain ones."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):   # numpy
        return json_ready(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_json(value, args=None, indent=2, stream=None):
    print(json.dumps(json_ready(with_config(value, args)), indent=indent, sort_keys=True,
                     allow_nan=False), flush=True, file=stream)


def when(timestamp):
    """A UTC timestamp as ``YYYY-MM-DDTHH:MM:SSZ``; None is ``-``."""
    import datetime

    if timestamp is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- opening things


def open_aggregator(path, create=False):
    """An Aggregator for an administration command; a bad database is a usage error.

    A missing file is refused (a mistyped ``--db`` would otherwise leave an
    empty database behind) unless ``create``.
    """
    import sqlite3

    from edgekm.exceptions import SchemaError, UnavailableError
    from edgekm.sync.cloud.aggregator import Aggregator

    if not create and not is_url(path) and not os.path.exists(path):
        raise UsageError(f"no database {path!r}: check the path ('edgekm serve' and "
                         "'edgekm devices add' create a new one)")
    try:
        return Aggregator(path)
    except (sqlite3.Error, SchemaError, UnavailableError, OSError) as exc:
        raise UsageError(f"cannot open the database {path!r}: {exc}") from None


def open_input(path, chunk_rows, dtype=None, args=None):
    """A chunked reader of an input file (with the ``--columns`` and ``--delimiter`` of
    ``args``); a bad file is a usage error."""
    import numpy as np

    from edgekm._io import open_chunks
    from edgekm.exceptions import DataError

    try:
        return open_chunks(path, chunk_rows, np.float32 if dtype is None else dtype,
                           **input_options(args))
    except DataError as exc:
        raise UsageError(str(exc)) from None


def input_options(args):
    """The reader keywords of ``--columns`` and ``--delimiter`` (none without ``args``)."""
    delimiter = getattr(args, "delimiter", None)
    if delimiter == "\\t":
        delimiter = "\t"
    return {"columns": getattr(args, "columns", None), "delimiter": delimiter}


def note_skipped(reader, stream=None):
    """Say on stderr which non-numeric columns ``reader`` left out (once it knows)."""
    import sys

    if getattr(reader, "skipped", None):
        print(f"{PROG}: {reader.name}: skipped non-numeric column(s) "
              f"{', '.join(reader.skipped)}", file=stream or sys.stderr)


def check_output_path(path, error=UsageError):
    """Fail with ``error`` unless ``path`` could be written (its directory exists)."""
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
        raise error(f"cannot write {path!r}: no directory {out_dir!r}")
    if os.path.isdir(path):
        raise error(f"cannot write {path!r}: it is a directory")


def chosen_version(agg, model, version=None):
    """``version``, or the active version of ``model`` when None; a usage error if none."""
    from edgekm.exceptions import UnknownModelError

    if version is not None:
        return version
    try:
        active = agg.rollout_state(model)["active"]
    except UnknownModelError as exc:
        raise UsageError(str(exc)) from None
    if active is None:
        raise UsageError(f"model {model!r} has no active version; give --version-id "
                         "(see 'edgekm versions list')")
    return active
