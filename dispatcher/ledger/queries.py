"""Every query of the summaries and the report, over the ``latest`` view of a read-only
connection (dispatcher.ledger.reader): the files, the groups, the failed files and the samples.

Each ``select_*`` gives a ``Select``, so that a reader of several views runs them all in one
snapshot (``snapshot``), and a reader of one in its own (``read_latest``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from dispatcher import defaults
from dispatcher.ledger import sums
from dispatcher.ledger.rows import FILE_COLUMNS
from dispatcher.versions import PENDING, sql_open
from workers.common import COUNTER_NAME, host_of
from workers.errors import ConfigError

Select = Callable[[sqlite3.Connection, dict[str, Any]], Iterable[tuple[Any, ...]]]

# Failed, vanished and pending files first, then the most error lines.
ATTENTION_ORDER = "status = 'done', coalesce(error_lines, 0) DESC, path"
# Error lines per line, of a file or of a group (with its lines and error_lines columns).
ERROR_RATE = "(CASE WHEN lines > 0 THEN error_lines * 1.0 / lines ELSE 0.0 END)"
# The same for a file with error lines (so with lines), as its index has it.
RATE_OF_FILES = "(error_lines * 1.0 / lines)"
# What --sort sorts by, most first.
SORT_KEYS = {
    "lines": "coalesce(lines, 0)",
    "errors": "coalesce(error_lines, 0)",
    "rate": ERROR_RATE,
}

# What a group adds up, and the totals: the kept sums' (dispatcher.ledger.sums) but the
# versions, which only say whether a group holds any.
GROUP_SUMS = ("files", "done", "failed", "vanished", "pending", "lines", "error_lines", "bytes")
# A group's entry: its key, its sums, its error rate and its named counters' lines.
GROUP_FIELDS = ("key", *GROUP_SUMS, "error_rate", "counts")
# A group's sums over the ``counted`` view, for the groups no kept sum holds (deeper folders).
GROUP_COLUMNS = ", ".join(
    f"coalesce(sum({share}), 0) AS {name}"
    for name, share in sums.shares("counted").items()
    if name in GROUP_SUMS
)
_REGROUP_COLUMNS = ", ".join(f"sum({name}) AS {name}" for name in GROUP_SUMS)
# A group's key in the kept sums of its dimension (dispatcher.ledger.sums), as views show it.
_KEPT_KEYS = {
    "dir": (sums.TOP_FOLDER, "key"),
    "worker": (sums.WORKER, f"nullif(key, '{sums.NO_WORKER}')"),
    "host": (sums.WORKER, f"host_of(nullif(key, '{sums.NO_WORKER}'))"),
    "day": (
        sums.QUARTER,
        f"CASE WHEN key = {sums.NOT_FINISHED} THEN NULL "
        f"ELSE date(key * {sums.QUARTER_SECONDS}, 'unixepoch', 'localtime') END",
    ),
}


def _sort_key(sort: str, totals: dict[str, Any], column: str = "counts") -> str:
    """What ``sort`` sorts by in SQL: a SORT_KEYS key, or a named counter of the ledger's (of
    a file's ``counts``; of a group's ``by_counter``, which _counter_column adds)."""
    if sort in SORT_KEYS:
        return SORT_KEYS[sort]
    # A name check_counters takes holds only [a-z0-9_]: safe to write into SQL below.
    if sort not in totals["counts"] or not COUNTER_NAME.fullmatch(sort):
        known = ", ".join(totals["counts"]) or "none"
        raise ConfigError(f"--sort {sort}: no such counter in the ledger (its counters: {known})")
    if column == "counts":
        return f"coalesce(json_extract(counts, '$.{sort}'), 0)"
    return column


def _counter_column(sort: str | None, kept: bool = True) -> str:
    """The column a group query adds to sort its groups by a named counter, or nothing: from
    the kept sums (``kept``), or from the ``counted`` versions."""
    if sort is None or sort in SORT_KEYS:
        return ""
    if not kept:
        return (
            ", coalesce(sum(CASE WHEN status = 'done' THEN "
            f"json_extract(own_counts, '$.{sort}') END), 0) AS by_counter"
        )
    return (
        ", sum(coalesce((SELECT lines FROM counter_sums AS c WHERE c.dim = s.dim AND "
        f"c.key = s.key AND c.counter = '{sort}'), 0)) AS by_counter"
    )


def select_files(
    limit: int | None = None, sort: str | None = None, top: int | None = None
) -> Select:
    """The latest version of every path as FileRow values, by path.

    With ``sort`` (a SORT_KEYS key or a counter's name) the files with the most of it come
    first, ties by path; with ``top`` only the first ``top``. With ``limit``, and more files
    than that, only ``limit`` of them: the first by ``sort``, else those that most need
    attention.
    """

    def select(
        db: sqlite3.Connection, totals: dict[str, Any]
    ) -> sqlite3.Cursor | list[tuple[Any, ...]]:
        order = f"{_sort_key(sort, totals)} DESC, path" if sort else "path"
        cut = top
        if limit is not None and totals["files"] > limit:
            if not sort:
                return _needing_attention(db, totals, limit if top is None else min(top, limit))
            cut = limit if top is None else min(top, limit)
        if sort in _WITH_ERRORS and cut is not None:
            return _most_of(db, sort, cut)
        rows = "" if cut is None else f" LIMIT {int(cut)}"
        return db.execute(f"SELECT {FILE_COLUMNS} FROM latest ORDER BY {order}{rows}")

    return select


# Each of these reads through an index as many rows as it returns, or about (_first).
_FAILED = f"SELECT {FILE_COLUMNS} FROM latest WHERE status IN ('failed', 'vanished')"
_PENDING = f"SELECT {FILE_COLUMNS} FROM latest WHERE {sql_open()}"
# The done files with error lines, most error lines or highest error rate first: each order
# has an index of those files only (dispatcher.ledger.schema).
_WITH_ERRORS = {
    key: f"SELECT {FILE_COLUMNS} FROM latest WHERE status = 'done' AND error_lines > 0 "
    f"ORDER BY {order}, path"
    for key, order in (("errors", "error_lines DESC"), ("rate", f"{RATE_OF_FILES} DESC"))
}
_DONE_WITHOUT = (
    f"SELECT {FILE_COLUMNS} FROM latest WHERE status = 'done' AND coalesce(error_lines, 0) = 0"
)


def _first(db: sqlite3.Connection, query: str, n: int, order: str = "") -> list[tuple[Any, ...]]:
    if n <= 0:
        return []
    return db.execute(f"{query}{order} LIMIT {int(n)}").fetchall()


def _needing_attention(
    db: sqlite3.Connection, totals: dict[str, Any], n: int
) -> list[tuple[Any, ...]]:
    """The first ``n`` files in ATTENTION_ORDER: failed, vanished and pending (by path), then
    the done ones with the most error lines. Read in parts that each take their first rows
    from an index (or, for the files without error lines, from the paths' index until there
    are enough), not by sorting every file: the ledger's size does not matter."""
    rows = []
    if totals["failed"] or totals["vanished"]:
        rows += _first(db, _FAILED, n, " ORDER BY path")
    if totals[PENDING]:
        rows += _first(db, _PENDING, n, " ORDER BY path")
    rows = sorted(rows, key=lambda row: row[0])[:n]  # by path: no error lines counted yet
    rows += _first(db, _WITH_ERRORS["errors"], n - len(rows))
    return rows + _first(db, _DONE_WITHOUT, n - len(rows), " ORDER BY path")


def _most_of(db: sqlite3.Connection, key: str, n: int) -> list[tuple[Any, ...]]:
    """The first ``n`` files by error lines or error rate (``key``), most first, then by
    path: the files with error lines through their index, then the others by path."""
    rows = _first(db, _WITH_ERRORS[key], n)
    without = f"SELECT {FILE_COLUMNS} FROM latest WHERE coalesce(error_lines, 0) = 0"
    return rows + _first(db, without, n - len(rows), " ORDER BY path")


def select_groups(
    by: str,
    depth: int | None = None,
    order: str | None = None,
    top: int | None = None,
    limit: int | None = None,
) -> Select:
    """One row per group of files ``by`` "dir" (its first ``depth`` folders), "worker", "host"
    or "day": the GROUP_FIELDS values and the number of groups.

    Groups come by key (no key last), or most first by ``order`` (a SORT_KEYS key or a
    counter's name); at most ``top`` of them, and ``limit``.
    """

    def select(db: sqlite3.Connection, totals: dict[str, Any]) -> list[tuple[Any, ...]]:
        most = f"{_sort_key(order, totals, 'by_counter')} DESC, " if order else ""
        if by == "dir" and (depth or 1) > 1:
            extra = _counter_column(order, kept=False)
            groups = _by_folders(db, depth or 1, GROUP_COLUMNS + extra)
        else:
            groups = _kept(db, by, _REGROUP_COLUMNS + _counter_column(order))
        cuts = [n for n in (top, limit) if n]
        rows = db.execute(
            f"SELECT key, {', '.join(GROUP_SUMS)}, {ERROR_RATE}, count(*) OVER () "
            f"FROM ({groups} GROUP BY 1) ORDER BY {most}key IS NULL, key LIMIT ?",
            (min(cuts) if cuts else -1,),
        ).fetchall()
        counts: dict[Any, dict[str, int]] = {}
        if totals["counts"]:
            for key, counter, value in select_group_counts(by, depth)(db, totals):
                counts.setdefault(key, {})[counter] = value
        # Each row's counts go before the number of groups, last.
        return [(*row[:-1], counts.get(row[0], {}), row[-1]) for row in rows]

    return select


def select_group_counts(by: str, depth: int | None = None) -> Select:
    """Each named counter's lines in each group of ``select_groups``, as the totals count
    them: (group key, counter, lines) rows."""

    def select(db: sqlite3.Connection, totals: dict[str, Any]) -> sqlite3.Cursor:
        if by == "dir" and (depth or 1) > 1:
            # A subquery: json_each's own columns (path, id, key...) would clash with counted's.
            source = (
                "(SELECT counted.*, c.key AS counter, c.value AS counter_lines "
                "FROM counted, json_each(counted.own_counts) AS c WHERE counted.status = 'done')"
            )
            groups = _by_folders(db, depth or 1, "counter, sum(counter_lines) AS value", source)
        else:
            groups = _kept(db, by, "counter, sum(lines) AS value", "counter_sums")
        return db.execute(f"SELECT key, counter, value FROM ({groups} GROUP BY 1, 2)")

    return select


def _kept(db: sqlite3.Connection, by: str, columns: str, table: str = "sums") -> str:
    """SELECT key, ``columns`` FROM the kept ``table`` of sums of the dimension ``by`` "dir"
    (the top folders), "worker", "host" or "day", its rows under ``s``; to be followed by a
    GROUP BY of the key (and of any other column ``columns`` starts with)."""
    dimension, key = _KEPT_KEYS[by]
    if by == "host":
        db.create_function("host_of", 1, _host_of, deterministic=True)
    # A group that holds no version any more (its versions all replaced by others'): none.
    held = " AND s.versions != 0" if table == "sums" else ""
    return f"SELECT {key} AS key, {columns} FROM {table} AS s WHERE s.dim = {dimension}{held}"


def _by_folders(db: sqlite3.Connection, depth: int, columns: str, source: str = "counted") -> str:
    """SELECT key, ``columns`` FROM ``source``, the key its first ``depth`` folders (which no
    kept sum holds, but for the first): to be followed by a GROUP BY."""
    db.create_function("folder_of", 2, folder_of, deterministic=True)
    return f"SELECT folder_of(path, {int(depth)}) AS key, {columns} FROM {source}"


def folder_of(path: bytes, depth: int) -> bytes:
    """The first ``depth`` folders of a file's path; "." for a file directly in the root."""
    folders = path.split(b"/")[:-1]
    return b"/".join(folders[:depth]) or b"."


def _host_of(worker: str | None) -> str | None:
    return None if worker is None else host_of(worker)


def select_failed(limit: int | None = None) -> Select:
    """The failed and vanished files (latest versions) as FileRow values, by path, at most
    ``limit``."""

    def select(db: sqlite3.Connection, totals: dict[str, Any]) -> sqlite3.Cursor:
        return db.execute(
            f"SELECT {FILE_COLUMNS} FROM latest WHERE status IN ('failed', 'vanished') "
            "ORDER BY path LIMIT ?",
            (limit or -1,),
        )

    return select


HISTORY_FIELDS = (
    "id", "status", "size", "mtime", "lines", "error_lines", "own_lines", "same_as",
    "finished_at",
)  # fmt: skip


def select_history(path: bytes) -> Select:
    """Every version of ``path``, oldest first: the HISTORY_FIELDS values (times in seconds)."""

    def select(db: sqlite3.Connection, totals: dict[str, Any]) -> sqlite3.Cursor:
        columns = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
        # A ledger no master of this version has opened yet: a version owns all its counts.
        own = "own_lines" if "own_lines" in columns else "lines"
        same_as = "same_as" if "same_as" in columns else "NULL"
        return db.execute(
            f"SELECT id, status, size, mtime_ns / 1e9, lines, error_lines, {own}, {same_as}, "
            "finished_at FROM versions WHERE path = ? ORDER BY id",
            (path,),
        )

    return select


def select_samples(db: sqlite3.Connection) -> tuple[int, sqlite3.Cursor]:
    """How many files have error lines, and the (path, samples) of the ERROR_SAMPLE_FILES of
    them with the most error lines (the first counted among equals)."""
    with_errors = "FROM latest WHERE status = 'done' AND error_lines > 0"
    (files_with_errors,) = db.execute(f"SELECT count(*) {with_errors}").fetchone()
    # Ties by id, not by path: comparing paths made this sort several times slower.
    return files_with_errors, db.execute(
        f"SELECT path, samples {with_errors} ORDER BY error_lines DESC, id LIMIT ?",
        (defaults.ERROR_SAMPLE_FILES,),
    )
