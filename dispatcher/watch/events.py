"""watchdog's events as hints for the master: a file to look at, a folder to scan.

Apart from ``dispatcher.watch.scanner`` so that a master that does not watch (``run --once``,
``--no-events``) starts without loading watchdog.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import warnings
from collections.abc import Callable

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from dispatcher.inbox import Inbox, Seen
from dispatcher.watch.scanner import Scanner

log = logging.getLogger(f"logdispatch.{__name__}")


# How often the watcher makes sure the root is still the folder it watches: a root deleted and
# made again, or replaced by a rename, is another folder, and the watch on the old one is dead.
ROOT_CHECK_SECONDS = 1.0

# Watcher.root_state: the root is watched; it is gone (its files wait until it is back); it is
# there but could not be watched again (only the rescans find its files meanwhile).
WATCHED, GONE, UNWATCHED = "ok", "gone", "unwatched"


# The events the master acts on. watchdog asks inotify for these only: by default it also
# asks for every open and every close without a write, which the scanner's reading of each
# folder and the workers' reading of each file make by the thousand. They filled the kernel's
# queue of a big tree at every scan, and the rescan that follows an overflow filled it again.
EVENTS = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
]


class _EventHandler(FileSystemEventHandler):
    def __init__(
        self,
        root: bytes,
        inbox: Inbox,
        scanner: Scanner,
        root_changed: Callable[[], None],
        deletions: bool,
    ) -> None:
        self._root = root.rstrip(b"/")
        self._deletions = deletions
        self._prefix = self._root + b"/"
        self._inbox = inbox
        self._scanner = scanner
        self._root_changed = root_changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("deleted", "moved") and os.fsencode(event.src_path) == self._root:
            self._root_changed()  # watchdog ends the watch of a deleted root: look at it now
            return
        if event.event_type == "deleted" or (self._deletions and event.event_type == "moved"):
            # A file gone, or moved away: the master looks whether it was counted.
            gone = os.fsencode(event.src_path)
            if self._deletions and not event.is_directory and gone.startswith(self._prefix):
                self._inbox.put(Seen(gone[len(self._prefix) :]))
            if event.event_type == "deleted":
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
    """watchdog's inotify observer, or its polling observer for network filesystems, on a root
    that may be deleted and made again: a thread checks the root's identity and watches the
    new folder (with a rescan) as soon as there is one."""

    def __init__(
        self,
        root: bytes,
        inbox: Inbox,
        scanner: Scanner,
        poll: float | None,
        deletions: bool = False,
    ) -> None:
        self._root = root
        self._deletions = deletions  # report files deleted or moved away, too
        self._inbox = inbox
        self._scanner = scanner
        self._poll = poll
        self.mode = f"polling every {poll:g} s" if poll else "events"
        self._alarm = _OverflowAlarm(scanner)
        self._observer: BaseObserver | None = None
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the root watched
        self.root_state = WATCHED
        self.rewatched = 0  # times the watch was set again on a new root folder
        self._trouble = ""  # the last problem logged, not to be logged again each check
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._guard = threading.Thread(target=self._guard_root, name="root-guard", daemon=True)

    def start(self) -> None:
        # watchdog warns when a folder tree is copied in faster than it adds watches; it then
        # replaces the watch itself, and the scan of the new folder covers its files anyway.
        warnings.filterwarnings("ignore", "Callback with id", RuntimeWarning, "watchdog")
        # watchdog has no public hook for an inotify overflow, only this warning.
        watchdog_log = logging.getLogger("watchdog.observers")
        watchdog_log.setLevel(logging.WARNING)  # the alarm must hear warnings even under -qq
        watchdog_log.addHandler(self._alarm)
        self._arm()
        self._guard.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._guard.is_alive():
            self._guard.join(timeout=5)
        self._disarm()
        logging.getLogger("watchdog.observers").removeHandler(self._alarm)

    def _arm(self) -> None:
        """Watch the root as it is now; OSError when it cannot be watched."""
        # The identity is taken first: a root replaced meanwhile only costs one more arming.
        st = os.stat(self._root)
        observer: BaseObserver = PollingObserver(timeout=self._poll) if self._poll else Observer()
        handler = _EventHandler(
            self._root, self._inbox, self._scanner, self._wake.set, self._deletions
        )
        observer.schedule(handler, os.fsdecode(self._root), recursive=True, event_filter=EVENTS)
        observer.start()
        self._observer = observer
        self._identity = (st.st_dev, st.st_ino)

    def _disarm(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def _guard_root(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(ROOT_CHECK_SECONDS)
            self._wake.clear()
            if not self._stopping.is_set():
                self._check_root()

    def _check_root(self) -> None:
        shown = os.fsdecode(self._root)
        try:
            st = os.stat(self._root)
        except OSError as e:
            self._root_missing(shown, e.strerror or str(e))
            return
        if not stat.S_ISDIR(st.st_mode):
            self._root_missing(shown, "not a directory")
            return
        # A folder made again may get the inode number of the one deleted: gone is gone.
        same_folder = (st.st_dev, st.st_ino) == self._identity and self.root_state == WATCHED
        if same_folder and self._watching():
            return
        if self.root_state != WATCHED:
            why = f"root {shown} is back"
        elif not same_folder:
            why = f"root {shown} was replaced by another folder"
        else:
            why = f"the watch on root {shown} ended"
        self._disarm()
        try:
            self._arm()
        except OSError as e:
            self.root_state = UNWATCHED
            self._log_once(f"{why} but cannot be watched: {e.strerror}; trying again")
            return
        self.root_state = WATCHED
        message = f"{why}: watching it again, and rescanning it"
        if same_folder:
            # A watch that keeps ending on the same folder is said once, not every second.
            self._log_once(message)
        else:
            self.rewatched += 1
            self._trouble = ""
            log.warning("%s", message)
        self._scanner.request()  # what landed before the new watch was set

    def _root_missing(self, shown: str, reason: str) -> None:
        if self.root_state != GONE:
            self._disarm()
            self.root_state = GONE
        self._log_once(f"root {shown} is gone ({reason}): its new files wait until it is back")

    def _watching(self) -> bool:
        observer = self._observer
        return observer is not None and all(e.is_alive() for e in observer.emitters)

    def _log_once(self, message: str) -> None:
        if message != self._trouble:
            self._trouble = message
            log.warning("%s", message)
