"""What a SQLite error means for the operator: one line that says which ledger, what is wrong
with it and what to do; and for the master's writer, that it writes nothing more."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from workers.errors import LedgerError

# What sqlite3 errors mean for the operator, and whether a restart may help.
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_TRANSIENT = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_NOMEM")


def ledger_error(path: Path, error: sqlite3.Error, doing: str = "read") -> LedgerError:
    """One line for the operator: which ledger, what is wrong with it, what to do.

    ``doing`` is "read" (a summary), "open" (the master starting) or "write" (the master
    recording).
    """
    name = getattr(error, "sqlite_errorname", "")
    code = 1 if name.startswith(_TRANSIENT) else 2
    if name.startswith(_DAMAGED):
        return LedgerError(
            f"the ledger {path} is damaged ({error}): restore it from a copy, or move it and "
            "its -wal file aside to start a new ledger (everything is then counted again)"
        )
    if "no such table" in str(error) or "no such column" in str(error):
        return LedgerError(f"{path} is not a logdispatch ledger ({error})")
    if doing == "read":
        if name.startswith("SQLITE_CANTOPEN"):
            return LedgerError(f"cannot open the ledger {path}: {_cannot_open(path)}")
        if name.startswith("SQLITE_READONLY") and _in_wal_mode(path):
            return LedgerError(
                f"cannot read the ledger {path} ({error}): it was left in WAL mode and its "
                "-shm file cannot be created here; read it as its owner, or stop its master "
                "cleanly once (that leaves it readable with read access alone)"
            )
        if name.startswith("SQLITE_READONLY"):
            return LedgerError(
                f"cannot read the ledger {path} ({error}): a transaction its master left "
                "unfinished must be rolled back first; its next start does that"
            )
        return LedgerError(f"cannot read the ledger {path}: {error}", code)
    if doing == "open":
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return LedgerError(
                f"the ledger {path} is locked by another process ({error}): a reader that "
                "holds it long, or a master of another host or version",
                code,
            )
        return LedgerError(f"cannot open the ledger {path}: {error}", code)
    what = "the disk is full" if name.startswith("SQLITE_FULL") else str(error)
    return LedgerError(
        f"cannot write the ledger {path}: {what}; what was committed before is kept, and "
        "files not yet recorded are counted again at the next start",
        code,
    )


def _in_wal_mode(path: Path) -> bool:
    """Whether the ledger's header says WAL (its read and write versions, bytes 18 and 19)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return header[18:20] == b"\x02\x02"


def _cannot_open(path: Path) -> str:
    """Why SQLite could not open ``path``, as the file system says."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return "unable to open database file"


class Failing(Protocol):
    """A writer that remembers its first failed write (dispatcher.ledger.writer.Ledger)."""

    _failure: LedgerError | None

    def _fail(self, error: sqlite3.Error) -> LedgerError: ...


_W = TypeVar("_W", bound=Failing)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def guarded(method: Callable[Concatenate[_W, _P], _R]) -> Callable[Concatenate[_W, _P], _R]:
    """A Ledger method whose SQLite errors become one LedgerError. After one, the transaction
    is rolled back and every such method raises it again: nothing is written, and nothing
    (a move or delete of a counted file) follows a commit that did not happen."""

    @functools.wraps(method)
    def guarded(self: _W, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self._failure is not None:
            raise self._failure
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise self._fail(e) from None

    return guarded
