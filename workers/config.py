"""Option values from LOGDISPATCH_* variables and a TOML file, under the command line's flags.

Generic over argparse: an option's key is its long flag without the dashes (``error-pattern``,
``no-events``; ``_`` for ``-`` is accepted), its variable ``LOGDISPATCH_`` and the key in
capitals with underscores, and a value from either is checked and converted as the flag's
would be. Precedence: flags, then the environment, then the file (a command's table before the
top level), then the defaults.

Master and workers both load this: it imports nothing heavy (tomllib only to read a file).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

from workers.common import AUTHKEY_ENV
from workers.errors import ConfigError

ENV_PREFIX = "LOGDISPATCH_"
CONFIG_ENV = "LOGDISPATCH_CONFIG"
CONFIG_DEST = "config"

# The key itself in the environment stands in for the key file's option: $LOGDISPATCH_AUTHKEY
# beats an authkey-file named in the configuration file, as any variable beats the file.
ENV_STAND_INS = {"authkey_file": AUTHKEY_ENV}

TRUE_WORDS = ("1", "true", "yes")
FALSE_WORDS = ("0", "false", "no")

# All commands taking a configuration file, by name: the keys a file may hold.
Commands = Callable[[], Mapping[str, argparse.ArgumentParser]]


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


# The default of a positional argument that may come from the environment or the file instead
# of the command line (``root``), and must come from one of them.
REQUIRED: Any = _Required()


# NamedTuples, not dataclasses: defining dataclasses is slower, and it would lengthen the start
# of every command, `count` included.
class Option(NamedTuple):
    """One option that the environment or a file may set."""

    key: str  # the long flag without its dashes, or a positional argument's name
    action: argparse.Action

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper().replace("-", "_")

    @property
    def dest(self) -> str:
        return self.action.dest


class Source(NamedTuple):
    """Where a value came from: "flag", "env", "file", "default" or "missing"."""

    kind: str
    origin: str | None = None  # the variable's or the file's name
    table: str | None = None  # the file's table the value was in, if not the top level

    def __str__(self) -> str:
        if self.kind == "env":
            return f"env {self.origin}"
        if self.kind == "file":
            return f"{self.origin} [{self.table}]" if self.table else str(self.origin)
        return self.kind


class Resolution(NamedTuple):
    command: str
    args: argparse.Namespace
    options: list[Option]
    sources: dict[str, Source]  # by dest


def options(parser: argparse.ArgumentParser) -> list[Option]:
    """The options of ``parser`` that the environment or a file may set, in the parser's order.

    Not help, hidden options (internal to the program) or ``--config`` itself; positional
    arguments only when they may be left out (``nargs="?"``).
    """
    found = []
    for action in parser._actions:
        if (
            action.help == argparse.SUPPRESS
            or action.dest == CONFIG_DEST
            or isinstance(
                action, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction
            )
        ):
            continue
        if action.option_strings:
            long = [flag[2:] for flag in action.option_strings if flag.startswith("--")]
            if long:
                found.append(Option(long[0], action))
        elif action.nargs == argparse.OPTIONAL:
            found.append(Option(action.dest.replace("_", "-"), action))
    return found


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``, on a command that has options to set."""
    if options(parser):
        parser.add_argument(
            "--config",
            metavar="FILE",
            help=f"TOML file of option values, the long flags as keys (poll = 2); flags and "
            f"LOGDISPATCH_<FLAG> variables win over it (default: ${CONFIG_ENV})",
        )


def takes_config(parser: argparse.ArgumentParser) -> bool:
    return any(action.dest == CONFIG_DEST for action in parser._actions)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The commands of a parser with subcommands, by name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def resolve(
    command: str,
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    commands: Commands | None,
    environ: Mapping[str, str] | None = None,
    allow_missing: bool = False,
) -> Resolution:
    """Parse one command's arguments, then set what they leave out from the environment, the
    configuration file and the defaults, in that order.

    ``commands`` gives every command's parser, to tell a key of another command (ignored) from
    a typo (an error). None when only this command is known (the worker's own program): the
    file's keys that are not this command's are then ignored, and only its own table checked.
    Without ``allow_missing``, a REQUIRED value found nowhere is an error.
    """
    environ = os.environ if environ is None else environ
    args = parser.parse_args(argv)
    with _defaults_unset(parser):
        given = {k: v for k, v in vars(parser.parse_args(argv)).items() if v is not _UNSET}
    # The flags' own values: an append option's list without its default's items.
    for dest, value in given.items():
        setattr(args, dest, value)
    sources: dict[str, Source] = {}
    settings: dict[str, tuple[Any, Source]] = {}
    if takes_config(parser):
        path, sources[CONFIG_DEST] = _config_path(given, environ)
        setattr(args, CONFIG_DEST, path)
        if path is not None:
            settings = _file_settings(path, command, parser, commands)
    found = options(parser)
    for option in found:
        if option.dest in given:
            sources[option.dest] = Source("flag")
            continue
        source = _from_env(option, args, environ) or _from_file(option, args, settings)
        if source is None:
            source = Source("missing" if getattr(args, option.dest) is REQUIRED else "default")
        sources[option.dest] = source
        if source.kind == "missing" and not allow_missing:
            name = option.action.metavar or option.key
            if option.action.option_strings:  # an option, not ROOT: "--out FILE"
                name = f"--{option.key} {name}"
            raise ConfigError(
                f"{name} is required: give it on the command "
                f"line, as {option.key} in the configuration file or as ${option.env}"
            )
    return Resolution(command, args, found, sources)


# A positional argument left out keeps this; SUPPRESS would go through its type (Path).
_UNSET: Any = object()


@contextmanager
def _defaults_unset(parser: argparse.ArgumentParser) -> Iterator[None]:
    """Parsing leaves out, or marks _UNSET, what the command line does not give."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS if action.option_strings else _UNSET
        yield
    finally:
        for action, default in saved:
            action.default = default


def _config_path(given: Mapping[str, Any], environ: Mapping[str, str]) -> tuple[str | None, Source]:
    if CONFIG_DEST in given:
        return str(given[CONFIG_DEST]), Source("flag")
    if environ.get(CONFIG_ENV):
        return environ[CONFIG_ENV], Source("env", CONFIG_ENV)
    return None, Source("default")


def _from_env(
    option: Option, args: argparse.Namespace, environ: Mapping[str, str]
) -> Source | None:
    # An empty variable is as good as unset: a unit or a shell can clear one that way.
    text = environ.get(option.env)
    if text:
        setattr(args, option.dest, _convert(option, text, f"${option.env}", from_text=True))
        return Source("env", option.env)
    stand_in = ENV_STAND_INS.get(option.dest)
    if stand_in is not None and environ.get(stand_in):
        return Source("env", stand_in)  # the option keeps its default; the program reads it
    return None


def _from_file(
    option: Option, args: argparse.Namespace, settings: Mapping[str, tuple[Any, Source]]
) -> Source | None:
    if option.key not in settings:
        return None
    value, source = settings[option.key]
    where = f"{source.origin}: " + (f"[{source.table}] " if source.table else "") + option.key
    setattr(args, option.dest, _convert(option, value, where, from_text=False))
    return source


def _file_settings(
    path: str, command: str, parser: argparse.ArgumentParser, commands: Commands | None
) -> dict[str, tuple[Any, Source]]:
    """The values the file at ``path`` holds for ``command``, its keys checked against every
    command's: a key no command has is a typo, not something to ignore."""
    if commands is None:  # another command's key cannot be told from a typo
        keys = {command: {option.key for option in options(parser)}}
    else:
        keys = {name: {option.key for option in options(p)} for name, p in commands().items()}
    known = set().union(*keys.values())
    settings: dict[str, tuple[Any, Source]] = {}
    tables: dict[str, dict[str, Any]] = {}
    loaded = _load(path)
    counters = loaded.get(COUNTERS_TABLE)
    if isinstance(counters, dict):
        loaded[COUNTERS_TABLE], named = _split_counters(counters, keys.get(COUNTERS_TABLE, set()))
        if named and COUNTERS_TABLE in keys.get(command, ()):
            settings[COUNTERS_TABLE] = (named, Source("file", path, COUNTERS_TABLE))
    for key, value in _normal(loaded, path, "").items():
        if isinstance(value, dict):
            if key not in keys:
                if commands is None:
                    continue
                raise ConfigError(f"{path}: [{key}] is not a command with options")
            tables[key] = _normal(value, path, f"[{key}] ")
            for table_key in tables[key]:
                if table_key not in keys[key]:
                    raise ConfigError(f"{path}: [{key}] {table_key}: no such option of {key}")
        elif key not in known:
            if commands is None:
                continue
            raise ConfigError(f"{path}: {key}: no such option of any command")
        elif key in keys.get(command, ()):
            settings[key] = (value, Source("file", path))
    for key, value in tables.get(command, {}).items():
        settings[key] = (value, Source("file", path, command))
    return settings


# The file's [count] table holds the named counters (NAME = "PATTERN", the --count option of
# serve, run and count) beside the count command's own options.
COUNTERS_TABLE = "count"
# In a variable's list of counters, a comma before the next NAME=.
_NEXT_COUNTER = r",(?=\s*[a-z][a-z0-9_]*=)"


def _split_counters(table: dict[str, Any], options: set[str]) -> tuple[dict[str, Any], list[str]]:
    """The [count] table's keys that are options of the count command, and its counters as
    --count would take them (NAME=PATTERN)."""
    own = {key: value for key, value in table.items() if key.replace("_", "-") in options}
    named = []
    for name, pattern in table.items():
        if name not in own:
            if not isinstance(pattern, str):
                raise ConfigError(f'[count] {name}: a pattern is a string, as {name} = "RE"')
            named.append(f"{name}={pattern}")
    return own, named


def _load(path: str) -> dict[str, Any]:
    import tomllib  # only a command given a file pays for it

    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def _normal(table: Mapping[str, Any], path: str, where: str) -> dict[str, Any]:
    """``table`` with ``_`` in its keys read as ``-``; a key written both ways is an error."""
    normal: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("_", "-")
        if name in normal:
            raise ConfigError(f"{path}: {where}{name} is given twice")
        normal[name] = value
    return normal


def _convert(option: Option, raw: Any, where: str, from_text: bool) -> Any:
    """``raw`` checked and converted as the option's flag would be; ``where`` names it in errors.

    ``from_text``: ``raw`` is a variable's text (a list is comma-separated, a boolean 1/0,
    true/false or yes/no); else a TOML value (a list is an array, a boolean true or false).
    """
    action = option.action
    if isinstance(action, argparse._CountAction):
        count = _whole(raw, where) if from_text else raw
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ConfigError(f"{where}: expected a count (0, 1, 2...), not {raw!r}")
        return count
    if action.nargs == 0:  # a flag without a value: store_true, store_false, --no-x
        flag = _boolean(raw, where, from_text)
        if isinstance(action, argparse.BooleanOptionalAction):
            return flag
        return action.const if flag else action.default
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
        if from_text:
            # Counters' patterns may hold commas ({4,}): one starts only where NAME= does.
            separator = _NEXT_COUNTER if option.key == COUNTERS_TABLE else ","
            items: Any = [item.strip() for item in re.split(separator, raw) if item.strip()]
        else:
            items = raw
        if not isinstance(items, list):
            raise ConfigError(f'{where}: expected a list, e.g. {option.key} = ["a", "b"]')
        return [_value(action, item, where) for item in items]
    return _value(action, raw, where)


def _whole(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{where}: expected a count (0, 1, 2...), not {text!r}") from None


def _boolean(raw: Any, where: str, from_text: bool) -> bool:
    if not from_text:
        if isinstance(raw, bool):
            return raw
        raise ConfigError(f"{where}: expected true or false, not {raw!r}")
    word = raw.strip().lower()
    if word in TRUE_WORDS or word in FALSE_WORDS:
        return word in TRUE_WORDS
    raise ConfigError(f"{where}: expected one of {'/'.join(TRUE_WORDS + FALSE_WORDS)}, not {raw!r}")


def _value(action: argparse.Action, raw: Any, where: str) -> Any:
    """One value through the flag's type and choices, from the text the flag would be given."""
    if isinstance(raw, bool) or not isinstance(raw, str | int | float):
        raise ConfigError(f"{where}: expected a single value, not {raw!r}")
    text = raw if isinstance(raw, str) else str(raw)
    convert: Callable[[str], Any] = action.type if callable(action.type) else str
    try:
        value = convert(text)
    except argparse.ArgumentTypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    except (TypeError, ValueError):
        name = getattr(action.type, "__name__", "")
        raise ConfigError(f"{where}: invalid {name} value: {raw!r}") from None
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(repr, action.choices))
        raise ConfigError(f"{where}: invalid choice: {raw!r} (choose from {choices})")
    return value
