"""What the master has been doing since it started: the numbers behind ``logdispatch status``,
``run --once``'s progress and the metrics endpoint.

Manager-server threads report workers' calls and hang-ups, the master loop reports files queued
and finished; readers take a consistent ``snapshot()``. All in memory: the ledger holds the
history, this holds the present.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

# Rates are averaged over this window: long enough to smooth batches of small files, short
# enough to show a stall within a minute.
RATE_WINDOW_SECONDS = 60
# Workers gone or lost this long are dropped from the table (a restarted worker has a new id).
FORGET_WORKER_SECONDS = 600.0
# Failures kept for the status view.
RECENT_FAILURES = 10
# Upper bounds of the seconds-per-file histogram (as Prometheus' defaults, up to 5 minutes).
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
FINAL_STATES = ("done", "failed", "vanished", "superseded")
# A version done: its size, the worker's id, the lines and error lines it added to the totals,
# the worker's counting seconds, and (counter name, lines) for what it added to each counter.
Counted = tuple[int, str, int, int, float, Iterable[tuple[str, int]]]


@dataclass(slots=True)
class WorkerActivity:
    """One worker process as the master sees it."""

    id: str
    first_seen: float
    last_seen: float
    sessions: set[int] = field(default_factory=set)  # its open connections (session ids)
    gone_at: float | None = None  # when its last connection closed
    files: int = 0  # files it counted (done)
    bytes: int = 0  # on-disk bytes of the files it counted
    last_result: float = 0.0


@dataclass(frozen=True, slots=True)
class Failure:
    at: float  # wall clock
    path: bytes
    error: str


@dataclass(frozen=True, slots=True)
class ActivitySnapshot:
    """A copy of the counters, taken under the lock."""

    started: float  # wall clock
    uptime: float
    queued_files: int  # versions queued since start (restored ones included)
    queued_bytes: int
    finished: dict[str, int]  # by final state
    finished_bytes: int
    lines: int
    error_lines: int
    counts: dict[str, int]  # each named counter's lines, in the master's order
    window_files: int  # finished in the last RATE_WINDOW_SECONDS
    window_bytes: int
    window: float  # the window's length so far (shorter just after start)
    seconds_buckets: tuple[int, ...]  # cumulative counts per SECONDS_BUCKETS bound, then +Inf
    seconds_sum: float
    workers: tuple[WorkerActivity, ...]
    failures: tuple[Failure, ...]


class Activity:
    """Counters of one master's life; every method is safe from any thread."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        counters: Iterable[str] = (),
    ) -> None:
        """``counters``: the names of the named counters the master counts with, shown from
        the start, at zero until a file adds to them."""
        self._clock = clock
        self._started = clock()
        self._started_wall = wall()
        self._wall = wall
        self._lock = threading.Lock()
        self._queued_files = 0
        self._queued_bytes = 0
        self._finished = dict.fromkeys(FINAL_STATES, 0)
        self._finished_bytes = 0
        self._closed_bytes = 0  # of versions ended without counts: only progress shows them
        self._lines = 0
        self._error_lines = 0
        self._counts = dict.fromkeys(counters, 0)
        # One [second, files, bytes] per second with finished files, the last minute only.
        self._window: deque[list[int]] = deque()
        self._buckets = [0] * (len(SECONDS_BUCKETS) + 1)
        self._seconds_sum = 0.0
        self._workers: dict[str, WorkerActivity] = {}
        self._by_session: dict[int, WorkerActivity] = {}
        self._failures: deque[Failure] = deque(maxlen=RECENT_FAILURES)

    # --- from the manager server's threads ---------------------------------------------------

    def contact(self, worker_id: str, session: int) -> None:
        """A worker called the master (take, heartbeat) over the connection ``session``."""
        now = self._clock()
        with self._lock:
            worker = self._workers.get(worker_id)
            if worker is None:
                worker = self._workers[worker_id] = WorkerActivity(worker_id, now, now)
            worker.last_seen = now
            worker.gone_at = None
            if session not in worker.sessions:
                worker.sessions.add(session)
                self._by_session[session] = worker

    def hung_up(self, session: int) -> None:
        """The connection ``session`` closed; a worker with none left is gone."""
        with self._lock:
            worker = self._by_session.pop(session, None)
            if worker is None:
                return
            worker.sessions.discard(session)
            if not worker.sessions:
                worker.gone_at = self._clock()

    # --- from the master loop --------------------------------------------------------------

    def queued(self, files: int, size: int) -> None:
        """``files`` new versions of ``size`` bytes in all went to the queue."""
        with self._lock:
            self._queued_files += files
            self._queued_bytes += size

    def counted(self, done: Iterable[Counted]) -> None:
        """Versions done (a worker's batch of results: one lock for them all)."""
        now = self._clock()
        second = int(now)
        window = self._window
        with self._lock:
            for size, worker_id, lines, error_lines, seconds, counts in done:
                self._finished["done"] += 1
                self._finished_bytes += size
                self._lines += lines
                self._error_lines += error_lines
                for name, count in counts:
                    self._counts[name] = self._counts.get(name, 0) + count
                if window and window[-1][0] == second:
                    window[-1][1] += 1
                    window[-1][2] += size
                else:
                    window.append([second, 1, size])
                self._buckets[bisect.bisect_left(SECONDS_BUCKETS, seconds)] += 1
                self._seconds_sum += seconds
                worker = self._workers.get(worker_id)
                if worker is not None:
                    worker.files += 1
                    worker.bytes += size
                    worker.last_result = now
                    worker.last_seen = max(worker.last_seen, now)

    def closed(self, state: str, size: int, path: bytes, error: str | None) -> None:
        """A version ended without counts: failed, vanished or superseded (not work done)."""
        with self._lock:
            self._finished[state] += 1
            self._closed_bytes += size
            if state == "failed":
                self._failures.append(Failure(self._wall(), path, error or ""))

    # --- readers ---------------------------------------------------------------------------

    def snapshot(self) -> ActivitySnapshot:
        now = self._clock()
        with self._lock:
            while self._window and self._window[0][0] <= now - RATE_WINDOW_SECONDS:
                self._window.popleft()
            for worker_id, worker in list(self._workers.items()):
                quiet_since = worker.gone_at if worker.gone_at is not None else worker.last_seen
                if now - quiet_since > FORGET_WORKER_SECONDS:
                    del self._workers[worker_id]
            cumulative = []
            total = 0
            for count in self._buckets:
                total += count
                cumulative.append(total)
            return ActivitySnapshot(
                started=self._started_wall,
                uptime=now - self._started,
                queued_files=self._queued_files,
                queued_bytes=self._queued_bytes,
                finished=dict(self._finished),
                finished_bytes=self._finished_bytes,
                lines=self._lines,
                error_lines=self._error_lines,
                counts=dict(self._counts),
                window_files=sum(entry[1] for entry in self._window),
                window_bytes=sum(entry[2] for entry in self._window),
                window=max(min(now - self._started, RATE_WINDOW_SECONDS), 1e-9),
                seconds_buckets=tuple(cumulative),
                seconds_sum=self._seconds_sum,
                workers=tuple(
                    WorkerActivity(
                        w.id,
                        w.first_seen,
                        w.last_seen,
                        set(w.sessions),
                        w.gone_at,
                        w.files,
                        w.bytes,
                        w.last_result,
                    )
                    for w in self._workers.values()
                ),
                failures=tuple(self._failures),
            )

    def progress(self) -> tuple[int, int, int, int]:
        """Files and bytes queued since start, and of those, files and bytes finished."""
        with self._lock:
            return (
                self._queued_files,
                self._queued_bytes,
                sum(self._finished.values()),
                self._finished_bytes + self._closed_bytes,
            )

    def now(self) -> float:
        return self._clock()
