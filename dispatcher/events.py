"""watchdog's events as hints for the master: a file to look at, a folder to scan.

Apart from ``dispatcher.watcher`` so that a master that does not watch (``run --once``,
``--no-events``) starts without loading watchdog.
"""

from __future__ import annotations

import logging
import os
import queue
import warnings
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from dispatcher.watcher import Scanner, Seen

log = logging.getLogger("logdispatch.watcher")


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
