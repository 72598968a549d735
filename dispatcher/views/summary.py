"""Summaries of the ledger: one row per file (its latest version) and totals; the JSON, CSV
and table pieces the other views (dispatcher.views.groups) share."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from dispatcher.defaults import TABLE_ROWS
from dispatcher.ledger.queries import SORT_KEYS, select_files
from dispatcher.ledger.reader import EVERYTHING, Scope, read_latest, read_summary
from dispatcher.versions import MOVED_TO
from dispatcher.views.entries import FILE_FIELDS, file_csv_values, file_entry, json_entry
from workers.common import printable

if TYPE_CHECKING:  # rich loads only with a table
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

_T = TypeVar("_T")

# How each --sort orders rows, in words for the tables' notes.
SORT_WORDS = {"lines": "most lines", "errors": "most error lines", "rate": "highest error rate"}


def sort_words(sort: str) -> str:
    """How ``sort`` orders rows, in words: one of SORT_WORDS, or a named counter's."""
    return SORT_WORDS.get(sort) or f"most {sort} lines"


def build(
    state_dir: Path,
    limit: int | None = None,
    sort: str | None = None,
    top: int | None = None,
    scope: Scope = EVERYTHING,
) -> dict[str, Any]:
    """The summary document: ``{"totals": {...}, "files": [...]}`` as docs/summary.md fixes it.

    With ``limit`` (a table's view), "files" holds at most that many: if there are more, those
    that most need attention (not done first, then most error lines), or the first by
    ``sort``. ``sort``, ``top`` and ``scope`` are read_summary's. Totals count them all.
    """
    totals, rows = read_summary(state_dir, limit or None, sort, top, scope)
    return {"totals": totals, "files": [file_entry(row) for row in rows]}


def write(
    state_dir: Path,
    fmt: str,
    out: TextIO,
    sort: str | None = None,
    top: int | None = None,
    scope: Scope = EVERYTHING,
) -> None:
    """The whole document as ``fmt`` ("json" or "csv"), written as the ledger is read.

    The CSV holds no totals: they are read only when ``sort`` names a counter (to check it).
    """
    totals_needed = fmt == "json" or (sort is not None and sort not in SORT_KEYS)
    select = select_files(None, sort, top)
    # The query's tuples as they are: the entry functions read them by index, as FileRows.
    totals, rows = read_latest(state_dir, select, scope, totals_needed, sorts=sort is not None)
    if fmt == "json":
        write_json(out, {"totals": totals}, "files", map(json_entry, rows))
    else:
        write_csv(out, FILE_FIELDS, map(file_csv_values, rows))


def counts_text(counts: dict[str, int]) -> str:
    """Named counts in a CSV cell: their JSON, compact."""
    return json.dumps(counts, separators=(",", ":"))


def add_counter_columns(table: Table, totals: dict[str, Any]) -> list[str]:
    """A column for each named counter of the totals, its total in the footer, and the
    number of done files counted without it if any; returns their names, in order."""
    for name, count in totals["counts"].items():
        lacking = totals["lacking"][name]
        footer = f"{count:,}" + (f" ({lacking:,} without)" if lacking else "")
        table.add_column(name, justify="right", footer=footer)
    return list(totals["counts"])


def counter_text(entry: dict[str, Any], name: str) -> str:
    """A file's count of the counter ``name``; "-" for a done file counted without it."""
    count = entry["counts"].get(name)
    if count is None:
        return "-" if entry["status"] == "done" else ""
    return f"{count:,}"


def write_json(out: TextIO, head: dict[str, Any], key: str, entries: Iterable[str]) -> None:
    """A JSON object of the ``head`` keys and then ``key``, a list of ``entries`` (JSON texts)
    written as they come: a million of them need no list."""
    out.write("{")
    for name, value in head.items():
        out.write(f"\n  {json.dumps(name)}: {json.dumps(value)},")
    out.write(f"\n  {json.dumps(key)}: [")
    separator = "\n    "
    for block in _blocks(entries):
        out.write(separator + ",\n    ".join(block))
        separator = ",\n    "
    out.write("\n  ]\n}\n")


def write_csv(out: TextIO, header: Iterable[str], rows: Iterable[Iterable[Any]]) -> None:
    """CSV rows written a block at a time, as they come."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    buffer = io.StringIO()
    in_buffer = csv.writer(buffer, lineterminator="\n")
    for block in _blocks(rows):
        buffer.seek(0)
        buffer.truncate()
        in_buffer.writerows(block)
        out.write(buffer.getvalue())


# Entries or rows written in one write: a write per row was a good part of what a row cost,
# and a block this size is a small bounded amount of memory.
WRITE_BLOCK = 2000


def _blocks(items: Iterable[_T]) -> Iterator[list[_T]]:
    iterator = iter(items)
    while block := list(itertools.islice(iterator, WRITE_BLOCK)):
        yield block


def _attention_first(entry: dict[str, Any]) -> tuple[bool, int, str]:
    return (entry["status"] == "done", -(entry["error_lines"] or 0), entry["path"])


def render_table(
    summary: dict[str, Any],
    out: TextIO,
    table_rows: int = TABLE_ROWS,
    sort: str | None = None,
    top: int | None = None,
) -> None:
    """Print ``summary`` (from ``build``) as a table of at most ``table_rows`` files (0: all);
    with ``sort``, its files are in that order already, and ``top`` cut them."""
    # rich loads here only: `count` and the JSON and CSV formats start faster without it.
    from rich import box
    from rich.table import Table
    from rich.text import Text

    files = summary["files"]
    totals = summary["totals"]
    if table_rows and len(files) > table_rows:
        files = files[:table_rows] if sort else sorted(files, key=_attention_first)[:table_rows]
    order = sort_words(sort) if sort else "not done first, then most error lines"
    table = Table(box=box.SIMPLE_HEAD, show_footer=True)
    table.add_column(
        "path",
        footer=f"{totals['files']:,} file{'' if totals['files'] == 1 else 's'}",
        overflow="fold",
    )
    table.add_column("lines", justify="right", footer=f"{totals['lines']:,}")
    table.add_column("error lines", justify="right", footer=f"{totals['error_lines']:,}")
    if sort == "rate":
        table.add_column(
            "error rate", justify="right", footer=rate_text(totals["error_lines"], totals["lines"])
        )
    names = add_counter_columns(table, totals)
    table.add_column("status", footer=status_text(totals))
    for entry in files:
        status = entry["status"]
        if entry["error"] and status != "done":
            status = f"{status}: {entry['error']}"
        elif entry.get("on_done"):
            # The row shows the path already; JSON and CSV say where the file went.
            after = "moved" if entry["on_done"].startswith(MOVED_TO) else entry["on_done"]
            status = f"{status}, {after}"
        elif entry.get("gone"):
            status = f"{status}, gone"  # counted, and no longer in the root
        if entry.get("same_as"):
            # Its lines are in the totals once, under the other path.
            status = f"{status}, same as {entry['same_as']}"
        rate = [rate_text(entry["error_lines"], entry["lines"])] if sort == "rate" else []
        # Text(), not str: a file named "[red]x" is a name, not markup.
        table.add_row(
            Text(printable(entry["path"])),
            number_text(entry["lines"]),
            number_text(entry["error_lines"]),
            *rate,
            *(counter_text(entry, name) for name in names),
            Text(printable(status)),
            style=None if entry["status"] == "done" else "yellow",
        )
    console = console_for(out, len(names))
    console.print(table)
    if len(files) < totals["files"]:
        console.print(shown_note(len(files), totals["files"], "files", order, top))


def console_for(out: TextIO, counters: int = 0) -> Console:
    """A console for a table, as wide as the terminal but at least 100 columns, and room for
    ``counters`` more columns of named counts, so that paths are not folded to a few
    characters."""
    from rich.console import Console

    width = max(100 + COUNTER_COLUMN_WIDTH * counters, Console().width)
    return Console(file=out, width=width, highlight=False)


# What a named counter's column takes in a table: its count and the space between columns.
COUNTER_COLUMN_WIDTH = 10


def shown_note(shown: int, total: int, noun: str, order: str, top: int | None) -> Text:
    """The line under a table that shows ``shown`` of ``total`` rows, and why."""
    from rich.text import Text

    note = f"Showing {shown:,} of {total:,} {noun} ({order})"
    if top is None or shown < top:
        note += "; --rows 0 shows all"
    return Text(note + ".")


def status_text(counts: dict[str, int]) -> str:
    """How many files are done (and of those, gone from the root), failed, vanished and
    pending, the zeros left out but done."""
    not_done = not_done_text(counts)
    gone = f" ({counts['gone']:,} gone)" if counts.get("gone") else ""
    return f"{counts['done']:,} done{gone}" + (f", {not_done}" if not_done else "")


def not_done_text(counts: dict[str, int]) -> str:
    """How many files are failed, vanished and pending, the zeros left out."""
    return ", ".join(f"{counts[k]:,} {k}" for k in ("failed", "vanished", "pending") if counts[k])


def number_text(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def rate_text(error_lines: int | None, lines: int | None) -> str:
    """Error lines per line as a percentage; "-" for a file not counted."""
    if lines is None or error_lines is None:
        return "-"
    return f"{error_lines / lines if lines else 0:.2%}"
