"""The writer's statements over many rows: the new versions, results and leases a flush writes
at once, in as few statements as SQLite allows."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, NamedTuple

# The sqlite3 module lets other threads run during each step of a statement. One statement per
# row (executemany) made the master loop wait for the GIL once a row while the server threads
# ran, so a big flush held the loop up for long. Rows are written many per statement.
ROWS_PER_STATEMENT = 500
# Host parameters a statement may hold: 999 before SQLite 3.32.
_MAX_PARAMETERS = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
# UPDATE ... FROM (SQLite 3.33): many rows' updates in one statement; before it, one per row.
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)


class DoneRow(NamedTuple):
    """A done version's counts as ``record_result`` buffers them: each field sets the column of
    its name (``id``, last, says which row)."""

    attempts: int
    worker: str
    lines: int
    error_lines: int
    bytes_read: int
    long_lines: int
    seconds: float
    samples: bytes
    finished_at: float
    on_done: str | None
    on_done_dir: bytes | None
    on_done_state: str | None
    device: int | None
    inode: int | None
    id: int


# The columns a done version sets to the same value whatever its counts.
_DONE_FIXED = "status = 'done', error = NULL"
# A result of an earlier attempt may come after a later attempt's lease: attempts never go down.
_DONE_KEEP_MAX = frozenset({"attempts"})


def _done_statements() -> tuple[str, str]:
    """DoneRow's UPDATE by one statement per row, and by one for many rows (see update_rows)."""
    *columns, key = DoneRow._fields
    one, many = [_DONE_FIXED], [_DONE_FIXED]
    for number, column in enumerate(columns, 1):
        if column in _DONE_KEEP_MAX:
            one.append(f"{column} = max({column}, ?)")
            many.append(f"{column} = max(versions.{column}, d.column{number})")
        else:
            one.append(f"{column} = ?")
            many.append(f"{column} = d.column{number}")
    return (
        f"UPDATE versions SET {', '.join(one)} WHERE {key} = ?",
        f"UPDATE versions SET {', '.join(many)} FROM (VALUES {{}}) AS d "
        f"WHERE versions.{key} = d.column{len(DoneRow._fields)}",
    )


DONE_ONE, DONE_MANY = _done_statements()
# Only forward: a result (say a quick failure) may have been recorded for that very attempt
# before its lease is, and must not be overwritten by it.
LEASED_ONE = (
    "UPDATE versions SET status = 'leased', attempts = ?, worker = ? WHERE id = ? AND "
    "(status = 'leased' OR (status = 'queued' AND attempts < ?))"
)
LEASED_MANY = (
    "UPDATE versions SET status = 'leased', attempts = l.column1, worker = l.column2 "
    "FROM (VALUES {}) AS l WHERE versions.id = l.column3 AND (versions.status = 'leased' OR "
    "(versions.status = 'queued' AND versions.attempts < l.column4))"
)


def execute_rows(
    db: sqlite3.Connection, sql: str, width: int, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Run ``sql``, whose ``{}`` is a VALUES list, for all ``rows`` (``width`` values each) in
    as few statements as the parameter limit allows."""
    group = "(" + ", ".join("?" * width) + ")"
    per = max(1, min(ROWS_PER_STATEMENT, _MAX_PARAMETERS // width))
    for start in range(0, len(rows), per):
        part = rows[start : start + per]
        db.execute(sql.format(", ".join([group] * len(part))), [v for row in part for v in row])


def update_rows(
    db: sqlite3.Connection, one: str, many: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Update versions by the same values in ``one`` (a statement per row) or ``many`` (an
    UPDATE ... FROM a VALUES list of the rows, where SQLite has it)."""
    if _UPDATE_FROM:
        execute_rows(db, many, len(rows[0]), rows)
    else:
        db.executemany(one, rows)
