"""What ``logdispatch summary`` shows: one row per file (dispatcher.views.summary), totals per
folder, worker, host or day, the failed and vanished files, or the most frequent error messages;
every version of one path is dispatcher.views.history's."""

from __future__ import annotations

import datetime
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dispatcher import defaults
from dispatcher.ledger.queries import (
    GROUP_FIELDS,
    select_failed,
    select_groups,
    select_samples,
)
from dispatcher.ledger.reader import EVERYTHING, Scope, read_latest
from dispatcher.ledger.rows import FileRow
from dispatcher.views import summary
from dispatcher.views.entries import FAILED_ENTRY, EntryFormat
from dispatcher.views.history import show_history
from workers.common import COUNTER_NAME, decode_path, display_path, printable
from workers.errors import ConfigError
from workers.scans import SAMPLE_LINES

if TYPE_CHECKING:  # rich loads only with a table, the masking patterns with --errors
    from rich.text import Text

    from dispatcher.views.messages import Message, Tally

FAILED_FORMAT = EntryFormat("failed", FAILED_ENTRY)
FAILED_FIELDS = FAILED_FORMAT.keys
MESSAGE_FIELDS = ("message", "sampled_lines", "files", "example", "path")
# A group's name in the table's header, and what its rows without a key stand for.
_GROUP_TITLES = {"dir": "folder", "worker": "worker", "host": "host", "day": "day"}
_NO_KEY = {"worker": "(no worker yet)", "host": "(no worker yet)", "day": "(not finished)"}


@dataclass(frozen=True)
class View:
    """The summary options, checked together: one view, sorted and cut."""

    by: str = "file"
    depth: int | None = None
    sort: str | None = None
    top: int | None = None
    failed: bool = False
    errors: bool = False
    paths: str | None = None  # a glob: only the paths that match it, totals too
    history: str | None = None  # a path as shown: every version of it, not a view of files
    since: float | None = None  # only versions finished since (or not yet), totals too

    def __post_init__(self) -> None:
        if self.history is not None and (
            self.by != "file"
            or self.failed
            or self.errors
            or self.sort
            or self.top
            or self.paths
            or self.since is not None
        ):
            raise ConfigError(
                "--history lists the versions of one path: --by, --failed, --errors, --sort, "
                "--top, --path and --since do not apply"
            )
        if (
            self.sort is not None
            and self.sort not in defaults.SUMMARY_SORTS
            and not COUNTER_NAME.fullmatch(self.sort)
        ):
            raise ConfigError(
                f"--sort {printable(self.sort)}: lines, errors, rate or a counter's name"
            )
        if self.failed and self.errors:
            raise ConfigError("--failed and --errors are two views: choose one")
        for flag, on, why in (
            ("--failed", self.failed, f"--by {self.by} counts the failed files of each group"),
            ("--errors", self.errors, "messages are tallied over all files"),
        ):
            if on and self.by != "file":
                raise ConfigError(f"{flag} and --by {self.by} do not go together: {why}")
        if self.depth is not None and self.by != "dir":
            raise ConfigError("--depth goes with --by dir only")
        if self.depth is not None and self.depth < 1:
            raise ConfigError("--depth must be at least 1")
        if self.top is not None and self.top < 1:
            raise ConfigError("--top must be at least 1")
        if self.failed and (self.sort or self.top):
            raise ConfigError(
                "--failed lists every failed or vanished file by path: --sort and --top do not "
                "apply (--rows cuts the table)"
            )
        if self.errors and self.sort:
            raise ConfigError(
                "--errors lists messages by their sampled lines, most first: --sort does not "
                "apply (--top N keeps the first N)"
            )

    @property
    def scope(self) -> Scope:
        return Scope(self.paths, self.since)

    @property
    def order(self) -> str | None:
        """What rows are sorted by: --sort, else error lines when cut with --top."""
        return self.sort or ("errors" if self.top and not self.errors else None)


def show(state_dir: Path, view: View, fmt: str, out: TextIO, rows: int) -> int:
    """Print ``view`` of the ledger in ``fmt``; a table shows at most ``rows`` rows (0: all).

    Returns the number of files failed or vanished for the ``failed`` view, else 0.
    """
    if view.history is not None:
        show_history(state_dir, view.history, fmt, out)
        return 0
    if view.failed:
        return _show_failed(state_dir, fmt, out, rows, view.scope)
    if view.errors:
        _show_messages(state_dir, view.top, fmt, out, rows, view.scope)
    elif view.by != "file":
        _show_groups(state_dir, view, fmt, out, rows)
    elif fmt == "table":
        document = summary.build(state_dir, rows, view.order, view.top, view.scope)
        summary.render_table(document, out, rows, view.order, view.top)
    else:
        summary.write(state_dir, fmt, out, view.order, view.top, view.scope)
    return 0


# ----------------------------------------------------------------------------------- groups


def read_groups(
    state_dir: Path, view: View, limit: int | None = None
) -> tuple[dict[str, Any], Iterator[tuple[Any, ...]]]:
    """Totals, and one row per group: the GROUP_FIELDS values and the number of groups.

    Groups come by key (no key last), or most first by ``view.order``; at most ``view.top``
    of them, and ``limit``.
    """
    select = select_groups(view.by, view.depth, view.order, view.top, limit)
    return read_latest(state_dir, select, view.scope)


def _show_groups(state_dir: Path, view: View, fmt: str, out: TextIO, rows: int) -> None:
    totals, groups = read_groups(state_dir, view, rows if fmt == "table" else None)
    entries = (group_entry(view.by, group) for group in groups)
    head: dict[str, Any] = {"totals": totals, "by": view.by}
    if view.by == "dir":
        head["depth"] = view.depth or 1
    if fmt == "json":
        summary.write_json(out, head, "groups", map(json.dumps, entries))
    elif fmt == "csv":
        cells = ((*list(e.values())[:-1], summary.counts_text(e["counts"])) for e in entries)
        summary.write_csv(out, GROUP_FIELDS, cells)
    else:
        _groups_table(view, totals, list(groups), out)


def group_entry(by: str, group: tuple[Any, ...]) -> dict[str, Any]:
    key = decode_path(group[0]) if by == "dir" else group[0]
    return dict(zip(GROUP_FIELDS, (key, *group[1:-1]), strict=True))


def _groups_table(
    view: View, totals: dict[str, Any], groups: list[tuple[Any, ...]], out: TextIO
) -> None:
    from rich import box
    from rich.filesize import decimal
    from rich.table import Table
    from rich.text import Text

    title = _GROUP_TITLES[view.by]
    if view.by == "dir" and (view.depth or 1) > 1:
        title += f" (depth {view.depth})"
    table = Table(box=box.SIMPLE_HEAD, show_footer=True)
    table.add_column(title, footer="total", overflow="fold", min_width=10)
    table.add_column("files", justify="right", footer=f"{totals['files']:,}")
    table.add_column("lines", justify="right", footer=f"{totals['lines']:,}")
    table.add_column("error lines", justify="right", footer=f"{totals['error_lines']:,}")
    table.add_column(
        "error rate",
        justify="right",
        footer=summary.rate_text(totals["error_lines"], totals["lines"]),
    )
    names = summary.add_counter_columns(table, totals)
    table.add_column("size", justify="right", footer=decimal(totals["bytes"]))
    table.add_column("not done", footer=summary.not_done_text(totals))
    for group in groups:
        entry = group_entry(view.by, group)
        key = _NO_KEY[view.by] if entry["key"] is None else printable(entry["key"])
        table.add_row(
            Text(key),  # a folder named "[red]" is a name, not markup
            f"{entry['files']:,}",
            f"{entry['lines']:,}",
            f"{entry['error_lines']:,}",
            summary.rate_text(entry["error_lines"], entry["lines"]),
            *(f"{entry['counts'].get(name, 0):,}" for name in names),
            decimal(entry["bytes"]),
            summary.not_done_text(entry),
            style=None if entry["done"] == entry["files"] else "yellow",
        )
    console = summary.console_for(out, len(names))
    console.print(table)
    console.print(_group_note(view, groups))


def _group_note(view: View, groups: list[tuple[Any, ...]]) -> Text:
    from rich.text import Text

    count = groups[0][-1] if groups else 0
    noun = _GROUP_TITLES[view.by] + ("" if count == 1 else "s")
    if len(groups) < count:
        order = summary.sort_words(view.order) if view.order else "by name"
        note = summary.shown_note(len(groups), count, noun, order, view.top)
    else:
        note = Text(f"{count:,} {noun}.")
    note.append(" Sizes are those of the done files, on disk.")
    if view.by == "day":
        note.append(
            " A file's day is when it was finished, in this machine's local time; pending "
            "files have none."
        )
    return note


# ----------------------------------------------------------------------------------- failed


def read_failed(
    state_dir: Path, limit: int | None = None, scope: Scope = EVERYTHING
) -> tuple[dict[str, Any], Iterator[FileRow]]:
    """Totals, and the failed and vanished files (latest versions) by path, at most ``limit``;
    of the ``scope`` only."""
    totals, rows = read_latest(state_dir, select_failed(limit), scope)
    return totals, map(FileRow._make, rows)


def _show_failed(state_dir: Path, fmt: str, out: TextIO, rows: int, scope: Scope) -> int:
    totals, files = read_failed(state_dir, rows if fmt == "table" else None, scope)
    if fmt == "json":
        summary.write_json(out, {"totals": totals}, "files", map(FAILED_FORMAT.json, files))
    elif fmt == "csv":
        summary.write_csv(out, FAILED_FIELDS, map(FAILED_FORMAT.csv_values, files))
    else:
        _failed_table(totals, list(files), out)
    return int(totals["failed"] + totals["vanished"])


def local_time(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def _failed_table(totals: dict[str, Any], files: list[FileRow], out: TextIO) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    failed = totals["failed"] + totals["vanished"]
    console = summary.console_for(out)
    if not failed:
        console.print(f"No file failed or vanished, of {totals['files']:,}.")
        return
    table = Table(box=box.SIMPLE_HEAD)
    table.add_column("path", overflow="fold", ratio=3)
    for title in ("status", "attempts", "worker", "when"):
        table.add_column(title, no_wrap=True, justify="right" if title == "attempts" else "left")
    table.add_column("reason", overflow="fold", ratio=4)
    for row in files:
        table.add_row(
            Text(display_path(row.path)),
            row.status,
            f"{row.attempts:,}",
            Text(printable(row.worker or "-")),
            local_time(row.finished_at),
            Text(printable(row.error or "-")),
            style="yellow",
        )
    console.print(table)
    if len(files) < failed:
        noun = "failed or vanished files"
        console.print(summary.shown_note(len(files), failed, noun, "by path", None))
    console.print(
        f"{totals['failed']:,} failed and {totals['vanished']:,} vanished, of "
        f"{totals['files']:,} files."
    )


# --------------------------------------------------------------------------------- messages


def read_messages(state_dir: Path, scope: Scope = EVERYTHING) -> tuple[dict[str, Any], Tally, int]:
    """Totals, the messages of the sample error lines, and how many files have error lines.

    The samples come from at most ERROR_SAMPLE_FILES files, those with the most error lines
    (the first counted among equals).
    """
    files_with_errors = 0

    def select(db: sqlite3.Connection, totals: dict[str, Any]) -> sqlite3.Cursor:
        nonlocal files_with_errors
        files_with_errors, samples = select_samples(db)
        return samples

    from dispatcher.views.messages import tally

    totals, samples = read_latest(state_dir, select, scope)
    return totals, tally(samples), files_with_errors


def _show_messages(
    state_dir: Path, top: int | None, fmt: str, out: TextIO, rows: int, scope: Scope
) -> None:
    totals, found, files_with_errors = read_messages(state_dir, scope)
    messages = found.messages[:top]
    sampled = {
        "files": found.files,
        "lines": found.sampled_lines,
        "files_with_error_lines": files_with_errors,
        "lines_per_file": SAMPLE_LINES,
    }
    if fmt == "json":
        entries = (json.dumps(message_entry(m)) for m in messages)
        summary.write_json(out, {"totals": totals, "sampled": sampled}, "messages", entries)
    elif fmt == "csv":
        summary.write_csv(out, MESSAGE_FIELDS, (message_entry(m).values() for m in messages))
    else:
        _messages_table(
            totals, found, messages[: rows or None], len(messages), files_with_errors, out
        )


def message_entry(message: Message) -> dict[str, Any]:
    from dispatcher.views.messages import line_text

    return {
        "message": line_text(message.text),
        "sampled_lines": message.sampled_lines,
        "files": message.files,
        "example": line_text(message.example),
        "path": decode_path(message.path),
    }


def _messages_table(
    totals: dict[str, Any],
    found: Tally,
    messages: list[Message],
    listed: int,
    files_with_errors: int,
    out: TextIO,
) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    console = summary.console_for(out)
    if not messages:
        console.print(f"No error line sampled, of {totals['files']:,} files.")
        return
    table = Table(box=box.SIMPLE_HEAD, show_lines=True)
    table.add_column("sampled lines", justify="right")
    table.add_column("files", justify="right")
    table.add_column("message, then an example and its file", overflow="fold")
    for message in messages:
        entry = message_entry(message)
        cell = Text(printable(entry["message"]))
        cell.append("\n" + printable(entry["example"]), style="dim")
        cell.append("\n" + printable(entry["path"]), style="dim italic")
        table.add_row(f"{entry['sampled_lines']:,}", f"{entry['files']:,}", cell)
    console.print(table)
    notes = [
        f"Counts are of sampled lines: the first {SAMPLE_LINES} error lines of each file "
        f"({found.sampled_lines:,} lines from {found.files:,} files), not of all "
        f"{totals['error_lines']:,} error lines. Numbers, ids, addresses, times and quoted "
        "values are masked."
    ]
    if files_with_errors > defaults.ERROR_SAMPLE_FILES:
        notes.append(
            f"Samples read from the {defaults.ERROR_SAMPLE_FILES:,} files with the most error "
            f"lines, of {files_with_errors:,} files with error lines."
        )
    if len(messages) < listed:
        notes.append(str(summary.shown_note(len(messages), listed, "messages", "most first", None)))
    for note in notes:
        console.print(Text(note))
