"""Settings of the ``edgekm`` command line: flags, environment variables, a TOML file.

Every option of every command (except ``--help``, ``--json`` and ``--config``)
can come from, in this order of precedence:

1. the command-line flag;
2. the environment variable ``EDGEKM_<NAME>``, where ``NAME`` is the option's
   name in upper case with ``_`` for ``-`` (``--chunk-rows`` ->
   ``EDGEKM_CHUNK_ROWS``); the device key is ``EDGEKM_DEVICE_KEY``;
3. the TOML file named by ``--config FILE`` or ``EDGEKM_CONFIG``: a key at the
   top level applies to every command that has the option; a table per command
   (``[serve]``, ``[fit]``, ...) and per subcommand (``[versions.publish]``)
   overrides it for that command.  Keys are option names (``chunk_rows`` or
   ``chunk-rows``); a key that no command knows is an error;
4. the option's default.

A value from the environment or the file goes through the same checks as the
flag, and a bad one is a usage error naming the variable, or the file and the
key.  Flag values of the boolean options (``--no-progress``) are written in
the environment as ``1``/``true``/``yes``/``on`` or ``0``/``false``/``no``/``off``
and in the file as TOML booleans.
"""

import argparse
import os
import sys

from edgekm.exceptions import ConfigError, UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:                                      # pragma: no cover - the tomli dependency on 3.10
    import tomli as tomllib

__all__ = ["ConfigError", "CommandParser", "Tree", "Settings", "UNSET", "parser_class",
           "load_file", "find_file", "CONFIG_ENV", "DEBUG_ENV", "ENV_PREFIX"]

ENV_PREFIX = "EDGEKM_"
CONFIG_ENV = "EDGEKM_CONFIG"
DEBUG_ENV = "EDGEKM_DEBUG"

#: options that are never read from the environment or a file
NOT_CONFIGURABLE = frozenset({"help", "version", "json", "config_file"})
#: environment variables whose name is not EDGEKM_<dest>
ENV_NAMES = {"key": "EDGEKM_DEVICE_KEY"}
#: settings whose values are shown masked
SECRETS = frozenset({"key", "admin_token"})

SOURCES = ("flag", "env", "file", "default")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class _Unset:
    def __repr__(self):
        return "UNSET"


#: the parse-time default of every configurable option
UNSET = _Unset()


def env_name(dest):
    """The environment variable of the option ``dest``."""
    return ENV_NAMES.get(dest, ENV_PREFIX + dest.upper())


class _Option:
    """A configurable option: the argparse action and its declared default and requiredness."""

    def __init__(self, action, default, required):
        self.action = action
        self.dest = action.dest
        self.default = default
        self.required = required
        self.flag = max(action.option_strings, key=len)

    @property
    def is_bool(self):
        return self.action.nargs == 0 or isinstance(self.action, argparse.BooleanOptionalAction)

    def convert(self, raw, where):
        """The value of ``raw`` (a string from the environment, a TOML value) as the flag's."""
        action = self.action
        if self.is_bool:
            if isinstance(raw, bool):
                flag = raw
            elif isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
                flag = raw.strip().lower() in _TRUE
            else:
                raise ConfigError(f"{where}: expected a boolean (true or false), got {raw!r}")
            if isinstance(action, argparse.BooleanOptionalAction):
                return flag
            return action.const if flag else self.default
        if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
            kind = "a boolean" if isinstance(raw, bool) else f"a {type(raw).__name__}"
            raise ConfigError(f"{where}: expected a value for {self.flag}, got {kind}")
        text = raw if isinstance(raw, str) else repr(raw)
        try:
            value = action.type(text) if action.type is not None else text
        except (argparse.ArgumentTypeError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(repr, action.choices))
            raise ConfigError(f"{where}: invalid choice {value!r} (choose from {choices})")
        return value


class CommandParser(argparse.ArgumentParser):
    """An argument parser that records its configurable options and its subcommands.

    Every option declared with :meth:`add_argument` (except ``--help``,
    ``--version``, ``--json`` and ``--config``) is configurable: its declared
    default and ``required`` are kept in :attr:`options`, and the parser
    itself gets :data:`UNSET` as the default and nothing required, so that
    after parsing :meth:`Settings.resolve` can tell a flag from an absent
    one.  :meth:`add_subparsers` returns an object whose ``add_parser``
    records each subcommand in :attr:`commands`.  A usage error raises
    :class:`~edgekm.exceptions.UsageError`.
    """

    #: positionals become optional (``edgekm config`` shows settings without input files)
    relaxed = False

    def __init__(self, *args, **kwargs):
        self.options = {}          # dest -> _Option
        self.commands = {}         # name -> CommandParser
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.print_usage(sys.stderr)
        raise UsageError(message)

    def add_argument(self, *args, **kwargs):
        positional = bool(args) and not args[0].startswith("-")
        if positional:
            if self.relaxed:
                kwargs["nargs"] = "?"
            return super().add_argument(*args, **kwargs)
        required = kwargs.pop("required", False)
        action = super().add_argument(*args, **kwargs)
        if action.dest in NOT_CONFIGURABLE:
            if required:
                raise TypeError(f"{action.dest} is not configurable and cannot be required")
            return action
        self.options[action.dest] = _Option(action, action.default, required)
        self.set_defaults(**{action.dest: UNSET})
        return action

    def add_subparsers(self, **kwargs):
        kwargs["parser_class"] = type(self)
        return _Commands(self, super().add_subparsers(**kwargs))


class _RelaxedParser(CommandParser):
    relaxed = True


def parser_class(relaxed=False):
    """The parser class of the command line; ``relaxed`` makes every positional optional."""
    return _RelaxedParser if relaxed else CommandParser


class _Commands:
    """What :meth:`CommandParser.add_subparsers` returns: ``add_parser`` records the child."""

    def __init__(self, parent, subparsers):
        self._parent = parent
        self._subparsers = subparsers

    def add_parser(self, name, **kwargs):
        child = self._subparsers.add_parser(name, **kwargs)
        self._parent.commands[name] = child
        return child


class Tree:
    """The configurable options of every command path, e.g. ("versions", "publish")."""

    def __init__(self, parser):
        self.parser = parser
        self.options = {}              # path -> {dest: _Option}
        self.children = {}             # path -> names of its subcommands
        self._walk(parser, ())

    def _walk(self, parser, path):
        self.options[path] = dict(parser.options)
        if parser.commands:
            self.children[path] = tuple(parser.commands)
            for name, child in parser.commands.items():
                self._walk(child, path + (name,))

    def leaves(self):
        """Command paths that run (no subcommand below them)."""
        return [p for p in self.options if p and p not in self.children]

    def dests_under(self, path):
        """Every option dest of ``path`` and of the commands below it."""
        out = set()
        for p, opts in self.options.items():
            if p[:len(path)] == path:
                out.update(opts)
        return out

    def path_options(self, path):
        """The options a command path accepts: its own and its parents'."""
        merged = {}
        for i in range(len(path) + 1):
            merged.update(self.options.get(path[:i], {}))
        return merged

    def command_path(self, args):
        """The command path that parsed ``args`` runs: ``(command,)`` or ``(command, action)``."""
        path = (args.command,)
        if path in self.children:
            path += (args.action,)
        return path


def _key(name):
    return name.replace("-", "_")


def load_file(path, tree):
    """Read and check a TOML configuration file; returns ``{path tuple: {dest: value}}``.

    Raises
    ------
    ConfigError
        The file cannot be read, is not TOML, or has a key that no command knows.
    """
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path!r}: "
                          f"{exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"the config file {path!r} is not valid TOML: {exc}") from None
    tables = {}
    _check_table(doc, (), tree, path, tables)
    return tables


def _check_table(doc, path, tree, file, tables):
    known = tree.dests_under(path) if path else set().union(*tree.options.values())
    commands = tree.children.get(path, ())
    values = {}
    label = f"[{'.'.join(path)}]" if path else "the top level"
    for name, value in doc.items():
        if isinstance(value, dict):
            if name not in commands:
                where = f"in [{'.'.join(path)}] " if path else ""
                raise ConfigError(f"{file}: unknown table [{'.'.join(path + (name,))}] {where}"
                                  f"(commands: {', '.join(commands) or 'none'})")
            _check_table(value, path + (name,), tree, file, tables)
            continue
        key = _key(name)
        if key in NOT_CONFIGURABLE or key not in known:
            raise ConfigError(f"{file}: unknown key {name!r} at {label}; "
                              f"known keys: {', '.join(sorted(known))}")
        values[key] = value
    tables[path] = values


def find_file(flag_value, environ):
    """The config file to read and where its name came from: ``(path or None, source)``."""
    if flag_value is not None:
        return flag_value, "flag"
    value = environ.get(CONFIG_ENV)
    if value:
        return value, "env"
    return None, None


class Setting:
    """One effective setting: its value, source (flag/env/file/default) and where from."""

    __slots__ = ("dest", "value", "source", "where")

    def __init__(self, dest, value, source, where):
        self.dest, self.value, self.source, self.where = dest, value, source, where

    def shown(self):
        """The value as reported (secrets masked)."""
        if self.dest in SECRETS and self.value is not None:
            return "***"
        return self.value


class Settings:
    """The configuration sources of one run: the environment and the (checked) file."""

    def __init__(self, tree, environ=None, file=None, file_source=None):
        self.tree = tree
        self.environ = os.environ if environ is None else environ
        self.file = file
        self.file_source = file_source
        self.tables = load_file(file, tree) if file is not None else {}

    def resolve(self, path, args, check_required=True):
        """Fill the UNSET options of ``args`` for the command ``path``; returns {dest: Setting}.

        Raises
        ------
        ConfigError
            A bad value in the environment or the file, or a required option
            that no source gives.
        """
        out = {}
        missing = []
        for dest, opt in sorted(self.tree.path_options(path).items()):
            value = getattr(args, dest, UNSET)
            if value is not UNSET:
                setting = Setting(dest, value, "flag", opt.flag)
            else:
                setting = self._lookup(opt, path)
                if setting.value is UNSET:
                    setting = Setting(dest, opt.default, "default", None)
                    if opt.required:
                        missing.append(opt)
                setattr(args, dest, setting.value)
            out[dest] = setting
        if missing and check_required:
            names = ", ".join(o.flag for o in missing)
            hints = "; ".join(f"or set {env_name(o.dest)}, or {o.dest} in a config file"
                              for o in missing[:1])
            raise ConfigError(f"the following arguments are required: {names} ({hints})")
        return out

    def _lookup(self, opt, path):
        name = env_name(opt.dest)
        if name in self.environ:
            raw = self.environ[name]
            value = opt.convert(raw, f"{name}={raw!r} (environment)")
            return Setting(opt.dest, value, "env", name)
        for i in range(len(path), -1, -1):
            table = self.tables.get(path[:i], {})
            if opt.dest in table:
                label = f"[{'.'.join(path[:i])}]" if i else "top level"
                where = f"{self.file} {label} {opt.dest}"
                return Setting(opt.dest, opt.convert(table[opt.dest], where), "file", where)
        return Setting(opt.dest, UNSET, None, None)
