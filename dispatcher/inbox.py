"""The master loop's inbox: every message another thread sends it, in one place.

The scanner, the watcher, the manager server's threads and the disposer threads never touch
the master's state or the ledger; they post one of these and the master loop
(``Master._drain``) handles it. A message of any other type is a bug, and the loop says so
instead of dropping it.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import TYPE_CHECKING

from workers.protocol import Result

if TYPE_CHECKING:
    from dispatcher.versions import Outcome


@dataclass(frozen=True, slots=True)
class Seen:
    """A path that may be a new or changed file; ``size``/``mtime_ns`` None means stat it."""

    path: bytes
    size: int | None = None
    mtime_ns: int | None = None
    inode: int = 0  # with size and mtime_ns: the file's inode number


@dataclass(frozen=True, slots=True)
class Scanned:
    """Part of a scan's findings. ``full``: part of a scan of the whole root; ``complete``: its
    last part; ``missed``: (on the last part) some folder of it could not be listed, so a file
    it did not report may still be there."""

    seen: list[Seen]
    complete: bool = False
    full: bool = False
    missed: bool = False


@dataclass(frozen=True, slots=True)
class ResultsIn:
    """A worker's batch of results, checked on the server thread that received it."""

    results: list[Result]


@dataclass(frozen=True, slots=True)
class Disposed:
    """What became of a batch of counted files that --on-done moved or deleted."""

    outcomes: list[Outcome]


Message = Seen | Scanned | ResultsIn | Disposed
Inbox = queue.SimpleQueue[Message]
