"""A file as summaries read it from the ledger.

``FileRow`` holds what the queries read, in the columns' order; the SQL column list is derived
from it, and what a file's entry shows in each format is declared once over its attributes
(dispatcher.views.entries).
"""

from __future__ import annotations

from typing import NamedTuple


class FileRow(NamedTuple):
    """The latest version of one path, as summaries show it (a tuple: a million load fast)."""

    path: bytes
    status: str
    size: int
    lines: int | None
    error_lines: int | None
    bytes_read: int | None
    worker: str | None
    attempts: int
    error: str | None
    finished_at: float | None
    on_done: str | None = None  # what became of the file after it was counted
    gone_at: float | None = None  # when the counted file was noticed gone from the root
    same_as: bytes | None = None  # the path its content was first counted under, if another
    counts: str | None = None  # JSON: the lines of each named counter it was counted with


# FileRow's attributes that the ``latest`` view (dispatcher.ledger.reader) does not hold
# under their own name.
_EXPRESSIONS = {"on_done": "on_done_text"}
# What a query of the ``latest`` view selects to read FileRows.
FILE_COLUMNS = ", ".join(_EXPRESSIONS.get(name, name) for name in FileRow._fields)
