"""The writer's statements over many rows: the new versions, results and leases a flush writes
at once, in as few statements as SQLite allows; and the rows they write."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

from workers.protocol import Result

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
    fingerprint: bytes | None
    own_lines: int
    own_error_lines: int
    own_bytes: int
    same_as: bytes | None
    rules: int | None
    counts: str | None
    own_counts: str | None
    id: int


def content_length(result: Result) -> int:
    """The length of the content a done result counted: its fingerprint's first field, else
    what the worker read."""
    if result.fingerprint:
        return int.from_bytes(result.fingerprint[:8], "big")
    return result.bytes_read


def counts_json(names: tuple[str, ...], counts: tuple[int, ...]) -> str | None:
    """Counts of the counters ``names`` (the current rules') as the ledger keeps them; None
    when there are none, or they are not one per counter (a worker that does not count them)."""
    if not names or len(counts) != len(names):
        return None
    return json.dumps(dict(zip(names, counts, strict=True)), separators=(",", ":"))


class LeaseRow(NamedTuple):
    """A task handed out, as ``mark_leased`` records it: fields as DoneRow's."""

    attempts: int
    worker: str
    id: int


def _statements(
    fields: tuple[str, ...], fixed: str, keep_max: str = "", only_if: str = ""
) -> tuple[str, str]:
    """The UPDATE that sets each of ``fields`` but the last (``id``: which row) to a row's value,
    and the ``fixed`` assignments: by one statement per row (?1 is the row's first value) and by
    one for many rows (see update_rows). The column ``keep_max`` never goes down. ``only_if``
    is a further condition: {versions} the table's prefix, {field} a row's value.
    """
    *columns, key = fields
    ones = {name: f"?{number}" for number, name in enumerate(fields, 1)}
    manys = {name: f"d.column{number}" for number, name in enumerate(fields, 1)}
    statements = []
    for values, table, source in ((ones, "", ""), (manys, "versions.", " FROM (VALUES {}) AS d")):
        assignments = [fixed]
        for column in columns:
            value = values[column]
            if column == keep_max:
                value = f"max({table}{column}, {value})"
            assignments.append(f"{column} = {value}")
        where = f"{table}{key} = {values[key]}"
        if only_if:
            where += " AND (" + only_if.format(versions=table, **values) + ")"
        statements.append(f"UPDATE versions SET {', '.join(assignments)}{source} WHERE {where}")
    return statements[0], statements[1]


# A result of an earlier attempt may come after a later attempt's lease: attempts never go down.
DONE_ONE, DONE_MANY = _statements(
    DoneRow._fields, "status = 'done', error = NULL", keep_max="attempts"
)
# Only forward: a result (say a quick failure) may have been recorded for that very attempt
# before its lease is, and must not be overwritten by it.
LEASED_ONE, LEASED_MANY = _statements(
    LeaseRow._fields,
    "status = 'leased'",
    only_if="{versions}status = 'leased' OR "
    "({versions}status = 'queued' AND {versions}attempts < {attempts})",
)


def execute_rows(
    db: sqlite3.Connection, sql: str, width: int, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Run ``sql``, whose ``{}`` is a VALUES list, for all ``rows`` (``width`` values each) in
    as few statements as the parameter limit allows."""
    for statement, values in values_statements(sql, width, rows):
        db.execute(statement, values)


def values_statements(
    sql: str, width: int, rows: Sequence[tuple[Any, ...]]
) -> Iterator[tuple[str, list[Any]]]:
    """``sql``, whose ``{}`` is a VALUES list, and its values, for all ``rows`` (``width``
    values each) in as few statements as the parameter limit allows."""
    group = "(" + ", ".join("?" * width) + ")"
    per = max(1, min(ROWS_PER_STATEMENT, _MAX_PARAMETERS // width))
    for start in range(0, len(rows), per):
        part = rows[start : start + per]
        yield sql.format(", ".join([group] * len(part))), [v for row in part for v in row]


def update_rows(
    db: sqlite3.Connection, one: str, many: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Update versions by the same values in ``one`` (a statement per row) or ``many`` (an
    UPDATE ... FROM a VALUES list of the rows, where SQLite has it)."""
    if _UPDATE_FROM:
        execute_rows(db, many, len(rows[0]), rows)
    else:
        db.executemany(one, rows)
