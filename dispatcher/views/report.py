"""``logdispatch report``: the ledger as one self-contained HTML page (inline CSS and SVG, no
script), also served live by ``serve --http``.

Its numbers come from the queries of ``logdispatch summary`` (dispatcher.ledger.queries), all
run in one snapshot of the ledger.
"""

from __future__ import annotations

import datetime
import math
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import Markup

from dispatcher import defaults
from dispatcher.ledger import sums
from dispatcher.ledger.queries import (
    select_failed,
    select_files,
    select_groups,
    select_samples,
)
from dispatcher.ledger.reader import snapshot
from dispatcher.ledger.rows import FileRow
from dispatcher.views import charts, groups, summary
from dispatcher.views.messages import Tally, tally
from workers.common import display_path, printable
from workers.errors import ConfigError
from workers.scans import SAMPLE_LINES

FILES_COLOUR = "#2f6fad"
ERRORS_COLOUR = "#c0392b"
COUNTERS_COLOUR = "#2f6fad"  # not red: a counter's lines are not errors
NOTHING_YET = "No file has been counted yet."


@dataclass(frozen=True)
class Timeline:
    """Done files and their error lines per bucket of their finishing time, gaps as zeros."""

    buckets: charts.Buckets
    files: list[int]
    error_lines: list[int]


@dataclass(frozen=True)
class Report:
    """What the page shows, read from one snapshot of the ledger."""

    root: str | None
    totals: dict[str, Any]
    first: float | None  # the first and last finished_at, of any file
    last: float | None
    folders: list[dict[str, Any]]  # groups.group_entry()s, most error lines first
    folder_count: int
    by_rate: list[FileRow]
    by_errors: list[FileRow]
    failed: list[FileRow]
    messages: Tally
    files_with_errors: int
    timeline: Timeline


def read(state_dir: Path) -> Report:
    """Everything the page shows, from one snapshot of the ledger in ``state_dir``."""
    with snapshot(state_dir) as (db, totals):
        return _read(db, totals)


def _read(db: sqlite3.Connection, totals: dict[str, Any]) -> Report:
    by_folder = select_groups("dir", order="errors", top=defaults.REPORT_FOLDERS)
    folders = list(by_folder(db, totals))
    files_with_errors, samples = select_samples(db)
    first, last, timeline = _timeline(db)
    (root,) = db.execute("SELECT value FROM meta WHERE key = 'root'").fetchone() or (None,)
    return Report(
        root=root,
        totals=totals,
        first=first,
        last=last,
        folders=[groups.group_entry("dir", group) for group in folders],
        folder_count=folders[0][-1] if folders else 0,
        by_rate=_files(select_files(sort="rate", top=defaults.REPORT_TOP_FILES)(db, totals)),
        by_errors=_files(select_files(sort="errors", top=defaults.REPORT_TOP_FILES)(db, totals)),
        failed=_files(select_failed(defaults.REPORT_FAILED_FILES)(db, totals)),
        messages=tally(samples),
        files_with_errors=files_with_errors,
        timeline=timeline,
    )


def _files(rows: Any) -> list[FileRow]:
    return [FileRow._make(row) for row in rows]


def _timeline(db: sqlite3.Connection) -> tuple[float | None, float | None, Timeline]:
    """The finishing times' range, and the done files per minute, hour or day over it."""
    quarters = (
        f"FROM sums WHERE dim = {sums.QUARTER} AND key != {sums.NOT_FINISHED} AND versions != 0"
    )
    first, last = db.execute(f"SELECT min(first_at), max(last_at) {quarters}").fetchone()
    if first is None:
        return None, None, Timeline(charts.Buckets("minute", []), [], [])
    if last - first > defaults.REPORT_HOURS_UP_TO:
        # Local days, as summary --by day has them.
        unit, key = "day", f"date(key * {sums.QUARTER_SECONDS}, 'unixepoch', 'localtime')"
        day, end = _local_day(first), _local_day(last)
        keys: list[Any] = []
        while day <= end:
            keys.append(day.isoformat())
            day += datetime.timedelta(days=1)
        starts = [_midnight(datetime.date.fromisoformat(k)) for k in keys]
    else:
        unit = "minute" if last - first <= defaults.REPORT_MINUTES_UP_TO else "hour"
        seconds = 60 if unit == "minute" else 3600
        # Minutes and hours of the local clock: daylight saving moves it by whole hours, so
        # one offset serves the whole range.
        offset = _utc_offset(last)
        at = "finished_at" if unit == "minute" else f"key * {sums.QUARTER_SECONDS}"
        key = f"CAST(({at} + {offset}) / {seconds} AS INTEGER)"
        keys = list(range(int((first + offset) / seconds), int((last + offset) / seconds) + 1))
        starts = [k * seconds - offset for k in keys]
    if unit == "minute":
        # Finer than the quarters the ledger keeps sums of: from the versions, of six hours.
        per_bucket = (
            f"SELECT {key}, sum(is_latest), sum(own_error_lines) FROM counted "
            "WHERE status = 'done' AND finished_at IS NOT NULL GROUP BY 1"
        )
    else:
        per_bucket = f"SELECT {key}, sum(done), sum(error_lines) {quarters} GROUP BY 1"
    counted = {k: (files, error_lines) for k, files, error_lines in db.execute(per_bucket)}
    files = [counted.get(k, (0, 0))[0] for k in keys]
    error_lines = [counted.get(k, (0, 0))[1] or 0 for k in keys]
    size = math.ceil(len(keys) / defaults.REPORT_BARS)
    if size > 1:
        starts = starts[::size]
        files = [sum(files[i : i + size]) for i in range(0, len(files), size)]
        error_lines = [sum(error_lines[i : i + size]) for i in range(0, len(error_lines), size)]
    return first, last, Timeline(charts.Buckets(unit, starts, size), files, error_lines)


def _local_day(timestamp: float) -> datetime.date:
    return datetime.datetime.fromtimestamp(timestamp).date()


def _midnight(day: datetime.date) -> float:
    return datetime.datetime.combine(day, datetime.time()).timestamp()


def _utc_offset(timestamp: float) -> int:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC).astimezone()
    return int((moment.utcoffset() or datetime.timedelta()).total_seconds())


# ------------------------------------------------------------------------------------ page


def render(report: Report, made_at: float, refresh: int | None = None) -> str:
    """The page; with ``refresh``, it reloads itself after that many seconds."""
    totals = report.totals
    worst = report.folders[0] if report.folders and report.folders[0]["error_lines"] else None
    return (
        charts.environment()
        .get_template("report.html.j2")
        .render(
            root=None if report.root is None else display_path(os.fsencode(report.root)),
            made=_moment(made_at),
            refresh=refresh,
            totals=totals,
            rate=summary.rate_text(totals["error_lines"], totals["lines"]),
            first=None if report.first is None else _moment(report.first),
            last=None if report.last is None else _moment(report.last),
            worst=None if worst is None else _folder(worst, totals),
            folder_chart=charts.horizontal_bars(
                [_folder_bar(folder) for folder in report.folders],
                "Error lines by top-level folder",
                "error lines",
                NOTHING_YET,
            ),
            counters=list(totals["counts"]),
            counter_chart=_counter_chart(totals) if totals["counts"] else None,
            folder_rows=[_folder_row(folder) for folder in report.folders],
            folders_shown=len(report.folders),
            folder_count=report.folder_count,
            timeline_chart=_timeline_chart(report.timeline),
            bucket=report.timeline.buckets.name,
            by_rate=_file_entries(report.by_rate, "rate"),
            by_errors=_file_entries(report.by_errors, "errors"),
            top_files=defaults.REPORT_TOP_FILES,
            failed=[_failed_entry(row) for row in report.failed],
            messages=_message_entries(report.messages),
            sampled=report.messages,
            sample_lines=SAMPLE_LINES,
            files_with_errors=report.files_with_errors,
            sample_files=defaults.ERROR_SAMPLE_FILES,
        )
    )


def _moment(timestamp: float) -> str:
    return f"{datetime.datetime.fromtimestamp(timestamp).astimezone():%Y-%m-%d %H:%M:%S %Z}"


def _folder(group: dict[str, Any], totals: dict[str, Any]) -> dict[str, Any]:
    share = group["error_lines"] / totals["error_lines"] if totals["error_lines"] else 0.0
    return {"name": printable(group["key"]), "error_lines": group["error_lines"], "share": share}


def _folder_bar(group: dict[str, Any]) -> charts.Bar:
    return charts.Bar(
        label=printable(group["key"]),
        value=group["error_lines"],
        note=summary.rate_text(group["error_lines"], group["lines"]),
        detail=f"{group['lines']:,} lines in {group['done']:,} done of {group['files']:,} files",
    )


def _folder_row(group: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": printable(group["key"]),
        "files": group["files"],
        "lines": group["lines"],
        "error_lines": group["error_lines"],
        "rate": summary.rate_text(group["error_lines"], group["lines"]),
        "counts": group["counts"],  # without a counter none of its files was counted with
    }


def _counter_chart(totals: dict[str, Any]) -> Markup:
    """A bar per named counter, in their order, with its total and the done files counted
    without it (before it was added)."""
    bars = []
    for name, lines in totals["counts"].items():
        lacking = totals["lacking"][name]
        without = f"{lacking:,} file{'s' if lacking != 1 else ''} without" if lacking else ""
        detail = f"in {totals['done'] - lacking:,} of {totals['done']:,} done files"
        bars.append(charts.Bar(label=name, value=lines, note=without, detail=detail))
    return charts.horizontal_bars(
        bars, "Lines per named counter", "lines", NOTHING_YET, colour=COUNTERS_COLOUR
    )


def _timeline_chart(timeline: Timeline) -> Markup:
    return charts.time_series(
        timeline.buckets,
        [
            charts.Series("files counted", timeline.files, FILES_COLOUR),
            charts.Series("error lines", timeline.error_lines, ERRORS_COLOUR),
        ],
        "Files counted and their error lines over time",
        NOTHING_YET,
    )


def _file_entries(rows: list[FileRow], by: str) -> list[dict[str, Any]]:
    """Rows of a top list by error ``rate`` or ``errors``; ``bar`` is the width of its inline
    bar, in percent of the first's."""
    values = [_rate(row) if by == "rate" else row.error_lines or 0 for row in rows]
    most = max(values, default=0)
    entries = []
    for row, value in zip(rows, values, strict=True):
        entries.append(
            {
                "path": display_path(row.path),
                "status": row.status,
                "lines": row.lines,
                "error_lines": row.error_lines,
                "rate": summary.rate_text(row.error_lines, row.lines),
                "bar": _share(value, most),
                # Counted once in the totals, under the other path.
                "same_as": None if row.same_as is None else display_path(row.same_as),
            }
        )
    return entries


def _rate(row: FileRow) -> float:
    return (row.error_lines or 0) / row.lines if row.lines else 0.0


def _share(value: float, most: float) -> float:
    return round(100 * value / most, 2) if most else 0.0


def _failed_entry(row: FileRow) -> dict[str, Any]:
    return {
        "path": display_path(row.path),
        "status": row.status,
        "attempts": row.attempts,
        "worker": printable(row.worker or "-"),
        "when": groups.local_time(row.finished_at),
        "reason": printable(row.error or "-"),
    }


def _message_entries(found: Tally) -> list[dict[str, Any]]:
    shown = found.messages[: defaults.REPORT_MESSAGES]
    most = max((message.sampled_lines for message in shown), default=0)
    entries = []
    for message in shown:
        entry = {
            k: printable(v) if isinstance(v, str) else v
            for k, v in groups.message_entry(message).items()
        }
        entry["bar"] = _share(message.sampled_lines, most)
        entries.append(entry)
    return entries


# ----------------------------------------------------------------------------------- output


def write(state_dir: Path, out: Path) -> None:
    """Write the page to ``out`` whole or not at all ("-": standard output)."""
    if not out.name:
        raise ConfigError(f"cannot write {out}: not a file name")
    page = render(read(state_dir), time.time())
    if str(out) == "-":
        sys.stdout.write(page)
        return
    partial = out.with_name(f".{out.name}.{os.getpid()}.part")
    try:
        with open(partial, "x", encoding="utf-8") as f:
            f.write(page)
        os.replace(partial, out)
    except OSError as e:
        partial.unlink(missing_ok=True)
        raise ConfigError(f"cannot write {out}: {e.strerror}") from None
