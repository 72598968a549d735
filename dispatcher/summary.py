"""Summaries of the ledger: one row per file (its latest version) and totals."""

from __future__ import annotations

import csv
import json
from json.encoder import encode_basestring_ascii
from pathlib import Path
from typing import Any, TextIO

from dispatcher.common import decode_path, printable
from dispatcher.defaults import TABLE_ROWS
from dispatcher.ledger import FileRow, read_summary
from dispatcher.ondone import MOVED_TO

# A file's entry in every format: the JSON keys and the CSV columns, in this order.
FILE_FIELDS = (
    "path", "status", "lines", "error_lines", "bytes", "worker", "attempts", "error", "on_done",
)  # fmt: skip


def build(state_dir: Path, limit: int | None = None) -> dict[str, Any]:
    """The summary document: ``{"totals": {...}, "files": [...]}`` as DESIGN.md fixes it.

    With ``limit`` (a table's view), "files" holds at most that many: if there are more, those
    that most need attention (not done first, then most error lines). Totals count them all.
    """
    totals, rows = read_summary(state_dir, limit or None)
    return {"totals": totals, "files": [_file_entry(row) for row in rows]}


def write(state_dir: Path, fmt: str, out: TextIO) -> None:
    """The whole document as ``fmt`` ("json" or "csv"), written as the ledger is read."""
    totals, rows = read_summary(state_dir)
    if fmt == "json":
        out.write('{\n  "totals": ' + json.dumps(totals) + ',\n  "files": [')
        separator = "\n    "
        for row in rows:
            out.write(separator + json_entry(row))
            separator = ",\n    "
        out.write("\n  ]\n}\n")
    else:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(FILE_FIELDS)
        writer.writerows(map(_file_values, rows))


def json_entry(row: FileRow) -> str:
    """``json.dumps(_file_entry(row))``, written out: json.dumps per entry took 9 us of the 15
    a row cost at a million rows."""
    return (
        f'{{"path": {_json_text(decode_path(row.path))}, "status": {_json_text(row.status)}, '
        f'"lines": {_json_int(row.lines)}, "error_lines": {_json_int(row.error_lines)}, '
        f'"bytes": {_json_int(row.size)}, "worker": {_json_text(row.worker)}, '
        f'"attempts": {_json_int(row.attempts)}, "error": {_json_text(row.error)}, '
        f'"on_done": {_json_text(row.on_done)}}}'
    )


def _json_text(text: str | None) -> str:
    return "null" if text is None else encode_basestring_ascii(text)


def _json_int(number: int | None) -> str:
    return "null" if number is None else str(int(number))


def _file_values(row: FileRow) -> tuple[Any, ...]:
    """A file's entry as values in FILE_FIELDS order."""
    return (
        decode_path(row.path),
        row.status,
        row.lines,
        row.error_lines,
        row.size,
        row.worker,
        row.attempts,
        row.error,
        row.on_done,
    )


def _file_entry(row: FileRow) -> dict[str, Any]:
    return dict(zip(FILE_FIELDS, _file_values(row), strict=True))


def _attention_first(entry: dict[str, Any]) -> tuple[bool, int, str]:
    return (entry["status"] == "done", -(entry["error_lines"] or 0), entry["path"])


def render_table(summary: dict[str, Any], out: TextIO, table_rows: int = TABLE_ROWS) -> None:
    """Print ``summary`` (from ``build``) as a table of at most ``table_rows`` files (0: all)."""
    # rich loads here only: `count` and the JSON and CSV formats start faster without it.
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    files = summary["files"]
    totals = summary["totals"]
    if table_rows and len(files) > table_rows:
        files = sorted(files, key=_attention_first)[:table_rows]
    note = None
    if len(files) < totals["files"]:
        note = (
            f"Showing {len(files)} of {totals['files']:,} files (not done first, then most "
            "error lines); --rows 0 shows all."
        )
    table = Table(box=box.SIMPLE_HEAD, show_footer=True)
    table.add_column(
        "path",
        footer=f"{totals['files']:,} file{'' if totals['files'] == 1 else 's'}",
        overflow="fold",
    )
    table.add_column("lines", justify="right", footer=f"{totals['lines']:,}")
    table.add_column("error lines", justify="right", footer=f"{totals['error_lines']:,}")
    table.add_column("status", footer=_status_footer(totals))
    for entry in files:
        status = entry["status"]
        if entry["error"] and status != "done":
            status = f"{status}: {entry['error']}"
        elif entry.get("on_done"):
            # The row shows the path already; JSON and CSV say where the file went.
            after = "moved" if entry["on_done"].startswith(MOVED_TO) else entry["on_done"]
            status = f"{status}, {after}"
        # Text(), not str: a file named "[red]x" is a name, not markup.
        table.add_row(
            Text(printable(entry["path"])),
            _number(entry["lines"]),
            _number(entry["error_lines"]),
            Text(printable(status)),
            style=None if entry["status"] == "done" else "yellow",
        )
    console = Console(file=out, width=max(100, Console().width), highlight=False)
    console.print(table)
    if note:
        console.print(note)


def _status_footer(totals: dict[str, int]) -> str:
    parts = [f"{totals['done']:,} done"]
    parts += [f"{totals[k]:,} {k}" for k in ("failed", "vanished", "pending") if totals[k]]
    return ", ".join(parts)


def _number(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
