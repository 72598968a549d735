"""A file's entry in every format: its fields declared once over ``FileRow``'s attributes, and
derived from them the JSON keys and CSV columns, the entry's values, and its JSON text."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from enum import StrEnum
from json.encoder import encode_basestring_ascii
from typing import Any, NamedTuple

from dispatcher.ledger.rows import FileRow
from workers.common import decode_path


class Kind(StrEnum):
    """How a field's value is shown."""

    PATH = "path"  # a name's exact bytes, shown as text (workers.common.decode_path)
    OTHER_PATH = "other path"  # the same, or None
    TEXT = "text"
    INTEGER = "integer"
    TIME = "time"  # seconds since the epoch, shown in ISO 8601, local time with its offset
    COUNTS = "counts"  # the ledger's JSON object of named counts (None: {}); JSON text in CSV


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
    Field("gone", "gone_at", Kind.TIME),
    Field("same_as", "same_as", Kind.OTHER_PATH),
    Field("counts", "counts", Kind.COUNTS),
)
# A failed or vanished file's entry (summary --failed): when it ended, too.
FAILED_ENTRY = (*FILE_ENTRY, Field("finished_at", "finished_at", Kind.TIME))

_unknown = {field.attribute for field in FAILED_ENTRY} - set(FileRow._fields)
if _unknown:
    raise AssertionError(f"entry fields that FileRow does not hold: {sorted(_unknown)}")


def _json_text(text: str | None) -> str:
    return "null" if text is None else encode_basestring_ascii(text)


def _counts(text: str | None) -> dict[str, int]:
    return json.loads(text) if text else {}


def _json_counts(text: str | None) -> str:
    return text or "{}"  # the ledger's JSON, written as it is


def iso_time(timestamp: float | None) -> str | None:
    """A moment in ISO 8601, local time with its offset."""
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp).astimezone().isoformat(timespec="seconds")


# A field's value in an entry, and as JSON text, by its kind; "{0}" is the row's item
# (FileRow's attribute by its index: a plain tuple of FILE_COLUMNS serves as well).
_VALUE = {
    Kind.PATH: "decode_path({0})",
    Kind.OTHER_PATH: "decode_path({0}) if {0} is not None else None",
    Kind.TEXT: "{0}",
    Kind.INTEGER: "{0}",
    Kind.TIME: "iso_time({0})",
    Kind.COUNTS: "_counts({0})",
}
# In CSV, a file's named counts are one cell: their JSON.
_CSV = {**_VALUE, Kind.COUNTS: "_json_counts({0})"}
# Written out in place rather than by calling a function for each field: those calls were most
# of what formatting a row cost.
_JSON = {
    Kind.PATH: "encode_ascii(decode_path({0}))",
    Kind.OTHER_PATH: '"null" if {0} is None else encode_ascii(decode_path({0}))',
    Kind.TEXT: '"null" if {0} is None else encode_ascii({0})',
    Kind.INTEGER: '"null" if {0} is None else int({0})',
    Kind.TIME: "_json_text(iso_time({0}))",
    Kind.COUNTS: '{0} or "{{}}"',  # the ledger's JSON, written as it is
}


def _compiled(name: str, expression: str) -> Callable[[FileRow], Any]:
    """``lambda row: expression``, compiled once: written out field by field, as by hand, so
    that a row costs no loop over its fields (summaries write a million rows)."""
    names: dict[str, Any] = {"decode_path": decode_path, "iso_time": iso_time}
    names.update(
        _json_text=_json_text, _counts=_counts, _json_counts=_json_counts,
        encode_ascii=encode_basestring_ascii,
    )  # fmt: skip
    exec(f"def {name}(row):\n    return {expression}\n", names)
    function: Callable[[FileRow], Any] = names[name]
    return function


class EntryFormat:
    """An entry of ``fields`` (Field) for each FileRow: its keys, its values in their
    order, and the same as JSON text (what json.dumps gives of the entry as a dict)."""

    def __init__(self, name: str, fields: tuple[Field, ...]) -> None:
        self.keys = tuple(field.key for field in fields)
        # Items by index, not attributes: the rows may be FileRows or the query's tuples.
        items = [f"row[{FileRow._fields.index(field.attribute)}]" for field in fields]
        value = [_VALUE[field.kind].format(item) for field, item in zip(fields, items, strict=True)]
        self.values: Callable[[FileRow], tuple[Any, ...]] = _compiled(
            f"{name}_values", "(" + "".join(v + ", " for v in value) + ")"
        )
        cells = [_CSV[field.kind].format(item) for field, item in zip(fields, items, strict=True)]
        self.csv_values: Callable[[FileRow], tuple[Any, ...]] = _compiled(
            f"{name}_csv_values", "(" + "".join(v + ", " for v in cells) + ")"
        )
        members = [
            f"{json.dumps(field.key)}: {{{_JSON[field.kind].format(item)}}}"
            for field, item in zip(fields, items, strict=True)
        ]
        text = "{{" + ", ".join(members) + "}}"
        if "'" in text or "\\" in text:
            raise ValueError(f"a key of {name} that needs quoting: {self.keys}")
        self.json: Callable[[FileRow], str] = _compiled(f"{name}_json", f"f'{text}'")


FILE_FORMAT = EntryFormat("file", FILE_ENTRY)
# A file's entry in every format: the JSON keys and the CSV columns, in this order.
FILE_FIELDS = FILE_FORMAT.keys
# A file's entry as values in FILE_FIELDS order, and as CSV cells.
file_values = FILE_FORMAT.values
file_csv_values = FILE_FORMAT.csv_values
# ``json.dumps(file_entry(row))``, written out: json.dumps per entry was most of what a row
# cost over a big ledger.
json_entry = FILE_FORMAT.json


def file_entry(row: FileRow) -> dict[str, Any]:
    return dict(zip(FILE_FIELDS, file_values(row), strict=True))
