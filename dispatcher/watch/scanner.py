"""Finding candidate files: which names are eligible, and full scans (watchdog's events are
in ``dispatcher.watch.events``, loaded only by a master that watches).

Everything here only reports what it saw to the master's inbox; deciding whether a file has
settled and recording it is the master loop's job. Events are hints, the directory is the truth.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import queue
import stat
import threading
import time
from collections.abc import Sequence

from dispatcher.inbox import Inbox, Scanned, Seen
from dispatcher.watch.walk import open_path
from workers.common import error_text

log = logging.getLogger(f"logdispatch.{__name__}")

# Names that are still being written by common tools (editors, downloaders, atomic writers).
UNFINISHED_SUFFIXES = (b".tmp", b".part", b".swp", b"~")

# Candidates from a scan are sent to the master in batches of this many: fewer queue handoffs.
SCAN_BATCH = 1000

# A folder that could not be scanned (permissions, out of descriptors, a network filesystem's
# error) is scanned again after this delay, doubled after each failure up to the cap: what it
# holds is found soon after the cause is gone, not at the next full rescan.
SCAN_RETRY_SECONDS = 2.0
SCAN_RETRY_CAP_SECONDS = 60.0

# A folder that is gone is not retried: it is missed by nothing.
_GONE = (errno.ENOENT, errno.ENOTDIR)


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

    def __init__(self, root: bytes, eligibility: Eligibility, inbox: Inbox):
        self._root = root
        self._eligibility = eligibility
        self._inbox = inbox
        self._requests: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._full_scan_pending = False
        self._thread = threading.Thread(target=self._run, name="scanner", daemon=True)
        # Folders whose scan failed, to scan again at _retry_at (both only on the thread).
        self._failed: set[bytes] = set()
        self._retry_delay = SCAN_RETRY_SECONDS
        self._retry_at: float | None = None
        self._misses = 0  # folders that could not be listed, ever (only on the thread)

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
        while True:
            wait = None if self._retry_at is None else max(self._retry_at - time.monotonic(), 0)
            try:
                subdir = self._requests.get(timeout=wait)
            except queue.Empty:
                self._retry()
                continue
            if subdir is None:
                return
            if not subdir:
                with self._lock:
                    self._full_scan_pending = False
            self._scan_logged(subdir)
            self._schedule_retry()

    def _scan_logged(self, subdir: bytes) -> None:
        try:
            self.scan(subdir)
        except Exception:
            log.exception("scan of %r failed", subdir)
            self._failed.add(subdir)

    def _retry(self) -> None:
        """Scan again the folders whose scan failed; back off further if one fails again."""
        folders, self._failed = self._failed, set()
        self._retry_at = None
        if b"" in folders:
            folders = {b""}  # the whole root covers every folder in it
        for subdir in sorted(folders):
            self._scan_logged(subdir)
        if self._failed:
            self._retry_delay = min(2 * self._retry_delay, SCAN_RETRY_CAP_SECONDS)
        else:
            self._retry_delay = SCAN_RETRY_SECONDS
            log.info("scanned again the folders that could not be scanned")
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        if self._failed and self._retry_at is None:
            self._retry_at = time.monotonic() + self._retry_delay
            log.debug("scanning %d folder(s) again in %g s", len(self._failed), self._retry_delay)

    def scan(self, subdir: bytes = b"") -> None:
        full = not subdir
        misses = self._misses
        batch: list[Seen] = []
        stack = [subdir]
        while stack:
            rel_dir = stack.pop()
            # Listed through a descriptor, and each entry stat'ed relative to it: a folder
            # whose path is longer than PATH_MAX is opened name by name, and its files counted.
            try:
                dir_fd = open_path(self._root, rel_dir)
            except OSError as e:
                self._cannot_scan(rel_dir, e)
                continue
            try:
                self._list(dir_fd, rel_dir, stack, batch, full)
            finally:
                os.close(dir_fd)
        self._inbox.put(Scanned(batch, complete=full, full=full, missed=self._misses != misses))

    def _cannot_scan(self, rel_dir: bytes, error: OSError) -> None:
        # A folder deleted or made unreadable mid-scan costs only that folder, and one that is
        # still there is scanned again soon.
        shown = os.path.join(self._root, rel_dir) if rel_dir else self._root
        log.warning("cannot scan %s: %s", os.fsdecode(shown), error_text(error))
        # A root that cannot be listed, gone or not, says nothing of the files in it.
        if error.errno not in _GONE or not rel_dir:
            self._misses += 1
        if error.errno not in _GONE:
            self._failed.add(rel_dir)

    def _list(
        self, dir_fd: int, rel_dir: bytes, stack: list[bytes], batch: list[Seen], full: bool
    ) -> None:
        """Add the folder's subfolders to ``stack`` and its eligible files to ``batch``."""
        try:
            with os.scandir(dir_fd) as listing:
                entries = list(listing)
        except OSError as e:
            self._cannot_scan(rel_dir, e)
            return
        for entry in entries:
            name = os.fsencode(entry.name)
            rel = os.path.join(rel_dir, name) if rel_dir else name
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue  # gone since listed
            if stat.S_ISDIR(st.st_mode):
                if Eligibility.dir_ok(name):
                    stack.append(rel)
            elif stat.S_ISREG(st.st_mode) and self._eligibility.accepts(rel):
                batch.append(Seen(rel, st.st_size, st.st_mtime_ns, st.st_ino))
                if len(batch) >= SCAN_BATCH:
                    self._inbox.put(Scanned(batch[:], full=full))
                    batch.clear()
