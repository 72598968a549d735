"""``logdispatch summary --history PATH``: every version the ledger holds of one path, oldest
first, with what became of each (counted, superseded, failed...) and the content it was
counted as, when that was first counted under another path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dispatcher.ledger.queries import HISTORY_FIELDS, select_history
from dispatcher.ledger.reader import read_latest
from dispatcher.views import summary
from dispatcher.views.entries import iso_time
from workers.common import decode_path, display_path, encode_path, printable

if TYPE_CHECKING:  # rich loads only with a table
    from rich.console import JustifyMethod


def history_entry(row: tuple[Any, ...]) -> dict[str, Any]:
    entry = dict(zip(HISTORY_FIELDS, row, strict=True))
    entry["mtime"] = iso_time(entry["mtime"])
    entry["finished_at"] = iso_time(entry["finished_at"])
    entry["same_as"] = None if entry["same_as"] is None else decode_path(entry["same_as"])
    return entry


def show_history(state_dir: Path, shown: str, fmt: str, out: TextIO) -> None:
    """Print in ``fmt`` every version of the path ``shown`` (as summaries show paths)."""
    path = encode_path(shown)
    _, rows = read_latest(state_dir, select_history(path))
    entries = map(history_entry, rows)
    if fmt == "json":
        head = {"path": decode_path(path)}
        summary.write_json(out, head, "versions", map(json.dumps, entries))
    elif fmt == "csv":
        summary.write_csv(out, HISTORY_FIELDS, (entry.values() for entry in entries))
    else:
        _history_table(path, list(entries), out)


def _history_table(path: bytes, entries: list[dict[str, Any]], out: TextIO) -> None:
    from rich import box
    from rich.table import Table
    from rich.text import Text

    console = summary.console_for(out)
    if not entries:
        console.print(Text(f"No version of {display_path(path)} in the ledger."))
        return
    table = Table(box=box.SIMPLE_HEAD, title=Text(display_path(path)))
    numbers = ("id", "size", "lines", "errors", "own lines")
    time_width = len("YYYY-MM-DD HH:MM:SS")
    for title in ("id", "status", "size", "mtime", "lines", "errors", "own lines", "finished"):
        justify: JustifyMethod = "right" if title in numbers else "left"
        width = time_width if title in ("mtime", "finished") else len(title)
        table.add_column(title, no_wrap=True, justify=justify, min_width=width)

    def number(value: int | None) -> str:
        return "-" if value is None else f"{value:,}"

    for entry in entries:
        table.add_row(
            str(entry["id"]),
            entry["status"],
            number(entry["size"]),
            _local(entry["mtime"]),
            number(entry["lines"]),
            number(entry["error_lines"]),
            number(entry["own_lines"]),
            _local(entry["finished_at"]),
        )
    console.print(table)
    # Too wide for a column: the few versions whose content was counted under another path.
    for entry in entries:
        if entry["same_as"] is not None:
            same_as = printable(entry["same_as"])
            console.print(Text(f"{entry['id']}: its content was counted first as {same_as}"))


def _local(iso: str | None) -> str:
    """An ISO time of history_entry as the tables show times."""
    return "-" if iso is None else iso[:19].replace("T", " ")
