"""The master loop: settle candidates, queue new versions, record results, reap leases.

One thread runs ``step()`` over and over; it is the only writer of the ledger and of the
registry. Scanner, watcher, manager-server and disposer threads talk to it through ``inbox``
only. Each of them is a Service (dispatcher.master.services): started once by ``start()``,
stopped once by ``close()``.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatcher import defaults
from dispatcher.inbox import Disposed, Inbox, ResultsIn, Scanned, Seen
from dispatcher.ledger.writer import Ledger
from dispatcher.master.config import MasterConfig
from dispatcher.master.ondone import Disposer, prepare_archive
from dispatcher.master.registry import Ready, Registry
from dispatcher.master.results import Results
from dispatcher.master.retention import Retention
from dispatcher.master.services import Server, ServerFactory, Service, manager_server
from dispatcher.transport.server import ResultSink, StatusService
from dispatcher.transport.taskqueue import TaskQueue
from dispatcher.versions import Action, OpenVersion, Version, VersionStatus
from dispatcher.views.activity import Activity
from dispatcher.views.status import MasterInfo, RootWatch, status_document
from dispatcher.watch.scanner import Eligibility, Scanner
from dispatcher.watch.walk import file_under, stat_under
from workers.common import display_path
from workers.errors import ConfigError

if TYPE_CHECKING:  # watchdog loads only in a master that watches
    from dispatcher.watch.events import Watcher

log = logging.getLogger(f"logdispatch.{__name__}")


class Master:
    """The master of one root: its collaborators are handed in, so that a test can give it a
    ledger of its own or a server without sockets; ``Master(config)`` makes the real ones."""

    def __init__(
        self,
        config: MasterConfig,
        *,
        ledger: Ledger | None = None,
        serve: ServerFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self._wall = wall
        self._root = os.fsencode(os.path.realpath(config.root))
        self._inbox: Inbox = queue.SimpleQueue()
        prepare_archive(config.on_done, self._root)  # refused before the ledger is taken
        self._stopping = False  # a plain flag: set from signal handlers, which must not lock
        self.scan_complete = False  # the first full scan has reported everything it found
        if ledger is None:
            ledger = Ledger(config.state_dir, Path(os.fsdecode(self._root)))
        self._ledger = ledger
        rules = ledger.count_with(config.error_pattern, config.counters)
        other = ledger.counted_with_other_rules()
        if other and config.recount is None:
            log.warning(
                "%d counted file(s) were counted with other rules than these (the error pattern "
                "and counters %s): they keep the counts they have, and the summary shows which "
                "counters they lack; --recount all|missing counts them again",
                other,
                ", ".join(rules.names) or "none",
            )
        self._committed_at = clock()
        self.activity = Activity(clock, wall, rules.names)
        self._versions = Registry(ledger.known_versions(), ledger.gone_paths())
        # Counted files that leave the root are noticed (marked gone, their counts kept) unless
        # --on-done moves or deletes them itself.
        self._notice_gone = config.on_done.action is Action.KEEP
        self._scan_seen: set[bytes] = set()  # what the whole root's scan under way reported
        self.tasks = TaskQueue(
            self._root,
            rules,
            self._versions.get,
            config.lease,
            clock,
            self.activity.contact,
            secret=ledger.lease_secret,
            max_lease_age=config.max_lease_age,
        )
        self._serve = serve or manager_server(config)
        self._server: Server | None = None
        self._eligibility = Eligibility(config.include, config.exclude)
        self._scanner = Scanner(self._root, self._eligibility, self._inbox)
        self._watcher: Watcher | None = None
        # Started in this order and stopped in the reverse one; the disposer outlives them all
        # (see close()).
        self._inputs: list[Service] = []
        # New work is handed to the queue once per step: one put per file woke a waiting
        # take() for every file, which then returned a batch of one.
        # New versions and their files' inode numbers (0: not known), queued once a loop.
        self._to_queue: list[tuple[Version, int]] = []
        self._next_rescan = clock() + config.rescan
        self._disposer = Disposer(self._root, self._inbox.put)
        self._retention = (
            None if config.keep is None else Retention(ledger, config.keep, clock, wall)
        )
        self._results = Results(
            self._root,
            config,
            ledger,
            self._versions,
            self.tasks,
            self.activity,
            wall,
            self._look_again,
        )

    @property
    def root(self) -> bytes:
        return self._root

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None
        return self._server.address

    # --- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Restore open work from the ledger, start serving, watching and the first scan.

        Call ``close()`` afterwards even when this raises.
        """
        self._restore()
        self._disposer.start()
        # Bound before anything is watched, so that an address in use fails the start at once
        # rather than after the watches of a big tree; served last, so that close() stops it
        # first.
        server = self._serve(
            self.tasks, ResultSink(self._inbox), StatusService(self.status), self.activity.hung_up
        )
        self._server = server
        try:
            self._watch()
        except BaseException:
            server.stop()  # never started: only its socket is left to close
            raise
        self._run_service(server)
        if not self.config.once:
            log.info(
                "watching %s (%s, full rescan every %g s)",
                os.fsdecode(self._root),
                self.watch_mode,
                self.config.rescan,
            )
        # The watcher starts first, so a file landing during the scan is seen by one or the other.
        self._scanner.request()

    def _watch(self) -> None:
        self._run_service(self._scanner)
        if self.config.once or not self.config.events:
            return
        from dispatcher.watch.events import Watcher

        watcher = Watcher(
            self._root, self._inbox, self._scanner, self.config.poll, self._notice_gone
        )
        try:
            self._run_service(watcher)
        except OSError as e:
            raise ConfigError(
                f"cannot watch {os.fsdecode(self._root)}: {e.strerror} (raise "
                "fs.inotify.max_user_watches, or use --poll SECONDS or --no-events)"
            ) from None
        self._watcher = watcher

    def _run_service(self, service: Service) -> None:
        self._inputs.append(service)  # stopped by close() even if it fails to start
        service.start()

    def _restore(self) -> None:
        for record in self._ledger.open_versions():
            self._versions.add(record)
            self._to_queue.append((record.version, 0))  # its inode is not known
        if self.config.recount is not None:
            self._recount(self.config.recount == "missing")
        self._queue_new()
        if self._versions:
            log.info("re-queued %d unfinished files from the ledger", len(self._versions))
        # Whatever --on-done says now: these were decided when the files were counted.
        unfinished = self._ledger.unfinished_disposals()
        if unfinished:
            log.info("finishing %d moves or deletions recorded in the ledger", len(unfinished))
            self._disposer.submit(unfinished)

    def run(self, until: Callable[[], bool] | None = None) -> bool:
        """Step until stopped, or finished with --once; returns whether ``until()`` ended it."""
        while not self._stopping:
            self.step()
            if self.config.once and self.finished:
                break
            if until is not None and until():
                return True
        return False

    def stop(self) -> None:
        """Ask ``run()`` to return after the current step; safe from a signal handler."""
        self._stopping = True

    @property
    def stopping(self) -> bool:
        return self._stopping

    def close(self) -> None:
        """Stop handing out work, record what has arrived, and release everything."""
        self.tasks.close()
        # The server stops first, before the last drain: a result the server accepts is then
        # recorded; a worker that cannot deliver keeps its results for the next master.
        for service in reversed(self._inputs):
            try:
                service.stop()
            except Exception:  # what arrived is still recorded below
                log.exception("cannot stop %s", type(service).__name__)
        try:
            self._drain(timeout=0)
            self._commit()
        finally:
            # The moves and deletions decided so far are finished and recorded before the
            # ledger closes. (After a second signal they are left pending, and finished at the
            # next start.) A commit that failed (a full disk) decided none.
            self._disposer.stop()
            try:
                self._drain(timeout=0)
                self._ledger.commit()
            finally:
                self._ledger.close()

    @property
    def watch_mode(self) -> str:
        if self.config.once:
            return "once"
        return self._watcher.mode if self._watcher is not None else "rescans only"

    def status(self) -> dict[str, Any]:
        """The document of ``logdispatch status``; called on a manager-server thread."""
        info = MasterInfo(
            self._root,
            self.address,
            socket.gethostname(),
            os.getpid(),
            self.watch_mode,
            self.config.lease,
        )
        now = self.activity.now()
        # A count of the loop's dict from another thread: a moment's count, which is all it is.
        settling = self._versions.settling
        return status_document(
            info, self.tasks.state(), self.activity.snapshot(), settling, now, self._root_watch()
        )

    def _root_watch(self) -> RootWatch:
        if self._watcher is not None:
            return RootWatch(self._watcher.root_state, self._watcher.rewatched)
        return RootWatch("ok" if os.path.isdir(self._root) else "gone")

    @property
    def finished(self) -> bool:
        """True once the first scan is complete and every file it found is final."""
        return self.scan_complete and not self._versions and not self._versions.settling

    # --- one iteration -------------------------------------------------------------------

    def step(self, timeout: float = defaults.TICK_SECONDS) -> None:
        interval = self.config.commit_interval
        if interval > 0 and self._ledger.dirty:
            # Wait no longer than the next commit is due: what was recorded is then durable
            # (and in summaries) within the commit interval, not up to a tick later.
            timeout = min(timeout, max(self._committed_at + interval - self._clock(), 0.0))
        self._drain(timeout)
        self._check_settling()
        self._queue_new()
        for lease in self.tasks.expire():
            self._results.lease_expired(lease)
        now = self._clock()
        if not self.config.once and now >= self._next_rescan:
            self._next_rescan = now + self.config.rescan
            self._scanner.request()
        # Commits come at most once an interval, and only with something to commit: after a
        # quiet spell, a result is committed as soon as it is recorded.
        if now - self._committed_at >= self.config.commit_interval and self._commit():
            self._committed_at = now
        if self._retention is not None:
            self._retention.step()

    def _commit(self) -> bool:
        """Commit, then move or delete the files whose counts that commit made durable;
        False when there was nothing to commit."""
        # Leases are written with the commit that makes them durable anyway, and only those
        # still open then: a small file is usually counted by now, and its row written once.
        self._ledger.mark_leased(t for t in self.tasks.drain_taken() if t[0] in self._versions)
        if not self._ledger.dirty:
            return False
        self._ledger.commit()
        counted = self._results.take_disposals()
        if counted:
            self._disposer.submit(counted)
        return True

    def _drain(self, timeout: float) -> None:
        """Handle everything in the inbox, waiting up to ``timeout`` for the first message."""
        try:
            message = self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            match message:
                case ResultsIn(results):
                    self._results.record_all(results)
                case Scanned(found, complete, full, missed):
                    for seen in found:
                        self._consider(seen)
                    if full and self._notice_gone:
                        self._scan_seen.update(seen.path for seen in found)
                    if complete:
                        self.scan_complete = True
                        self._scanned_whole(missed)
                case Seen():
                    self._consider(message)
                case Disposed(outcomes):
                    self._ledger.record_disposals(outcomes)
                case _:
                    # Another thread posted what nothing handles: a bug, said loudly.
                    log.error("the master's inbox got an unknown message: %r", message)
                    raise TypeError(f"unknown inbox message {type(message).__name__}")
            try:
                message = self._inbox.get_nowait()
            except queue.Empty:
                return

    # --- settling ------------------------------------------------------------------------

    def _consider(self, seen: Seen) -> None:
        size, mtime_ns, inode = seen.size, seen.mtime_ns, seen.inode
        if size is None or mtime_ns is None:
            if not self._eligibility.accepts(seen.path):
                return
            found = file_under(self._root, seen.path)
            if found is None:
                self._versions.unsettle(seen.path)
                if self._notice_gone and self._versions.went(seen.path):
                    self._gone(seen.path)
                return
            size, mtime_ns, inode = found.st_size, found.st_mtime_ns, found.st_ino
        if self._versions.back(seen.path):
            self._ledger.record_gone(seen.path, None)
            log.info("%s is in the root again", display_path(seen.path))
        # Every write moves mtime to "now": an mtime older than the settle time means the
        # file has held still that long already (the clocks of master and file server agree).
        old_enough = self._wall() - mtime_ns / 1e9 >= self.config.settle
        now = self._clock()
        ready = self._versions.settled(
            seen.path, size, mtime_ns, now, self.config.settle, old_enough, self.config.follow
        )
        if ready is not None:
            self._add_version(seen.path, size, mtime_ns, inode, ready is Ready.GROWING)

    def _scanned_whole(self, missed: bool) -> None:
        """A scan of the whole root ended: the counted files it did not find are gone, unless
        a folder could not be listed (then nothing is concluded)."""
        seen, self._scan_seen = self._scan_seen, set()
        if not self._notice_gone or missed:
            return
        for path in self._versions.missing(seen):
            # Naming rules changed since it was counted: not looked for, so not gone.
            if self._eligibility.accepts(path):
                self._gone(path)

    def _gone(self, path: bytes) -> None:
        if self._ledger.record_gone(path, self._wall()):
            log.info("%s is gone from the root; its counts stay", display_path(path))
        self._versions.mark_gone(path)

    def _look_again(self, path: bytes) -> None:
        """A new version of ``path`` may be there: it settles and is counted as itself."""
        self._consider(Seen(path))

    def _recount(self, only_missing: bool) -> None:
        """Count again, as new versions, the files counted with other rules (``only_missing``:
        without one of the current counters) that are in the root as they were counted: the
        others keep what they have, and a changed one is a new version anyway."""
        wanted = self._ledger.to_recount(only_missing)
        again = [v for v in wanted if stat_under(self._root, v.path) == (v.size, v.mtime_ns)]
        for version in again:
            self._add_version(version.path, version.size, version.mtime_ns, 0)
        log.warning(
            "recounting %d file(s) counted with %s; %d more are no longer in the root as they "
            "were counted and keep what they have",
            len(again),
            "fewer counters" if only_missing else "other rules",
            len(wanted) - len(again),
        )

    def _check_settling(self) -> None:
        for path in self._versions.due(self._clock(), self.config.settle, self.config.follow):
            self._consider(Seen(path))

    def _add_version(
        self, path: bytes, size: int, mtime_ns: int, inode: int, growing: bool = False
    ) -> None:
        older = self._versions.open_on(path)
        if older is not None:
            # Changed again before it was counted: only the newest version is worth counting.
            self._results.close(older, VersionStatus.SUPERSEDED, "changed before it was counted")
        version_id = self._ledger.add_version(path, size, mtime_ns, self._wall())
        version = Version(version_id, path, size, mtime_ns)
        self._versions.add(OpenVersion(version, growing=growing))
        self._to_queue.append((version, inode))

    def _queue_new(self) -> None:
        """Queue the new versions, but those that are counted files renamed (see Results.new),
        with the counted versions each may extend."""
        if self._to_queue:
            queued = self._results.new(self._to_queue)
            self._to_queue = []
            if queued:
                self.tasks.put_many([v.id for v in queued])
                self.activity.queued(len(queued), sum(v.size for v in queued))
