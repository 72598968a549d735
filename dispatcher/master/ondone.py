"""What becomes of a file once it is counted (--on-done): kept, moved to an archive, or deleted.

The order is what makes it safe. The master records the intended action in the same
transaction as the file's counts; only once that commit is on disk do the disposer threads act,
and its outcome is recorded by a later commit. A master that stops in between finds the action
still pending at its next start and finishes it. Every action may therefore run twice, so each
is idempotent: a file already gone was deleted, and a move already made is recognised at its
destination. Only the version that was counted is touched: a file whose size or mtime changed
since is left alone, and its new version is counted as usual; one of the same size and mtime
but another inode than the worker counted is another file, left alone too. Its path is walked
from the root one folder at a time without following symlinks, and the file is checked and
acted on relative to its folder's descriptor (see dispatcher.watch.walk), as are the folders made
in the archive.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

from dispatcher import defaults
from dispatcher.inbox import Disposed
from dispatcher.versions import MOVED_TO, Action, Disposal, DisposalState, OnDone, Outcome
from dispatcher.watch.walk import open_folder
from workers.common import decode_path, display_path, error_text
from workers.errors import ConfigError, SymlinkOnPath

log = logging.getLogger(f"logdispatch.{__name__}")

# A move that cannot hard-link the file copies it instead: another filesystem (EXDEV), a
# filesystem without hard links, or a file the master may not link (fs.protected_hardlinks
# refuses links to files of other users that it cannot write).
_COPY_INSTEAD = frozenset({errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP})
# Names tried in the archive for one file before the move is recorded as failed.
_MAX_NAMES = 1000
# Bytes read at a time when comparing a file in the archive with the one to move.
_COMPARE_CHUNK = 1024 * 1024


def prepare_archive(on_done: OnDone, root: bytes) -> None:
    """Refuse an archive inside the root, create it, and check that it can be written."""
    if on_done.archive is None:
        return
    shown = f"--on-done move:{os.fsdecode(on_done.archive)}"
    if _within(os.path.realpath(on_done.archive), os.path.realpath(root)):
        raise ConfigError(
            f"{shown}: the folder is inside the watched root {os.fsdecode(root)}, where "
            "what is moved would be counted again"
        )
    try:
        os.makedirs(on_done.archive, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=on_done.archive, prefix=b".logdispatch-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{shown}: cannot create or write to it: {error_text(e)}") from None


class _Refused(Exception):
    """A move that cannot go ahead; the message says why."""


class Disposer:
    """Moves and deletes counted files on threads of its own, so that the master loop never
    waits on the filesystem (see defaults.DISPOSER_THREADS); outcomes go to ``report``."""

    def __init__(self, root: bytes, report: Callable[[Disposed], None]) -> None:
        self._root = root
        self._report = report
        self._batches: queue.SimpleQueue[list[Disposal] | None] = queue.SimpleQueue()
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
            log.exception("cannot %s %s", disposal.action, display_path(disposal.version.path))
            note = f"{disposal.action} failed: unexpected error (see the master's log)"
        else:
            return disposal.version.id, state, note
        log.warning("%s: %s", display_path(disposal.version.path), note)
        return disposal.version.id, DisposalState.FAILED, note

    def _act(self, d: Disposal) -> tuple[DisposalState, str]:
        *folders, name = d.version.path.split(b"/")
        if any(part in (b"", b".", b"..") for part in (*folders, name)):
            raise _Refused(f"{decode_path(d.version.path)} does not name a file under the root")
        # The folders are opened one by one without following a symlink, and the file is
        # looked at and acted on relative to its folder's descriptor: a folder swapped for a
        # symlink after the file was counted cannot lead the action elsewhere.
        try:
            source: int | None = open_folder(self._root, folders)
        except FileNotFoundError:
            source = None  # a folder on the way is gone, and the file with it
        except SymlinkOnPath as e:
            where = os.fsencode(e.filename)
            log.warning(
                "%s: %s is a symbolic link now: left alone",
                display_path(d.version.path),
                display_path(where),
            )
            return (
                DisposalState.SKIPPED,
                f"left in place: {decode_path(where)} is a symbolic link now",
            )
        try:
            return self._act_in(d, source, folders, name)
        except _Replaced:
            log.warning(
                "%s was replaced while it was moved: left alone", display_path(d.version.path)
            )
            return DisposalState.SKIPPED, "left in place: replaced while it was moved"
        finally:
            if source is not None:
                os.close(source)

    def _act_in(
        self, d: Disposal, source: int | None, folders: list[bytes], name: bytes
    ) -> tuple[DisposalState, str]:
        found: os.stat_result | None = None
        if source is not None:
            with contextlib.suppress(FileNotFoundError):
                found = os.lstat(name, dir_fd=source)
        if found is not None and not _is_version(found, d):
            log.info(
                "%s changed since it was counted: left in place, its new version is counted",
                display_path(d.version.path),
            )
            return DisposalState.SKIPPED, "left in place: changed since it was counted"
        if found is not None and not _is_counted(found, d):
            log.warning(
                "%s is another file than the one counted (same size and mtime, another inode): "
                "left alone",
                display_path(d.version.path),
            )
            return DisposalState.SKIPPED, "left in place: another file than the one counted"
        # The check and the action are separate calls (there is no conditional unlink): a write
        # landing between the two, microseconds apart, is not seen.
        if d.action is Action.DELETE:
            if found is not None:
                assert source is not None
                _unlink_if_there(source, name)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("deleted %s", display_path(d.version.path))
            return DisposalState.DONE, "deleted"
        assert d.archive is not None
        target = os.path.join(d.archive, d.version.path)
        holds_root = self._holds_root.get(d.archive)
        if holds_root is None:
            holds_root = self._holds_root[d.archive] = _within(
                self._root, os.path.realpath(d.archive)
            )
        # With ROOT inside the archive, ARCHIVE/<path> may fall inside ROOT.
        if holds_root and _within(
            os.path.join(os.path.realpath(d.archive), d.version.path), self._root
        ):
            raise _Refused(f"{decode_path(target)} would be inside the watched root")
        if found is None:
            moved = _moved_earlier(d.archive, folders, name, d)
            if moved is None:
                log.info("%s was gone before it could be moved", display_path(d.version.path))
                return DisposalState.SKIPPED, "gone before it could be moved"
        else:
            assert source is not None
            moved = self._move(_Source(source, name, found), d.archive, folders, d.version.id)
        moved = os.path.join(os.path.dirname(target), moved)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("moved %s to %s", display_path(d.version.path), display_path(moved))
        return DisposalState.DONE, MOVED_TO + decode_path(moved)

    def _move(
        self, source: _Source, archive: bytes, folders: list[bytes], version_id: int
    ) -> bytes:
        """Place the counted file in the archive, then unlink it; returns its name there."""
        folder = _archive_folder(archive, folders)
        try:
            moved = _place(source, folder, version_id)
        except FileNotFoundError:
            if os.fstat(folder).st_nlink:  # the folder is still there: the file is not
                raise
            moved = b""  # the folder was removed since it was opened: made again below
        finally:
            os.close(folder)
        if not moved:
            folder = _archive_folder(archive, folders)
            try:
                moved = _place(source, folder, version_id)
            finally:
                os.close(folder)
        _unlink_if_same(source)
        return moved


class _Replaced(Exception):
    """The name no longer holds the counted file: another was put there during the move."""


class _Source(NamedTuple):
    """The counted file: its folder's descriptor, its name there, and its lstat."""

    folder: int
    name: bytes
    counted: os.stat_result


def _archive_folder(archive: bytes, folders: list[bytes]) -> int:
    """A descriptor of ARCHIVE/<folders>, made as needed, none of them followed if a symlink
    (the archive itself is the operator's, made again if it was removed)."""
    try:
        try:
            return open_folder(archive, folders, create=True)
        except FileNotFoundError as e:
            if os.fsencode(e.filename) != archive:
                raise
        os.makedirs(archive, exist_ok=True)
        return open_folder(archive, folders, create=True)
    except OSError as e:
        where = decode_path(os.fsencode(e.filename)) if e.filename else decode_path(archive)
        raise _Refused(f"cannot create {where}: {error_text(e)}") from None


def _place(source: _Source, folder: int, version_id: int) -> bytes:
    """Give the counted file a free name in ``folder`` (its own, or a numbered one) without
    replacing anything; returns that name."""
    try:
        return _link_free_name(source.folder, source.name, source.counted, folder, source)
    except OSError as e:
        if e.errno not in _COPY_INSTEAD:
            raise
    # A complete, synced copy under a temporary name, then linked to its final name like the
    # file itself would be: the archive never shows a partial file, and nothing is replaced.
    # The version id in the name makes a copy left by a crash this file's, overwritten here.
    staged = b".logdispatch-%d.tmp" % version_id
    copied = _copy(source, folder, staged)
    try:
        return _link_free_name(folder, staged, copied, folder, source)
    finally:
        os.unlink(staged, dir_fd=folder)


def _copy(source: _Source, folder: int, staged: bytes) -> os.stat_result:
    """Copy the counted file (checked to be it once opened) to ``staged`` in ``folder``, with
    its mode and mtime, synced; returns the copy's fstat."""
    fd = os.open(source.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=source.folder)
    try:
        if not os.path.samestat(os.fstat(fd), source.counted):
            raise _Replaced
        _unlink_if_there(folder, staged)  # a crash's leftover: never written through
        out = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600, dir_fd=folder)
        try:
            with open(fd, "rb", closefd=False) as reader, open(out, "wb", closefd=False) as writer:
                shutil.copyfileobj(reader, writer)
            os.fchmod(out, stat.S_IMODE(source.counted.st_mode))
            os.utime(out, ns=(source.counted.st_atime_ns, source.counted.st_mtime_ns))
            os.fsync(out)  # on disk before the source is unlinked
            return os.fstat(out)
        finally:
            os.close(out)
    finally:
        os.close(fd)


def _link_free_name(
    from_folder: int, name: bytes, linked: os.stat_result, folder: int, source: _Source
) -> bytes:
    """Link ``name`` (in ``from_folder``, whose lstat is ``linked``) into ``folder`` under the
    source's name or a numbered one; returns the name used."""
    for candidate in _names(source.name):
        try:
            os.link(
                name,
                candidate,
                src_dir_fd=from_folder,
                dst_dir_fd=folder,
                follow_symlinks=False,
            )
        except FileExistsError:
            if _holds(folder, candidate, source):
                return candidate  # linked or copied there before a crash, or an identical copy
            continue
        # linkat(2) links whatever the name holds at that moment, which is checked here.
        if not os.path.samestat(os.lstat(candidate, dir_fd=folder), linked):
            os.unlink(candidate, dir_fd=folder)
            raise _Replaced
        return candidate
    raise _Refused(f"no free name for {display_path(source.name)} after {_MAX_NAMES} tries")


def _names(name: bytes) -> Iterator[bytes]:
    """``app.log``, then ``app.1.log``, ``app.2.log``...: the number goes before the last
    suffix, so ``x.log.gz`` becomes ``x.log.1.gz`` and stays a .gz."""
    yield name
    stem, suffix = os.path.splitext(name)
    for number in range(1, _MAX_NAMES):
        yield b"%s.%d%s" % (stem, number, suffix)


def _holds(folder: int, name: bytes, source: _Source) -> bool:
    """Whether ``name`` in ``folder`` already is the counted file: the same inode, or the same
    bytes and mtime."""
    try:
        there = os.lstat(name, dir_fd=folder)
    except FileNotFoundError:
        return False
    counted = source.counted
    if os.path.samestat(there, counted):
        return True
    return (
        stat.S_ISREG(there.st_mode)
        and (there.st_size, there.st_mtime_ns) == (counted.st_size, counted.st_mtime_ns)
        and _same_bytes((folder, name), (source.folder, source.name))
    )


def _same_bytes(*files: tuple[int, bytes]) -> bool:
    """Whether two files, each a (folder descriptor, name), hold the same bytes."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    with contextlib.ExitStack() as stack:
        readers = [
            stack.enter_context(open(os.open(name, flags, dir_fd=folder), "rb"))
            for folder, name in files
        ]
        while True:
            chunks = [reader.read(_COMPARE_CHUNK) for reader in readers]
            if chunks[0] != chunks[1]:
                return False
            if not chunks[0]:
                return True


def _moved_earlier(archive: bytes, folders: list[bytes], name: bytes, d: Disposal) -> bytes | None:
    """The name a move already made gave the counted version (its source is gone), if any."""
    try:
        folder = open_folder(archive, folders)
    except FileNotFoundError:
        return None
    try:
        for candidate in _names(name):
            try:
                there = os.lstat(candidate, dir_fd=folder)
            except FileNotFoundError:
                return None  # names are taken in order: no later one was used
            # Size and mtime only: a copy to another filesystem has an inode of its own.
            if _is_version(there, d):
                return candidate
        return None
    finally:
        os.close(folder)


def _is_version(found: os.stat_result, d: Disposal) -> bool:
    return stat.S_ISREG(found.st_mode) and (found.st_size, found.st_mtime_ns) == (
        d.version.size,
        d.version.mtime_ns,
    )


def _is_counted(found: os.stat_result, d: Disposal) -> bool:
    """Whether ``found`` (the master's lstat, of the same size and mtime) is the file the
    worker counted.

    The inode number is compared, not the device: st_dev numbers a mount on one host (an NFS
    client gives each mount an anonymous one), so the worker's and the master's differ for the
    same file, even on one host when the worker reads another mount of the share; the inode
    number is the file's own on the server, the same from every client. Two files of two
    filesystems under the root could share an inode number, but not also the size, the mtime
    to the nanosecond and the path the master walked to without a symlink.

    A disposal recorded without an inode (by an earlier version, or from a worker that does
    not report it) is checked as before: a regular file of the counted size and mtime, found
    by that symlink-free walk; a file forged to match them can then only be one the forger
    could put under the root, not one elsewhere.
    """
    return d.inode is None or found.st_ino == d.inode


def _unlink_if_there(folder: int, name: bytes) -> None:
    with contextlib.suppress(FileNotFoundError):  # gone meanwhile: what was asked for
        os.unlink(name, dir_fd=folder)


def _unlink_if_same(source: _Source) -> None:
    """Unlink the source once placed in the archive, unless another file took its name."""
    try:
        there = os.lstat(source.name, dir_fd=source.folder)
    except FileNotFoundError:
        return
    if os.path.samestat(there, source.counted):
        _unlink_if_there(source.folder, source.name)


def _within(path: bytes, folder: bytes) -> bool:
    return path == folder or path.startswith(folder.rstrip(b"/") + b"/")
