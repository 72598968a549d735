"""Finding candidate files: which names are eligible, full scans, and watchdog events.

Everything here only reports what it saw to the master's inbox; deciding whether a file has
settled and recording it is the master loop's job. Events are hints, the directory is the truth.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import queue
import stat
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

log = logging.getLogger("logdispatch.watcher")

# Names that are still being written by common tools (editors, downloaders, atomic writers).
UNFINISHED_SUFFIXES = (b".tmp", b".part", b".swp", b"~")

# Candidates from a scan are sent to the master in batches of this many: fewer queue handoffs.
SCAN_BATCH = 1000


@dataclass(frozen=True, slots=True)
class Seen:
    """A path that may be a new or changed file; ``size``/``mtime_ns`` None means stat it."""

    path: bytes
    size: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True, slots=True)
class Scanned:
    """Part of a scan's findings; ``complete`` is set on the last part of a full scan."""

    seen: list[Seen]
    complete: bool = False


class Eligibility:
    """The naming rules: not hidden, not an unfinished name, and the include/exclude globs.

    A glob without ``/`` is matched against the file name, one with ``/`` against the path
    relative to the root.
    """

    def __init__(self, include: Sequence[str] = (), exclude: Sequence[str] = ()) -> None:
        self._include = [os.fsencode(g) for g in include]
        self._exclude = [os.fsencode(g) for g in exclude]

    @staticmethod
    def dir_ok(name: bytes) -> bool:
        return not name.startswith(b".")

    def accepts(self, relpath: bytes) -> bool:
        parts = relpath.split(b"/")
        name = parts[-1]
        if any(p.startswith(b".") or not p for p in parts) or name.endswith(UNFINISHED_SUFFIXES):
            return False
        if self._include and not any(_glob(relpath, name, g) for g in self._include):
            return False
        return not any(_glob(relpath, name, g) for g in self._exclude)


def _glob(relpath: bytes, name: bytes, pattern: bytes) -> bool:
    return fnmatch.fnmatchcase(relpath if b"/" in pattern else name, pattern)


class Scanner:
    """Walks the root (or part of it) on its own thread and reports eligible regular files."""

    def __init__(self, root: bytes, eligibility: Eligibility, inbox: queue.SimpleQueue[Any]):
        self._root = root
        self._eligibility = eligibility
        self._inbox = inbox
        self._requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._full_scan_pending = False
        self._thread = threading.Thread(target=self._run, name="scanner", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._requests.put(None)
            self._thread.join(timeout=5)

    def request(self, subdir: bytes = b"") -> None:
        """Scan ``subdir`` (relative; empty for the whole root) soon."""
        if not subdir:
            with self._lock:
                if self._full_scan_pending:
                    return  # one full scan still to come covers this request too
                self._full_scan_pending = True
        self._requests.put(subdir)

    def _run(self) -> None:
        while (subdir := self._requests.get()) is not None:
            if not subdir:
                with self._lock:
                    self._full_scan_pending = False
            try:
                self.scan(subdir)
            except Exception:
                log.exception("scan of %r failed", subdir)

    def scan(self, subdir: bytes = b"") -> None:
        batch: list[Seen] = []
        stack = [subdir]
        while stack:
            rel_dir = stack.pop()
            abs_dir = os.path.join(self._root, rel_dir) if rel_dir else self._root
            try:
                entries = list(os.scandir(abs_dir))
            except OSError as e:
                # A folder deleted or made unreadable mid-scan costs only that folder.
                log.warning("cannot scan %s: %s", os.fsdecode(abs_dir), e.strerror)
                continue
            for entry in entries:
                rel = os.path.join(rel_dir, entry.name) if rel_dir else entry.name
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # gone since listed
                if stat.S_ISDIR(st.st_mode):
                    if Eligibility.dir_ok(entry.name):
                        stack.append(rel)
                elif stat.S_ISREG(st.st_mode) and self._eligibility.accepts(rel):
                    batch.append(Seen(rel, st.st_size, st.st_mtime_ns))
                    if len(batch) >= SCAN_BATCH:
                        self._inbox.put(Scanned(batch))
                        batch = []
        self._inbox.put(Scanned(batch, complete=not subdir))


class _EventHandler(FileSystemEventHandler):
    def __init__(self, root: bytes, inbox: queue.SimpleQueue[Any], scanner: Scanner) -> None:
        self._prefix = root.rstrip(b"/") + b"/"
        self._inbox = inbox
        self._scanner = scanner

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("deleted", "opened", "closed_no_write"):
            return
        # A move counts at its destination: `x.log.tmp -> x.log` must be seen as x.log.
        where = event.dest_path if event.event_type == "moved" else event.src_path
        path = os.fsencode(where)
        if not path.startswith(self._prefix):
            return
        rel = path[len(self._prefix) :]
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                # Files can land in a new folder before its watch exists: look inside.
                self._scanner.request(rel)
        else:
            self._inbox.put(Seen(rel))


class _OverflowAlarm(logging.Handler):
    """Asks for a full rescan when watchdog reports lost inotify events (it only logs them)."""

    def __init__(self, scanner: Scanner) -> None:
        super().__init__(logging.WARNING)
        self._scanner = scanner

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage():
            log.warning("inotify queue overflowed: events were lost, rescanning the root")
            self._scanner.request()


class Watcher:
    """watchdog's inotify observer, or its polling observer for network filesystems."""

    def __init__(
        self, root: bytes, inbox: queue.SimpleQueue[Any], scanner: Scanner, poll: float | None
    ) -> None:
        self._observer: BaseObserver = PollingObserver(timeout=poll) if poll else Observer()
        self._observer.schedule(
            _EventHandler(root, inbox, scanner), os.fsdecode(root), recursive=True
        )
        self.mode = f"polling every {poll:g} s" if poll else "events"
        self._alarm = _OverflowAlarm(scanner)

    def start(self) -> None:
        # watchdog warns when a folder tree is copied in faster than it adds watches; it then
        # replaces the watch itself, and the scan of the new folder covers its files anyway.
        warnings.filterwarnings("ignore", "Callback with id", RuntimeWarning, "watchdog")
        # watchdog has no public hook for an inotify overflow, only this warning.
        watchdog_log = logging.getLogger("watchdog.observers")
        watchdog_log.setLevel(logging.WARNING)  # the alarm must hear warnings even under -qq
        watchdog_log.addHandler(self._alarm)
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
        logging.getLogger("watchdog.observers").removeHandler(self._alarm)
