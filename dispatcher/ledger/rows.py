"""A file as summaries read it from the ledger, and the fields its entry shows in every format.

Each field is declared here once: ``FileRow`` holds what the queries read (its order is the
columns' order), ``FILE_ENTRY`` what the JSON and CSV entries show and in which order.
The SQL column list, the CSV header and the entries' formatting (dispatcher.views.summary) are
derived from them.
"""

from __future__ import annotations

from enum import StrEnum
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


class Kind(StrEnum):
    """How a field's value is shown."""

    PATH = "path"  # a name's exact bytes, shown as text (workers.common.decode_path)
    TEXT = "text"
    INTEGER = "integer"
    TIME = "time"  # seconds since the epoch, shown in ISO 8601, local time with its offset


class Field(NamedTuple):
    key: str  # the JSON key and the CSV column
    attribute: str  # FileRow's
    kind: Kind


# A file's entry in every format, in this order (docs/summary.md).
FILE_ENTRY = (
    Field("path", "path", Kind.PATH),
    Field("status", "status", Kind.TEXT),
    Field("lines", "lines", Kind.INTEGER),
    Field("error_lines", "error_lines", Kind.INTEGER),
    Field("bytes", "size", Kind.INTEGER),
    Field("worker", "worker", Kind.TEXT),
    Field("attempts", "attempts", Kind.INTEGER),
    Field("error", "error", Kind.TEXT),
    Field("on_done", "on_done", Kind.TEXT),
)
# A failed or vanished file's entry (summary --failed): when it ended, too.
FAILED_ENTRY = (*FILE_ENTRY, Field("finished_at", "finished_at", Kind.TIME))

# FileRow's attributes that the ``latest`` view (dispatcher.ledger.reader) does not hold
# under their own name.
_EXPRESSIONS = {"on_done": "on_done_text"}
# What a query of the ``latest`` view selects to read FileRows.
FILE_COLUMNS = ", ".join(_EXPRESSIONS.get(name, name) for name in FileRow._fields)

_unknown = {field.attribute for field in FAILED_ENTRY} - set(FileRow._fields)
if _unknown:
    raise AssertionError(f"entry fields that FileRow does not hold: {sorted(_unknown)}")
