"""What becomes of a file once it is counted (--on-done): kept, moved to an archive, or deleted.

The order is what makes it safe. The master records the intended action in the same
transaction as the file's counts; only once that commit is on disk do the disposer threads act,
and its outcome is recorded by a later commit. A master that stops in between finds the action
still pending at its next start and finishes it. Every action may therefore run twice, so each
is idempotent: a file already gone was deleted, and a move already made is recognised at its
destination. Only the version that was counted is touched: a file whose size or mtime changed
since is left alone, and its new version is counted as usual.
"""

from __future__ import annotations

import contextlib
import errno
import filecmp
import logging
import os
import queue
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum

from dispatcher import defaults
from dispatcher.common import ConfigError, decode_path, display_path, error_text

log = logging.getLogger("logdispatch.ondone")

# A move that cannot hard-link the file copies it instead: another filesystem (EXDEV), a
# filesystem without hard links, or a file the master may not link (fs.protected_hardlinks
# refuses links to files of other users that it cannot write).
_COPY_INSTEAD = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP})
MOVED_TO = "moved to "  # how a move's outcome begins, before the file's new path
# Names tried in the archive for one file before the move is recorded as failed.
_MAX_NAMES = 1000


class Action(StrEnum):
    KEEP = "keep"
    MOVE = "move"
    DELETE = "delete"


class DisposalState(StrEnum):
    PENDING = "pending"  # recorded with the counts, not acted on yet
    DONE = "done"
    FAILED = "failed"  # tried again when the master next starts
    SKIPPED = "skipped"  # changed since it was counted, or gone: left alone for good


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

    def prepare(self, root: bytes) -> None:
        """Refuse an archive inside the root, create it, and check that it can be written."""
        if self.archive is None:
            return
        shown = f"--on-done move:{os.fsdecode(self.archive)}"
        if _within(os.path.realpath(self.archive), os.path.realpath(root)):
            raise ConfigError(
                f"{shown}: the folder is inside the watched root {os.fsdecode(root)}, where "
                "what is moved would be counted again"
            )
        try:
            os.makedirs(self.archive, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=self.archive, prefix=b".logdispatch-probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise ConfigError(f"{shown}: cannot create or write to it: {error_text(e)}") from None


KEEP = OnDone()


@dataclass(frozen=True, slots=True)
class Disposal:
    """A counted version to move or delete, as recorded with its counts."""

    version_id: int
    path: bytes  # relative to the root
    size: int
    mtime_ns: int
    action: Action
    archive: bytes | None


# (version id, state, note): the note is what the summary shows ("deleted", "moved to ...").
Outcome = tuple[int, DisposalState, str]


@dataclass(frozen=True, slots=True)
class Disposed:
    """Outcomes of a batch, for the master loop to record."""

    outcomes: list[Outcome]


class _Refused(Exception):
    """A move that cannot go ahead; the message says why."""


class Disposer:
    """Moves and deletes counted files on threads of its own, so that the master loop never
    waits on the filesystem (see defaults.DISPOSER_THREADS); outcomes go to ``report``."""

    def __init__(self, root: bytes, report: Callable[[Disposed], None]) -> None:
        self._root = root
        self._report = report
        self._batches: queue.SimpleQueue[list[Disposal] | None] = queue.SimpleQueue()
        self._folders: set[bytes] = set()  # archive folders made or found already
        self._holds_root: dict[bytes, bool] = {}  # archive -> whether ROOT lies inside it
        self._threads = [
            threading.Thread(target=self._run, name=f"disposer-{i}", daemon=True)
            for i in range(defaults.DISPOSER_THREADS)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def submit(self, batch: list[Disposal]) -> None:
        # In parts, so that the threads share a big batch (say, what a restart found pending).
        for start in range(0, len(batch), defaults.DISPOSER_BATCH):
            self._batches.put(batch[start : start + defaults.DISPOSER_BATCH])

    def stop(self) -> None:
        """Finish every batch submitted so far, then end the threads."""
        running = [thread for thread in self._threads if thread.is_alive()]
        for _ in running:
            self._batches.put(None)
        for thread in running:
            thread.join()

    def _run(self) -> None:
        while (batch := self._batches.get()) is not None:
            self._report(Disposed([self.dispose(d) for d in batch]))

    def dispose(self, disposal: Disposal) -> Outcome:
        """Act on one file; never raises: a failure is an outcome."""
        try:
            state, note = self._act(disposal)
        except (_Refused, OSError) as e:
            note = f"{disposal.action} failed: {e if isinstance(e, _Refused) else error_text(e)}"
        except Exception:  # a bug must cost this file's action only, never the master
            log.exception("cannot %s %s", disposal.action, display_path(disposal.path))
            note = f"{disposal.action} failed: unexpected error (see the master's log)"
        else:
            return disposal.version_id, state, note
        log.warning("%s: %s", display_path(disposal.path), note)
        return disposal.version_id, DisposalState.FAILED, note

    def _act(self, d: Disposal) -> tuple[DisposalState, str]:
        source = os.path.join(self._root, d.path)
        try:
            found: os.stat_result | None = os.lstat(source)
        except FileNotFoundError:
            found = None
        if found is not None and not _is_version(found, d):
            log.info(
                "%s changed since it was counted: left in place, its new version is counted",
                display_path(d.path),
            )
            return DisposalState.SKIPPED, "left in place: changed since it was counted"
        # The check and the action are separate calls (there is no conditional unlink): a write
        # landing between the two, microseconds apart, is not seen.
        if d.action is Action.DELETE:
            if found is not None:
                _unlink_if_there(source)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("deleted %s", display_path(d.path))
            return DisposalState.DONE, "deleted"
        assert d.archive is not None
        target = os.path.join(d.archive, d.path)
        holds_root = self._holds_root.get(d.archive)
        if holds_root is None:
            holds_root = self._holds_root[d.archive] = _within(
                self._root, os.path.realpath(d.archive)
            )
        # With ROOT inside the archive, ARCHIVE/<path> may fall inside ROOT.
        if holds_root and _within(os.path.join(os.path.realpath(d.archive), d.path), self._root):
            raise _Refused(f"{decode_path(target)} would be inside the watched root")
        if found is None:
            moved = _moved_earlier(target, d)
            if moved is None:
                log.info("%s was gone before it could be moved", display_path(d.path))
                return DisposalState.SKIPPED, "gone before it could be moved"
        else:
            moved = self._move(source, target, found, d.version_id)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("moved %s to %s", display_path(d.path), display_path(moved))
        return DisposalState.DONE, MOVED_TO + decode_path(moved)

    def _move(self, source: bytes, target: bytes, counted: os.stat_result, vid: int) -> bytes:
        folder = os.path.dirname(target)
        self._make_folder(folder)
        try:
            moved = _place(source, target, counted, vid)
        except FileNotFoundError:
            if os.path.isdir(folder):
                raise
            self._folders.discard(folder)  # removed since it was made: make it again
            self._make_folder(folder)
            moved = _place(source, target, counted, vid)
        _unlink_if_there(source)
        return moved

    def _make_folder(self, folder: bytes) -> None:
        if folder in self._folders:
            return
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise _Refused(f"cannot create {decode_path(folder)}: {error_text(e)}") from None
        self._folders.add(folder)


def _place(source: bytes, target: bytes, counted: os.stat_result, vid: int) -> bytes:
    """Give ``source`` a free name at ``target`` (or a numbered one) without replacing anything."""
    try:
        return _link_free_name(source, target, source, counted)
    except OSError as e:
        if e.errno not in _COPY_INSTEAD:
            raise
    # A complete, synced copy under a temporary name, then linked to its final name like the
    # file itself would be: the archive never shows a partial file, and nothing is replaced.
    # The version id in the name makes a copy left by a crash this file's, overwritten here.
    staged = os.path.join(os.path.dirname(target), b".logdispatch-%d.tmp" % vid)
    shutil.copyfile(source, staged)
    shutil.copystat(source, staged)  # mtime (to the ns) and mode
    fd = os.open(staged, os.O_RDONLY)
    try:
        os.fsync(fd)  # on disk before the source is unlinked
    finally:
        os.close(fd)
    try:
        return _link_free_name(staged, target, source, counted)
    finally:
        os.unlink(staged)


def _link_free_name(file: bytes, target: bytes, source: bytes, counted: os.stat_result) -> bytes:
    for name in _names(target):
        try:
            os.link(file, name)
        except FileExistsError:
            if _holds(name, source, counted):
                return name  # linked or copied there before a crash, or an identical copy
            continue
        return name
    raise _Refused(f"no free name for {decode_path(target)} after {_MAX_NAMES} tries")


def _names(target: bytes) -> Iterator[bytes]:
    """``DIR/a/app.log``, then ``DIR/a/app.1.log``, ``app.2.log``...: the number goes before the
    last suffix, so ``x.log.gz`` becomes ``x.log.1.gz`` and stays a .gz."""
    yield target
    stem, suffix = os.path.splitext(target)
    for number in range(1, _MAX_NAMES):
        yield b"%s.%d%s" % (stem, number, suffix)


def _holds(name: bytes, source: bytes, counted: os.stat_result) -> bool:
    """Whether ``name`` already is the counted file: the same inode, or the same bytes and mtime."""
    try:
        there = os.lstat(name)
    except FileNotFoundError:
        return False
    if os.path.samestat(there, counted):
        return True
    return (
        stat.S_ISREG(there.st_mode)
        and (there.st_size, there.st_mtime_ns) == (counted.st_size, counted.st_mtime_ns)
        and filecmp.cmp(name, source, shallow=False)
    )


def _moved_earlier(target: bytes, d: Disposal) -> bytes | None:
    """Where a move already made put the counted version (its source is gone), if anywhere."""
    for name in _names(target):
        try:
            there = os.lstat(name)
        except FileNotFoundError:
            return None  # names are taken in order: no later one was used
        if _is_version(there, d):
            return name
    return None


def _is_version(found: os.stat_result, d: Disposal) -> bool:
    return stat.S_ISREG(found.st_mode) and (found.st_size, found.st_mtime_ns) == (
        d.size,
        d.mtime_ns,
    )


def _unlink_if_there(path: bytes) -> None:
    with contextlib.suppress(FileNotFoundError):  # gone meanwhile: what was asked for
        os.unlink(path)


def _within(path: bytes, folder: bytes) -> bool:
    return path == folder or path.startswith(folder.rstrip(b"/") + b"/")
