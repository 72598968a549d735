"""The worker loop: take a batch of paths from the master, count them under --root, report.

A worker holds no state the master cannot rebuild: if it dies, its leases expire; if the master
goes away, it keeps its unsent results, reconnects with capped backoff and sends them again.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import threading
import time
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from typing import Any

from workers.common import (
    MAX_EXPANDED_BYTES,
    PER_FILE_LOG,
    StopSignals,
    TLSFiles,
    display_path,
    error_text,
    format_address,
    printable,
)
from workers.counting import complete_lines_end, compressed, count_fd
from workers.errors import ConfigError, CountError, MasterRefused, PathRefused
from workers.expansion import Expansion
from workers.matching import ErrorMatcher
from workers.opening import open_under
from workers.protocol import (
    DispatchManager,
    Result,
    Status,
    Task,
    forget_connection,
    tls_error_text,
    tls_refused,
)
from workers.wirechecks import MAX_BASES, MAX_ERROR_CHARS

log = logging.getLogger(f"logdispatch.{__name__}")
per_file_log = logging.getLogger(f"{PER_FILE_LOG}.worker")

# Small files are taken a hundred at a time (one round trip each way per batch); big files one
# or a few at a time, so one worker does not sit on work another could start.
BATCH_ITEMS = 100
BATCH_BYTES = 8 * 1024 * 1024
# How long one take() may wait for work on the master; short, so a stop is noticed quickly.
TAKE_TIMEOUT_SECONDS = 1.0
# Results of a long batch are sent at least this often, so the ledger keeps up.
FLUSH_SECONDS = 1.0
# Results already counted are sent before a file this big, or any compressed file, is started:
# its counting may take long, and they must not wait for it.
LONG_FILE_BYTES = 16 * 1024 * 1024
# Reconnect delays: doubling from the first to the cap.
RECONNECT_FIRST_SECONDS = 0.5
RECONNECT_CAP_SECONDS = 30.0

# Errors that mean "the connection to the master is gone" (a timeout included), not "this
# call was wrong".
CONNECTION_ERRORS = (OSError, EOFError)


@dataclass(frozen=True)
class WorkerConfig:
    address: tuple[str, int]
    authkey: bytes
    root: bytes | None = None  # None: the master's own root path
    batch_items: int = BATCH_ITEMS
    batch_bytes: int = BATCH_BYTES
    # Stop when this process is gone (workers started by `run` or `work --processes`).
    parent_pid: int | None = None
    engine: str = "auto"  # see ErrorMatcher
    max_expanded: int = MAX_EXPANDED_BYTES  # decompressed bytes of one file, at most
    tls: TLSFiles | None = None  # this host's certificate and key, and the master's CA


class Worker:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self._stopping = False  # a plain flag: set from signal handlers, which must not lock
        self._tasks: Any = None  # proxies, None while disconnected
        self._results: Any = None
        self._root = config.root
        self._lease = 0.0  # the master's lease term, learnt when connecting
        self._finished = threading.Event()  # set after the last result is sent: heartbeats end
        self._unsent: list[Result] = []
        self._held: dict[int, bytes] = {}  # task id -> lease, of the batch being counted
        self._counting: int | None = None  # the task being counted now
        self._lost: set[int] = set()
        self._held_lock = threading.Lock()
        # Per (error pattern, counters): a master sends the same ones with every task.
        self._matchers: dict[tuple[bytes, tuple[tuple[str, bytes], ...]], ErrorMatcher] = {}
        self._expansion = Expansion(config.max_expanded, on_start=self._flush)
        self.handled = 0  # tasks reported on, whatever their outcome

    # --- life cycle ------------------------------------------------------------------------

    def run(self, install_signals: bool = True) -> int:
        if install_signals:
            StopSignals(self.stop)
        heartbeat = threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True)
        try:
            self._connect_with_backoff()
            heartbeat.start()
            while not self._stopping:
                self.step()
            self._flush()
        except MasterRefused as e:
            log.error("%s", e)
            return 2
        finally:
            self._finished.set()
        if self._unsent:
            log.warning(
                "stopping with %d results the master did not get; it will have them counted again",
                len(self._unsent),
            )
        log.info("stopped after %d file%s", self.handled, "" if self.handled == 1 else "s")
        return 0

    def stop(self) -> None:
        """Warm stop: finish the current file, hand back the rest; safe from a signal handler."""
        self._stopping = True

    # --- one iteration -------------------------------------------------------------------

    def step(self) -> None:
        if self._orphaned():
            return
        try:
            if self._tasks is None:
                self._connect_with_backoff()
            if self._unsent:
                self._flush()
            if self._tasks is None:
                return  # stopped while waiting for the master, or lost it again
            tasks: list[Task] = self._tasks.take(
                self.id, self.config.batch_items, self.config.batch_bytes, TAKE_TIMEOUT_SECONDS
            )
            if not isinstance(tasks, list):
                raise EOFError(f"unexpected reply to take(): {type(tasks).__name__}")
        except CONNECTION_ERRORS as e:
            self._disconnected(e)
            return
        with self._held_lock:
            self._held = {t.id: t.lease for t in tasks}
            self._lost.clear()
        last_flush = time.monotonic()
        per_file = per_file_log.isEnabledFor(logging.INFO)  # once a batch: it may be thousands
        for index, task in enumerate(tasks):
            if self._stopping:
                self._hand_back(tasks[index:])
                break
            with self._held_lock:
                lost = task.id in self._lost
                self._counting = None if lost else task.id
            if not lost:
                # Two statements: counting may flush, which replaces self._unsent.
                result = self.count(task)
                self._unsent.append(result)
                self.handled += 1
                if per_file and result.status is Status.DONE:
                    per_file_log.info(
                        "%s: %d lines, %d error lines, %.3fs",
                        display_path(task.path),
                        result.lines,
                        result.error_lines,
                        result.seconds,
                    )
            if time.monotonic() - last_flush >= FLUSH_SECONDS:
                self._flush()
                last_flush = time.monotonic()
        with self._held_lock:
            self._held = {}
            self._counting = None
        self._flush()

    # --- counting ------------------------------------------------------------------------

    def count(self, task: Task) -> Result:
        """Count one task's file under this worker's root; every failure becomes a Result."""
        started = time.perf_counter()

        def failed(status: Status, error: str) -> Result:
            log.warning("%s: %s", display_path(task.path), error)
            seconds = time.perf_counter() - started
            # As the master accepts it: one printable line, bounded.
            error = printable(error)
            error = error[: MAX_ERROR_CHARS - 1] + "…" if len(error) > MAX_ERROR_CHARS else error
            return Result(
                task.id, task.attempt, self.id, status, seconds=seconds, error=error,
                lease=task.lease,
            )  # fmt: skip

        assert self._root is not None
        try:
            matcher = self._matcher(task.error_pattern, task.counters)
            fd = open_under(self._root, task.path)
        except FileNotFoundError:
            return failed(Status.VANISHED, "file not found")
        except (PathRefused, ConfigError, re.error) as e:
            return failed(Status.ERROR, str(e))
        except OSError as e:
            return failed(Status.ERROR, error_text(e))
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return failed(Status.ERROR, "not a regular file")
            growing = task.growing and not compressed(fd)
            if before.st_size < task.size or (
                not growing and (before.st_size, before.st_mtime_ns) != (task.size, task.mtime_ns)
            ):
                return failed(Status.CHANGED, "changed since it was queued")
            if task.size >= LONG_FILE_BYTES:
                self._flush()
            # Reading stops at the queued size (one read for a small file): growth past it
            # shows in the fstat below. A compressed file flushes too, once it is recognised.
            counts = count_fd(
                fd,
                matcher,
                size=complete_lines_end(fd, task.size) if growing else task.size,
                expansion=self._expansion,
                bases=task.bases[:MAX_BASES],
            )
            after = os.fstat(fd)
        except CountError as e:
            return failed(Status.ERROR, str(e))
        except OSError as e:
            return failed(Status.ERROR, error_text(e))
        finally:
            os.close(fd)
        if after.st_size < task.size or (
            not growing and (after.st_size, after.st_mtime_ns) != (task.size, task.mtime_ns)
        ):
            return failed(Status.CHANGED, "changed while it was counted")
        return Result(
            task.id,
            task.attempt,
            self.id,
            Status.DONE,
            lines=counts.lines,
            error_lines=counts.error_lines,
            bytes_read=counts.bytes_read,
            long_lines=counts.long_lines,
            seconds=time.perf_counter() - started,
            samples=counts.samples,
            lease=task.lease,
            device=before.st_dev,
            inode=before.st_ino,
            fingerprint=counts.fingerprint,
            extends=counts.extends,
            counts=counts.counts,
        )

    def _matcher(self, pattern: bytes, counters: tuple[tuple[str, bytes], ...]) -> ErrorMatcher:
        key = (pattern, counters)
        try:
            matcher = self._matchers.get(key)
        except TypeError:  # a list where a tuple belongs: no key, and no counters either
            raise ConfigError(
                "a task's counters must be a tuple of (name, pattern) pairs"
            ) from None
        if matcher is None:
            matcher = ErrorMatcher(pattern, counters=counters, engine=self.config.engine)
            self._matchers[key] = matcher
            log.info(
                "error pattern %s: %s engine, lines counted by %s",
                printable(pattern.decode("utf-8", "backslashreplace")),  # as typed: \b, not \\b
                matcher.engine,
                matcher.newline_counter,
            )
            for name, engine in zip(matcher.counter_names, matcher.counter_engines, strict=True):
                log.info("counter %s: %s engine", name, engine)
        return matcher

    # --- talking to the master -------------------------------------------------------------

    def _connect(self) -> None:
        manager = DispatchManager(self.config.address, self.config.authkey, self.config.tls)
        try:
            manager.connect()
        except AuthenticationError:
            raise MasterRefused(
                f"the master at {format_address(self.config.address)} refused this worker's "
                "authkey (authentication failed): check --authkey-file / $LOGDISPATCH_AUTHKEY"
            ) from None
        except OSError as e:
            if not tls_refused(e):
                raise
            raise MasterRefused(
                f"TLS with the master at {format_address(self.config.address)} failed: "
                f"{tls_error_text(e)}: check --tls-cert, --tls-key and --tls-ca"
            ) from None
        tasks = manager.get_task_queue()  # type: ignore[attr-defined]
        results = manager.get_result_queue()  # type: ignore[attr-defined]
        described = tasks.describe()
        self._lease = float(described["lease"])
        if self._root is None:
            self._root = bytes(described["root"])
            log.info("using the master's root %s", display_path(self._root))
        self._tasks, self._results = tasks, results

    def _connect_with_backoff(self) -> None:
        delay = RECONNECT_FIRST_SECONDS
        attempt = 1
        while not self._stopping:
            try:
                self._connect()
            except CONNECTION_ERRORS as e:
                if self._stopping:  # asked to stop meanwhile: the master may be stopping too
                    log.info("stopped while connecting: %s", error_text(e))
                    return
                log.warning(
                    "cannot reach the master at %s (attempt %d): %s; retrying in %.1f s",
                    format_address(self.config.address),
                    attempt,
                    error_text(e),
                    delay,
                )
                self._sleep(delay)
                delay = min(delay * 2, RECONNECT_CAP_SECONDS)
                attempt += 1
                continue
            log.info(
                "connected to the master at %s as %s", format_address(self.config.address), self.id
            )
            return

    def _disconnected(self, error: BaseException) -> None:
        # While stopping, a master that stops too (the end of `run --once`) is no news.
        log.log(
            logging.INFO if self._stopping else logging.WARNING,
            "lost the master at %s: %s",
            format_address(self.config.address),
            error_text(error),
        )
        self._tasks = self._results = None
        forget_connection(self.config.address)

    def _flush(self) -> None:
        """Send the results not yet acknowledged; keep them if the master is unreachable."""
        if not self._unsent or self._results is None:
            return
        try:
            self._results.put(self._unsent)
            self._unsent = []
        except CONNECTION_ERRORS as e:
            self._disconnected(e)

    def _hand_back(self, tasks: list[Task]) -> None:
        if self._tasks is None:
            return  # disconnected: the leases end with the connection
        try:
            self._tasks.release(self.id, [(t.id, t.lease) for t in tasks])
        except CONNECTION_ERRORS as e:
            self._disconnected(e)  # the leases will expire instead

    def _orphaned(self) -> bool:
        """Stop a worker started by `run` or `work --processes` once that process is gone."""
        if self.config.parent_pid is not None and os.getppid() != self.config.parent_pid:
            if not self._stopping:
                log.warning("parent process %d is gone: stopping", self.config.parent_pid)
            self.stop()
        return self._stopping

    def _sleep(self, seconds: float) -> None:
        """Sleep unless stopping or orphaned (checked every 0.1 s)."""
        deadline = time.monotonic() + seconds
        while not self._orphaned() and (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(remaining, 0.1))

    def _heartbeat_loop(self) -> None:
        """Keep leases on the current batch alive while a file is being counted.

        It runs until the last result is sent, a warm stop included: the file being finished
        keeps its lease.
        """
        tasks: Any = None
        while not self._finished.wait(max(self._lease / 3, 0.1)):
            with self._held_lock:
                held = sorted(self._held.items())
                counting = self._counting
            if not held:
                continue
            try:
                if tasks is None:
                    manager = DispatchManager(
                        self.config.address, self.config.authkey, self.config.tls
                    )
                    manager.connect()
                    tasks = manager.get_task_queue()  # type: ignore[attr-defined]
                lost = tasks.heartbeat(self.id, held, counting)
            except Exception as e:  # try again next beat, on a new connection
                log.warning("heartbeat failed: %s", error_text(e))
                tasks = None
                forget_connection(self.config.address)
                continue
            if lost:
                with self._held_lock:
                    self._lost.update(lost)
