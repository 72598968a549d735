"""``logdispatch config``: each option's value and where it came from, as the command would
resolve it (``workers.config``), the authkey only as set or not; for a command that starts
something, what would stop it (``dispatcher.cli.preflight``)."""

from __future__ import annotations

import argparse
import os
from typing import Any, TextIO

from workers.common import AUTHKEY_ENV, load_authkey
from workers.config import CONFIG_DEST, REQUIRED, Option, Resolution, Source
from workers.errors import ConfigError


def show(
    resolution: Resolution, out: TextIO, as_json: bool, problems: list[str] | None = None
) -> None:
    """Each option's value and source as a table (or JSON); the authkey only as set or not;
    then the ``problems`` that would stop the command, or that it is ready (None: not checked).
    """
    entries = _entries(resolution)
    authkey = _authkey(resolution)
    if as_json:
        import json

        document: dict[str, Any] = {
            "command": resolution.command,
            "options": {
                key: {"value": value, **_source_json(source)} for key, value, source in entries
            },
        }
        if authkey is not None:
            state, source = authkey
            document["authkey"] = {"set": state == "set", **_source_json(source)}
            if state != "set":
                document["authkey"]["error"] = state
        if problems is not None:
            document["problems"] = problems
            document["ready"] = not problems
        json.dump(document, out, indent=2)
        out.write("\n")
        return
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, title=f"logdispatch {resolution.command}")
    for column in ("option", "value", "source"):
        table.add_column(column, overflow="fold")
    for key, value, source in entries:
        missing = source.kind == "missing"
        # Text(), not str: a pattern such as [Ee]rror is a value, not markup.
        shown = Text("required, not given" if missing else _text(value))
        table.add_row(key, shown, Text(str(source)), style="red" if missing else None)
    if authkey is not None:
        state, source = authkey
        style = None if state == "set" else "red"
        table.add_row("authkey", Text(state), Text(str(source)), style=style)
    console = Console(file=out, width=max(100, Console().width), highlight=False)
    console.print(table)
    if problems:
        console.print(Text(f"logdispatch {resolution.command} would not start:", style="red"))
        for problem in problems:
            console.print(Text(f"  - {problem}"), soft_wrap=True)  # one line each, for grep
    elif problems is not None:
        console.print(Text("ready", style="green"))


def _entries(resolution: Resolution) -> list[tuple[str, Any, Source]]:
    """(key, value as JSON holds it, source) for ``--config`` and each option."""
    entries = []
    if CONFIG_DEST in resolution.sources:
        path = getattr(resolution.args, CONFIG_DEST)
        entries.append((CONFIG_DEST, path, resolution.sources[CONFIG_DEST]))
    for option in resolution.options:
        value = _shown(option, getattr(resolution.args, option.dest))
        entries.append((option.key, value, resolution.sources[option.dest]))
    return entries


def _shown(option: Option, value: Any) -> Any:
    """A value as JSON would hold it, a flag without a value as whether it is on."""
    action = option.action
    if value is REQUIRED:
        return None
    if action.nargs == 0 and not isinstance(
        action, argparse._CountAction | argparse.BooleanOptionalAction
    ):
        return value == action.const
    if isinstance(value, list):
        return [_shown_item(item) for item in value]
    return _shown_item(value)


def _shown_item(value: Any) -> Any:
    return value if value is None or isinstance(value, bool | int | float | str) else str(value)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    return str(value)


def _source_json(source: Source) -> dict[str, str]:
    found = {"source": source.kind}
    if source.kind == "env" and source.origin:
        found["variable"] = source.origin
    if source.kind == "file" and source.origin:
        found["file"] = source.origin
        if source.table:
            found["table"] = source.table
    return found


def _authkey(resolution: Resolution) -> tuple[str, Source] | None:
    """Whether the command would find its key, and where: never the key itself."""
    if not any(o.dest == "authkey_file" for o in resolution.options):
        return None
    path = resolution.args.authkey_file
    if path is not None:
        source = Source("file", path)
    elif os.environ.get(AUTHKEY_ENV):  # an empty variable is as good as unset
        source = Source("env", AUTHKEY_ENV)
    else:
        return "not set", Source("missing")
    try:
        load_authkey(path)
    except ConfigError as e:
        return str(e), source
    return "set", source
