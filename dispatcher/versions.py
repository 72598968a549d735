"""A file version and what can become of it: the one vocabulary of the master loop, the task
queue, the ledger and the views.

A version is a path with the size and mtime it had when it settled; its id is given once by the
ledger and never again. Every other record of the master refers to a version by that id.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from enum import StrEnum

from workers.errors import ConfigError
from workers.matching import Counters


class VersionStatus(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"
    FAILED = "failed"
    VANISHED = "vanished"
    SUPERSEDED = "superseded"  # changed before it was counted; a newer version replaces it


# Not final yet: queued or handed to a worker. The views call these "pending".
OPEN_STATUSES = (VersionStatus.QUEUED, VersionStatus.LEASED)
PENDING = "pending"


def shown_status(status: str) -> str:
    """The status the views show for a version's: "pending" for the open ones."""
    return PENDING if status in OPEN_STATUSES else status


def sql_open(column: str = "status") -> str:
    """An SQL condition: ``column`` is one of OPEN_STATUSES."""
    return f"{column} IN ({', '.join(repr(str(s)) for s in OPEN_STATUSES)})"


@dataclass(frozen=True, slots=True)
class Version:
    id: int
    path: bytes  # relative to the root, the exact bytes of the name
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class Rules:
    """What versions are counted with: the error pattern and the named counters, in order.
    ``id`` is the ledger's for them (0: not recorded): versions counted with the same rules
    have the same id, and a lease is signed for one (dispatcher.transport.taskqueue)."""

    error_pattern: bytes
    counters: Counters = ()
    id: int = 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.counters)


@dataclass(frozen=True, slots=True)
class Owner:
    """Content counted before: the path it was first counted under, and the named counters,
    (name, pattern) pairs, that have counted it under any rules."""

    path: bytes
    counters: frozenset[tuple[str, bytes]] = frozenset()


@dataclass(frozen=True, slots=True)
class CountedVersion:
    """A done version's counts, as a new version is compared with it: the same file renamed,
    or grown."""

    version: Version
    lines: int
    error_lines: int
    fingerprint: bytes  # b"": not known
    worker: str | None
    bytes_read: int
    rules: int = 0  # the id of the Rules it was counted with (0: from before rules were kept)
    counts: tuple[tuple[str, int], ...] = ()  # (counter name, lines) for each it was counted with

    def counts_for(self, rules: Rules) -> tuple[int, ...] | None:
        """Its counts of ``rules``' counters in their order; None if it lacks any of them."""
        mine = dict(self.counts)
        try:
            return tuple(mine[name] for name in rules.names)
        except KeyError:
            return None


@dataclass(frozen=True, slots=True)
class Added:
    """What a done version adds to the totals, which count each piece of content once: all of
    its counts, what it added to a version it extends, or nothing when its content was counted
    before (``same_as``: the path it was first counted under, if another)."""

    lines: int
    error_lines: int
    content: int  # bytes of content (decompressed)
    same_as: bytes | None = None
    counts: tuple[int, ...] = ()  # of each named counter, in the rules' order


@dataclass(frozen=True, slots=True)
class OpenVersion:
    """A version not yet final, as the master's registry holds it.

    Replaced whole, never changed in place: the task queue reads it from other threads.
    """

    version: Version
    attempts: int = 0  # attempts that ended without a count (failed, or their lease expired)
    avoid: frozenset[str] = frozenset()  # hosts whose attempts failed: others go first
    # Counted versions its content may extend, offered to its worker (docs/counting.md).
    bases: tuple[CountedVersion, ...] = ()
    # Still growing (--follow): counted up to its last complete line, though it grows on.
    growing: bool = False

    def base(self, version_id: int) -> CountedVersion | None:
        """The base offered with this id, if one was."""
        return next((b for b in self.bases if b.version.id == version_id), None)

    def failed(self, attempt: int, host: str) -> OpenVersion:
        """This version after ``attempt`` failed on ``host``."""
        return dataclasses.replace(self, attempts=attempt, avoid=self.avoid | {host})


# --- after a version is counted (--on-done) ------------------------------------------------


class Action(StrEnum):
    KEEP = "keep"
    MOVE = "move"
    DELETE = "delete"


class DisposalState(StrEnum):
    PENDING = "pending"  # recorded with the counts, not acted on yet
    DONE = "done"
    FAILED = "failed"  # tried again when the master next starts
    SKIPPED = "skipped"  # changed since it was counted, or gone: left alone for good


MOVED_TO = "moved to "  # how a move's outcome begins, before the file's new path


@dataclass(frozen=True)
class OnDone:
    """The --on-done setting: keep, delete, or move under ``archive`` (an absolute path)."""

    action: Action = Action.KEEP
    archive: bytes | None = None

    @classmethod
    def parse(cls, text: str) -> OnDone:
        if text in (Action.KEEP, Action.DELETE):
            return cls(Action(text))
        action, colon, folder = text.partition(":")
        if action == Action.MOVE and colon and folder:
            return cls(Action.MOVE, os.path.abspath(os.fsencode(folder)))
        raise ConfigError(f"--on-done must be keep, delete or move:DIR, not {text!r}")


KEEP = OnDone()


@dataclass(frozen=True, slots=True)
class Disposal:
    """A counted version to move or delete, as recorded with its counts."""

    version: Version
    action: Action
    archive: bytes | None
    # The counted file's st_dev and st_ino as the worker's fstat saw them; None when unknown (a
    # ledger or a worker from before they were recorded). Only the inode is compared: each NFS
    # mount numbers its device its own way.
    device: int | None = None
    inode: int | None = None


# (version id, state, note): the note is what the summary shows ("deleted", "moved to ...").
Outcome = tuple[int, DisposalState, str]
