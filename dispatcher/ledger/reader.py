"""Reading the ledger: read-only connections to one snapshot of it, with a ``latest`` view of
the latest version of every path, whether its master runs or not."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dispatcher.ledger import sums
from dispatcher.ledger.errors import ledger_error
from dispatcher.ledger.queries import GROUP_SUMS, Select, select_files
from dispatcher.ledger.rows import FileRow
from dispatcher.ledger.schema import LAYOUT, layout, ledger_path, newer_ledger
from workers.common import decode_path
from workers.errors import ConfigError, LedgerError


@dataclass(frozen=True)
class Scope:
    """The part of the ledger a view shows, its totals too: the paths that match the glob
    ``paths`` (fnmatch's, over the path as summaries show it), and of them the versions finished
    at or after ``since`` (wall clock, seconds) or not finished yet. None: no narrowing."""

    paths: str | None = None
    since: float | None = None


EVERYTHING = Scope()

# The latest version of every path (superseded versions are always replaced).
_LATEST = "SELECT *{extra}, {on_done} AS on_done_text FROM versions WHERE replaced = 0"
# The same for a ledger no master of this version has opened yet (read-only: no migration).
_LATEST_BEFORE_REPLACED = (
    "SELECT *{extra}, {on_done} AS on_done_text FROM versions WHERE id IN "
    "(SELECT max(id) FROM versions WHERE status != 'superseded' GROUP BY path)"
)
# Every version that shows in a view: the latest of each path (``is_latest``: the files), and
# the counted versions before them, which keep what they added to the totals.
_COUNTED = "SELECT *, replaced = 0 AS is_latest FROM versions WHERE replaced = 0 OR status = 'done'"
# The same for a ledger no master of this version has opened yet: the latest versions, all
# of their counts.
_COUNTED_BEFORE_OWN = (
    "SELECT *, 1 AS is_latest, lines AS own_lines, error_lines AS own_error_lines, "
    "coalesce(bytes_read, size) AS own_bytes FROM latest"
)
# What became of a file after it was counted, for summaries (NULL in ledgers from before).
_ON_DONE_TEXT = (
    "CASE on_done_state WHEN 'pending' THEN 'pending: ' || on_done ELSE on_done_note END"
)


def read_summary(
    state_dir: Path,
    limit: int | None = None,
    sort: str | None = None,
    top: int | None = None,
    scope: Scope = EVERYTHING,
) -> tuple[dict[str, Any], Iterator[FileRow]]:
    """Totals and the latest version of every path, by path, from one snapshot of the ledger
    (of the ``scope`` only: see ``snapshot``).

    With ``sort`` (a SORT_KEYS key) the files with the most of it come first, ties by path;
    with ``top`` only the first ``top``. With ``limit``, and more files than that, only
    ``limit`` of them: the first by ``sort``, else those that most need attention.
    """
    totals, rows = read_latest(state_dir, select_files(limit, sort, top), scope)
    return totals, map(FileRow._make, rows)


def read_latest(
    state_dir: Path,
    select: Select,
    scope: Scope = EVERYTHING,
    totals: bool = True,
    sorts: bool = True,
) -> tuple[dict[str, Any], Iterator[Any]]:
    """Totals and the rows ``select(connection, totals)`` reads from the ``latest`` view (the
    latest version of every path), from one snapshot of the ledger.

    The rows stream from the open ledger (a million of them need no list); the connection
    closes once they are read. Without ``totals`` (for a ``select`` that needs none), the
    totals are an empty dict, and not read: they take a scan of the whole ledger. ``sorts``:
    as for ``snapshot``.
    """
    with contextlib.ExitStack() as stack:
        db, totals_read = stack.enter_context(snapshot(state_dir, scope, totals, sorts))
        cursor = select(db, totals_read)
        closing = stack.pop_all()  # from here the rows' generator closes the connection

    def rows() -> Iterator[Any]:
        with closing:
            try:
                yield from cursor
            except sqlite3.Error as e:  # a damaged page met halfway through
                raise ledger_error(ledger_path(state_dir), e) from None

    return totals_read, rows()


@contextmanager
def snapshot(
    state_dir: Path, scope: Scope = EVERYTHING, totals: bool = True, sorts: bool = True
) -> Iterator[tuple[sqlite3.Connection, dict[str, Any]]]:
    """A read-only connection to one snapshot of the ledger, and its totals (an empty dict
    without ``totals``): for a reader of several views at once (dispatcher.ledger.queries
    gives their queries).

    The connection's views, and so its totals, hold only the versions in ``scope``. Without
    ``sorts`` (a reader whose queries sort no more than a few rows: the rows by path come
    in the index's order) its page cache is small, so that reading all of a big ledger takes
    no more memory than a small one.
    """
    with _read_only(state_dir, scope, sorts) as db:
        db.execute("BEGIN")  # one snapshot for the totals and the rows, while the master writes
        yield db, _totals(db) if totals else {}


def _totals(db: sqlite3.Connection) -> dict[str, Any]:
    """Files by status (and of the done ones, those gone from the root), and the lines, error
    lines and bytes of the content counted, each piece once; then ``counts``, each named
    counter's lines, each piece once, and ``lacking``, how many done files were counted
    without it (docs/summary.md). All from the sums of the top folders, whose groups make up
    the whole ledger."""
    names = (*GROUP_SUMS, "gone")
    row = db.execute(
        f"SELECT {', '.join(f'coalesce(sum({name}), 0)' for name in names)} FROM sums "
        f"WHERE dim = {sums.TOP_FOLDER}"
    ).fetchone()
    totals: dict[str, Any] = dict(zip(names, row, strict=True))
    counters = db.execute(
        "SELECT counter, sum(lines), sum(files) FROM counter_sums "
        f"WHERE dim = {sums.TOP_FOLDER} GROUP BY counter HAVING sum(lines) != 0 OR sum(files) != 0"
    ).fetchall()
    counts = {name: lines for name, lines, _ in counters}
    having = {name: files for name, _, files in counters}
    names_shown = counter_names(db, counts)
    totals["counts"] = {name: counts.get(name, 0) for name in names_shown}
    totals["lacking"] = {name: totals["done"] - having.get(name, 0) for name in names_shown}
    return totals


def counter_names(db: sqlite3.Connection, seen: Iterable[str]) -> list[str]:
    """The named counters a view shows: those of the rules the ledger counts with now, in
    their order, then any other that ``seen`` holds, by name."""
    current: list[str] = []
    row = (
        db.execute(
            "SELECT counters FROM rules WHERE id = (SELECT value FROM meta WHERE key = 'rules')"
        ).fetchone()
        if _has_table(db, "rules")
        else None
    )
    if row is not None:
        current = [name for name, _ in json.loads(row[0])]
    return current + sorted(set(seen) - set(current))


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


@contextmanager
def _read_only(
    state_dir: Path, scope: Scope = EVERYTHING, sorts: bool = True
) -> Iterator[sqlite3.Connection]:
    """A read-only connection with a ``latest`` view of the latest version of every path and a
    ``counted`` view of the versions that count, both narrowed to ``scope``.

    SQLite's errors in the block, the caller's queries too, become a LedgerError.
    """
    path = ledger_path(state_dir)
    if not path.exists():
        raise ConfigError(f"no ledger in {state_dir} (is --state right?)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise ledger_error(path, e) from None
    try:
        # Room for sorting a million rows in memory, faster than within the default 2 MB; but
        # every page read stays in the cache up to its size, a scan of the whole ledger too.
        # Without a sort, a cache that holds a good part of the table still saves most of
        # the reads that rows in path order make all over it.
        db.execute(f"PRAGMA cache_size = {_SORT_CACHE_KIB if sorts else _SCAN_CACHE_KIB}")
        columns = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
        if not columns:
            raise LedgerError(f"{path} is not a logdispatch ledger (it has no versions table)")
        found = layout(db)
        if found is not None and found > LAYOUT:
            raise LedgerError(newer_ledger(path, found))
        latest = _LATEST if "replaced" in columns else _LATEST_BEFORE_REPLACED
        on_done = _ON_DONE_TEXT if "on_done" in columns else "NULL"
        # Columns no master of this version has added yet.
        extra = "".join(
            f", NULL AS {c}" for c in ("gone_at", "same_as", "counts") if c not in columns
        ) + ("" if "replaced" in columns else ", 0 AS replaced")
        latest = latest.format(on_done=on_done, extra=extra)
        counted = _COUNTED if "own_lines" in columns else _COUNTED_BEFORE_OWN
        if "own_counts" not in columns:
            counted = f"SELECT *, NULL AS own_counts FROM ({counted})"
        where = []
        if scope.paths is not None:
            where.append(_path_condition(db, scope.paths))
        if scope.since is not None:
            # A float from the command line's parser, never text: safe to write in.
            where.append(f"(finished_at IS NULL OR finished_at >= {float(scope.since)!r})")
        if where:
            latest = f"SELECT * FROM ({latest}) WHERE {' AND '.join(where)}"
            counted = f"SELECT * FROM ({counted}) WHERE {' AND '.join(where)}"
        db.execute(f"CREATE TEMP VIEW latest AS {latest}")
        db.execute(f"CREATE TEMP VIEW counted AS {counted}")
        if where or not _has_table(db, "sums"):
            # The ledger's sums are of all of it, and a ledger no master of this version has
            # opened has none: the same sums of the versions in view, worked out now.
            in_view, counters_in_view = sums.recomputed("counted")
            db.execute(f"CREATE TEMP VIEW sums AS {in_view}")
            db.execute(f"CREATE TEMP VIEW counter_sums AS {counters_in_view}")
        yield db
    except sqlite3.Error as e:
        raise ledger_error(path, e) from None
    finally:
        db.close()


# The page caches of read-only connections (negative: KiB).
_SORT_CACHE_KIB = -131072
_SCAN_CACHE_KIB = -16384


def _path_condition(db: sqlite3.Connection, glob: str) -> str:
    """A condition on ``path`` that holds for the paths that match ``glob``.

    The glob's plain start (up to its first wildcard) becomes a range of the bytes of the path,
    which the index on path narrows; the whole glob is a Python function, called for the paths
    in that range only. A start with a backslash is left to the function: a path shows a
    backslash, and an undecodable byte, as an escape.
    """
    pattern = re.compile(fnmatch.translate(glob))
    db.create_function(
        "path_matches",
        1,
        lambda path: pattern.match(decode_path(bytes(path))) is not None,
        deterministic=True,
    )
    start = re.split(r"[*?\[]", glob, maxsplit=1)[0]
    try:
        prefix = start.encode("utf-8") if "\\" not in start else b""
    except UnicodeEncodeError:  # a byte of the command line that is not UTF-8
        prefix = b""
    if not prefix:
        return "path_matches(path)"
    # UTF-8 has no 0xFF byte: the last one has a next.
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    return f"path >= X'{prefix.hex()}' AND path < X'{end.hex()}' AND path_matches(path)"
