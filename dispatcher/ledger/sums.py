"""The sums every summary shows, kept in the ledger as results arrive: so that the totals and
the groups by top-level folder, worker, host and day cost what the groups number, not what
the files do.

Each version adds to one group of each dimension (``DIMENSIONS``): what it adds, its share, is
worked out in SQL from its row (``shares``). The writer takes the shares of the rows it is
about to change off the sums and puts the changed rows' on (``Sums``), a batch of rows at a
time and in its own transaction. Nothing deletes from ``versions`` but ``logdispatch prune``,
whose rows' shares stay in the sums: what a pruned file added is still in the totals and
groups (docs/guarantees.md).

The same SQL over the versions themselves (``recomputed``) fills the sums of a ledger from
before they were kept, and gives the sums of a part of the ledger (``summary --since``,
``--path``), which no kept sum can.
"""

from __future__ import annotations

import collections
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager

from dispatcher.ledger.bulk import execute_rows, values_statements
from dispatcher.versions import sql_open

# What each group adds up: the versions that show in it (a group with none is no group), its
# files (the latest version of each path) by status and of the done ones those gone from the
# root, and what its done versions added to the totals (each piece of content once).
SUMS = (
    "versions",
    "files",
    "done",
    "failed",
    "vanished",
    "pending",
    "gone",
    "lines",
    "error_lines",
    "bytes",
)


def shares(row: str) -> dict[str, str]:
    """A version's share of each of the SUMS, in SQL over the row (or table) named ``row``."""
    latest = f"{row}.replaced = 0"
    done = f"{row}.status = 'done'"

    def added(column: str) -> str:
        return f"CASE WHEN {done} THEN coalesce({row}.{column}, 0) ELSE 0 END"

    return {
        "versions": "1",
        "files": latest,
        "done": f"{latest} AND {done}",
        "failed": f"{latest} AND {row}.status = 'failed'",
        "vanished": f"{latest} AND {row}.status = 'vanished'",
        "pending": f"{latest} AND {sql_open(row + '.status')}",
        "gone": f"{latest} AND {row}.gone_at IS NOT NULL",
        "lines": added("own_lines"),
        "error_lines": added("own_error_lines"),
        "bytes": added("own_bytes"),
    }


# The versions that show in a view: the latest of each path, and the counted ones before them,
# which keep what they added to the totals.
_SHOWN = "({row}.replaced = 0 OR {row}.status = 'done')"

# The dimensions, each a group key of a version. The totals are the sum of any one of them
# (of the top folders', the fewest groups but for the quarters of a young ledger).
TOP_FOLDER, WORKER, QUARTER = range(1, 4)
DIMENSIONS = (TOP_FOLDER, WORKER, QUARTER)
# A quarter of an hour of finishing times: every time zone's offset from UTC is a whole number
# of them, so a quarter lies within one local hour and one local day.
QUARTER_SECONDS = 900
# The keys of a version without a worker, or not finished: a key cannot be NULL. An open
# version is in no worker's group, whoever holds its lease: a lease handed out then changes no
# sum, and leases are the writer's most frequent change.
NO_WORKER = ""
NOT_FINISHED = -1


def top_folder(path: str) -> str:
    """The first folder of ``path`` (a BLOB column), in SQL; "." for a file in the root."""
    return (
        f"CASE WHEN instr({path}, X'2F') > 0 THEN substr({path}, 1, instr({path}, X'2F') - 1) "
        "ELSE X'2E' END"
    )


def top_folder_of(path: bytes) -> bytes:
    """top_folder() in Python."""
    return path.split(b"/", 1)[0] if b"/" in path else b"."


def _keys(row: str) -> str:
    """A version's group key in each dimension, in SQL: columns k1, k2, k3."""
    worker = (
        f"CASE WHEN {sql_open(row + '.status')} THEN '{NO_WORKER}' "
        f"ELSE coalesce({row}.worker, '{NO_WORKER}') END"
    )
    quarter = f"coalesce(CAST({row}.finished_at / {QUARTER_SECONDS} AS INTEGER), {NOT_FINISHED})"
    keys = {TOP_FOLDER: top_folder(row + ".path"), WORKER: worker, QUARTER: quarter}
    return ", ".join(f"{keys[dim]} AS k{dim}" for dim in DIMENSIONS)


_HOW = {True: "MATERIALIZED", False: "NOT MATERIALIZED"}


def _rows(source: str, sign: int, only: str, kept: bool = True) -> str:
    """A WITH clause: ``r``, each version of ``source`` that ``only`` names and shows in the
    views, with its keys and its share of each of the SUMS times ``sign``. For the sums the
    writer keeps (``kept``) it is materialized: each dimension's grouping below reads it, and
    working out the shares once per row is what costs. Else each reads ``source`` itself, so
    that a view of one dimension (all a summary reads) reads the versions once, not three
    times."""
    signed = ", ".join(f"{sign} * ({share}) AS {name}" for name, share in shares("v").items())
    where = f"{_SHOWN.format(row='v')} AND {only}"
    return (
        f"WITH r AS {_HOW[kept]} (SELECT {_keys('v')}, {signed}, v.finished_at AS at "
        f"FROM {source} AS v WHERE {where})"
    )


# The first and last finishing times of a group's versions. Not sums: what leaves a group
# takes nothing off them, and a group's times are those of every version it has held.
TIMES = ("first_at", "last_at")
_TOTALS = ", ".join(f"sum({name}) AS {name}" for name in SUMS)
_TOTALS_AND_TIMES = f"{_TOTALS}, min(at) AS first_at, max(at) AS last_at"
_ADD = ", ".join(f"{name} = {name} + excluded.{name}" for name in SUMS)
_ADD_AND_TIMES = (
    f"{_ADD}, first_at = min(coalesce(first_at, excluded.first_at), "
    "coalesce(excluded.first_at, first_at)), last_at = max(coalesce(last_at, excluded.last_at), "
    "coalesce(excluded.last_at, last_at))"
)


def _by_dimension(columns: str, by: str = "") -> str:
    """A SELECT per dimension of ``columns`` over ``r``, grouped by its key (and ``by``)."""
    # By the dimension too, constant as it is: a WHERE on it then reaches each arm of a view of
    # the sums (recomputed), and the arms of the other dimensions read nothing.
    group = "1, 2" + (f", {by}" if by else "")
    return " UNION ALL ".join(
        f"SELECT {dim} AS dim, k{dim} AS key, {columns} FROM r GROUP BY {group}"
        for dim in DIMENSIONS
    )


def _counter_rows(source: str, sign: int, only: str, kept: bool = True) -> str:
    """As _rows, for the named counters: a row per version and counter, with the lines it added
    to the totals (own_counts, if done), and whether it is a done file counted with it."""
    done = f"v.status = 'done' AND {only}"
    keys = _keys("v")
    return (
        f"WITH r AS {_HOW[kept]} ("
        f"SELECT {keys}, c.key AS counter, {sign} * c.value AS lines, 0 AS files "
        f"FROM {source} AS v, json_each(v.own_counts) AS c WHERE {done} "
        "UNION ALL "
        f"SELECT {keys}, c.key, 0, {sign} FROM {source} AS v, json_each(v.counts) AS c "
        f"WHERE {done} AND v.replaced = 0)"
    )


_COUNTER_TOTALS = "counter, sum(lines) AS lines, sum(files) AS files"


def _upsert(rows: str, sign: int) -> str:
    if sign < 0:
        return (
            f"{rows} INSERT INTO sums (dim, key, {', '.join(SUMS)}) {_by_dimension(_TOTALS)} "
            f"ON CONFLICT (dim, key) DO UPDATE SET {_ADD}"
        )
    return (
        f"{rows} INSERT INTO sums (dim, key, {', '.join(SUMS)}, {', '.join(TIMES)}) "
        f"{_by_dimension(_TOTALS_AND_TIMES)} ON CONFLICT (dim, key) DO UPDATE SET {_ADD_AND_TIMES}"
    )


def _counter_upsert(rows: str) -> str:
    return (
        f"{rows} INSERT INTO counter_sums (dim, key, counter, lines, files) "
        f"{_by_dimension(_COUNTER_TOTALS, 'counter')} "
        "ON CONFLICT (dim, key, counter) DO UPDATE SET lines = lines + excluded.lines, "
        "files = files + excluded.files"
    )


TABLES = (
    f"""CREATE TABLE IF NOT EXISTS sums (
        dim INTEGER NOT NULL,
        key NOT NULL,
        {", ".join(f"{name} INTEGER NOT NULL" for name in SUMS)},
        first_at REAL,
        last_at REAL,
        PRIMARY KEY (dim, key)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS counter_sums (
        dim INTEGER NOT NULL,
        key NOT NULL,
        counter TEXT NOT NULL,
        lines INTEGER NOT NULL,
        files INTEGER NOT NULL,
        PRIMARY KEY (dim, key, counter)
    ) WITHOUT ROWID""",
)


def recomputed(source: str) -> tuple[str, str]:
    """SELECTs of the sums, then of the counter sums, worked out from the versions of
    ``source`` (a table or view with the versions' columns): what the writer keeps."""
    sums = (
        f"SELECT * FROM ({_rows(source, 1, 'true', kept=False)} {_by_dimension(_TOTALS_AND_TIMES)})"
    )
    counters = (
        f"SELECT * FROM ({_counter_rows(source, 1, 'true', kept=False)} "
        f"{_by_dimension(_COUNTER_TOTALS, 'counter')})"
    )
    return sums, counters


def rebuild(db: sqlite3.Connection) -> None:
    """Work the sums out again from every version, as for a ledger from before they were kept:
    after rows were written by hand, not through the writer."""
    kept, counters = recomputed("versions")
    for statement in (
        "DELETE FROM sums",
        f"INSERT INTO sums {kept}",
        "DELETE FROM counter_sums",
        f"INSERT INTO counter_sums {counters}",
    ):
        db.execute(statement)


# What a new queued version, the latest of its path, adds to each of its groups: 1 each.
_QUEUED = ("versions", "files", "pending")

# The rows a change of the writer's is about to make or has made (see Sums.changing): their
# ids in one parameter, a JSON array, so that each statement is one step of SQLite's. (The
# sqlite3 module lets other threads run at each step: a statement per row, or a table of ids
# filled and emptied around each change, made the master loop wait for the GIL behind its
# server threads far more often than SQLite took to run them.)
_CHANGING_ONLY = "v.id IN (SELECT value FROM json_each(:ids))"


class Sums:
    """Keeps the sums in step with the writer's changes to ``versions``, on its connection.

    ``counted()`` says whether any version of the ledger may have named counters' counts: the
    counters' sums are kept only then.
    """

    def __init__(self, db: sqlite3.Connection, counted: Callable[[], bool]) -> None:
        self._db = db
        self._counted = counted
        self._off = (
            _upsert(_rows("versions", -1, _CHANGING_ONLY), -1),
            _counter_upsert(_counter_rows("versions", -1, _CHANGING_ONLY)),
        )
        self._on = (
            _upsert(_rows("versions", 1, _CHANGING_ONLY), 1),
            _counter_upsert(_counter_rows("versions", 1, _CHANGING_ONLY)),
        )

    def latest(self, paths: Sequence[bytes]) -> list[int]:
        """The ids of the latest versions of ``paths`` in the ledger."""
        found: list[int] = []
        for statement, values in values_statements(
            "SELECT id FROM versions WHERE replaced = 0 AND path IN (VALUES {})",
            1,
            [(path,) for path in paths],
        ):
            found += (version for (version,) in self._db.execute(statement, values))
        return found

    def add_queued(self, paths: Iterable[bytes]) -> None:
        """Put on the sums the shares of new queued versions, each the latest of ``paths`` (of
        its path): a file, pending, and nothing counted; in no worker's group, finished in no
        quarter. (Known without reading their rows: new versions are the most frequent
        change but for leases.)"""
        folders = collections.Counter(top_folder_of(path) for path in paths)
        if not folders:
            return
        total = sum(folders.values())
        groups: list[tuple[int, bytes | str | int, int]] = [
            (TOP_FOLDER, folder, n) for folder, n in folders.items()
        ]
        groups += [(WORKER, NO_WORKER, total), (QUARTER, NOT_FINISHED, total)]
        shares = ", ".join("column3" if name in _QUEUED else "0" for name in SUMS)
        execute_rows(
            self._db,
            f"INSERT INTO sums (dim, key, {', '.join(SUMS)}) SELECT column1, column2, {shares} "
            f"FROM (VALUES {{}}) WHERE true ON CONFLICT (dim, key) DO UPDATE SET {_ADD}",
            3,
            groups,
        )

    @contextmanager
    def changing(self, ids: Iterable[int]) -> Iterator[None]:
        """Around a change of the rows ``ids``: their shares as they were come off the sums,
        and as they are after go on."""
        changed = {"ids": json.dumps(list(ids))}
        if changed["ids"] == "[]":
            yield
            return
        statements = 2 if self._counted() else 1
        for statement in self._off[:statements]:
            self._db.execute(statement, changed)
        yield
        for statement in self._on[:statements]:
            self._db.execute(statement, changed)
