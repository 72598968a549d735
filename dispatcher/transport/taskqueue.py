"""The master's queue of tasks and the leases on them.

Workers reach ``describe``, ``take``, ``heartbeat`` and ``release`` through the manager server;
taking a batch records a lease for each task in the same step, so a worker that dies holding
tasks loses nothing: its leases expire and the master puts the tasks back. Each lease is signed
(LeaseSigner), and only its signature extends or hands it back. Everything else is called by
the master loop.

The queue holds version ids and leases only. What a version is, how many attempts it had and
which hosts to avoid are the master's registry's, read through ``versions`` when a task is
handed out: an id whose version is final by then (counted from a result held across a restart,
or superseded) is skipped.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass

from dispatcher import defaults
from dispatcher.transport.requests import check_int, check_leases, check_seconds, check_worker_id
from dispatcher.transport.sessions import current_session
from dispatcher.transport.weight import work_weight
from dispatcher.versions import OpenVersion, Rules
from workers.common import host_of
from workers.protocol import Base, Task

MAX_BATCH_ITEMS = 1000
# What one worker id may hold at once: a client that takes without counting cannot empty the
# queue into its own hands.
MAX_HELD_PER_WORKER = MAX_BATCH_ITEMS
# A lease its worker is not counting (the rest of a batch) is kept alive by heartbeats for at
# most this many lease terms from when it was taken; then it goes to another worker. A batch is
# sized to be counted well within that, and a client that only heartbeats holds nothing for long.
WAITING_LEASE_TERMS = 4
# A host that failed a task gets it again only when no other host has asked for work this
# recently: a host with a broken mount must not burn every attempt of the files it cannot see.
OTHER_HOSTS_ACTIVE_SECONDS = 10.0
MAX_HOSTS_REMEMBERED = 1000


_SIGNED_NUMBERS = struct.Struct("<QQQq")  # version id, attempt, size, mtime_ns


class LeaseSigner:
    """Signs each attempt at a version: keyed BLAKE2b (a MAC by design, and several times
    cheaper than HMAC per task) over the version id, attempt, size, mtime and path.

    Version ids are never reused and the secret stays in the ledger, so a signature names one
    version across restarts of the master: a result that brings it back was counted for
    exactly that version, by a worker that was handed it.
    """

    def __init__(self, secret: bytes, rules_id: int = 0) -> None:
        # The rules' id as the salt: a result counted with other rules (a worker that took its
        # task before the master restarted with new ones) answers no lease of these, and its
        # file is counted again rather than recorded with counts of other counters.
        salt = rules_id.to_bytes(hashlib.blake2b.SALT_SIZE, "big")
        self._keyed = hashlib.blake2b(key=secret, digest_size=16, salt=salt)

    def __call__(
        self, version_id: int, attempt: int, path: bytes, size: int, mtime_ns: int
    ) -> bytes:
        mac = self._keyed.copy()
        mac.update(_SIGNED_NUMBERS.pack(version_id, attempt, size, mtime_ns))
        mac.update(path)
        return mac.digest()


@dataclass(slots=True)
class Lease:
    task: Task
    worker: str
    deadline: float
    session: int  # the connection that took it (see dispatcher.transport.sessions)
    taken_at: float
    # Once its worker has moved on to another file, a lease is no longer kept alive as the one
    # being counted.
    passed: bool = False


@dataclass(frozen=True, slots=True)
class QueueState:
    """How much work waits and who holds what, for the status view."""

    ready: int
    delayed: int  # failed attempts waiting for their retry
    leases: list[Lease]  # oldest first


class TaskQueue:
    """Ready tasks, delayed retries and leases, shared by server threads and the master loop."""

    def __init__(
        self,
        root: bytes,
        rules: Rules,
        versions: Callable[[int], OpenVersion | None],
        lease_seconds: float = defaults.LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        on_contact: Callable[[str, int], None] | None = None,
        *,
        secret: bytes,
        max_lease_age: float = defaults.MAX_LEASE_AGE_SECONDS,
    ) -> None:
        self._root = root
        self._versions = versions
        self.sign = LeaseSigner(secret, rules.id)
        self._max_lease_age = max_lease_age
        self._on_contact = on_contact  # (worker id, session) of every take and heartbeat
        self._rules = rules
        self._lease_seconds = lease_seconds
        self._clock = clock
        self._ready: deque[int] = deque()  # version ids, first to hand out first
        self._delayed: list[tuple[float, int]] = []  # (due time, version id): a heap
        self._leases: dict[int, Lease] = {}
        self._held_by: Counter[str] = Counter()  # worker id -> leases it holds
        self._counting: dict[str, int] = {}  # worker id -> the task its heartbeats say it counts
        self._taken: list[tuple[int, int, str]] = []  # (id, attempt, worker) since last drain
        self._last_take: dict[str, float] = {}  # host -> when it last asked for work
        self._cond = threading.Condition()
        self._closed = False

    # --- served to workers -------------------------------------------------------------

    def describe(self) -> dict[str, object]:
        return {"root": self._root, "lease": self._lease_seconds}

    def take(self, worker_id: str, max_items: int, max_bytes: int, timeout: float) -> list[Task]:
        """Hand out up to ``max_items`` tasks (at least one, then up to ``max_bytes`` in all,
        each file weighed by ``work_weight``: a compressed file weighs more than its size)."""
        check_worker_id(worker_id)
        max_items = max(1, min(check_int(max_items, "max_items"), MAX_BATCH_ITEMS))
        check_int(max_bytes, "max_bytes")
        wait = min(check_seconds(timeout, "timeout"), defaults.TAKE_WAIT_CAP_SECONDS)
        wait_until = self._clock() + wait
        host = host_of(worker_id)
        session = current_session()
        if self._on_contact is not None:
            self._on_contact(worker_id, session)
        with self._cond:
            # A worker that holds all it may gets no work until its results are in: as soon
            # as they are (discard() wakes it), not at the end of its wait.
            while self._held_by[worker_id] >= MAX_HELD_PER_WORKER:
                remaining = wait_until - self._clock()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            max_items = min(max_items, MAX_HELD_PER_WORKER - self._held_by[worker_id])
            now = self._clock()
            self._last_take[host] = now
            if len(self._last_take) > MAX_HOSTS_REMEMBERED:
                # Host names come from clients: only the recent ones matter, keep only those.
                self._last_take = {
                    h: t for h, t in self._last_take.items() if now - t < OTHER_HOSTS_ACTIVE_SECONDS
                }
            while True:
                self._promote_due()
                if self._ready or self._closed:
                    break
                remaining = wait_until - self._clock()
                if remaining <= 0:
                    return []
                self._cond.wait(min(remaining, self._next_due_in()))
            batch: list[Task] = []
            total = 0
            now = self._clock()
            others_active = any(
                h != host and now - t < OTHER_HOSTS_ACTIVE_SECONDS
                for h, t in self._last_take.items()
            )
            withheld: list[int] = []
            while self._ready and len(batch) < max_items:
                version_id = self._ready[0]
                record = self._versions(version_id)
                if record is None or version_id in self._leases:
                    self._ready.popleft()  # final since it was queued, or queued twice
                    continue
                version = record.version
                weight = work_weight(version.path, version.size)
                if batch and total + weight > max_bytes:
                    break
                self._ready.popleft()
                if others_active and host in record.avoid:
                    withheld.append(version_id)
                    if len(withheld) >= MAX_BATCH_ITEMS:
                        break  # a host that failed much of the queue must not scan all of it
                    continue
                task = self._task(record, record.attempts + 1)
                deadline = now + self._lease_seconds
                self._leases[task.id] = Lease(task, worker_id, deadline, session, now)
                self._held_by[worker_id] += 1
                self._taken.append((task.id, task.attempt, worker_id))
                batch.append(task)
                total += weight
            self._ready.extendleft(reversed(withheld))  # still first in line for other hosts
            return batch

    def heartbeat(
        self, worker_id: str, leases: list[tuple[int, bytes]], counting: int | None = None
    ) -> list[int]:
        """Extend the leases the caller holds (``(task id, lease)`` pairs, as taken); returns
        the ids it no longer holds (it skips those).

        ``counting`` is the task being counted now: its lease lives up to --max-lease-age, the
        others up to WAITING_LEASE_TERMS terms from when they were taken.
        """
        check_worker_id(worker_id)
        check_leases(leases)
        if counting is not None:
            check_int(counting, "counting")
        lost = []
        if self._on_contact is not None:
            self._on_contact(worker_id, current_session())
        with self._cond:
            now = self._clock()
            waiting_age = WAITING_LEASE_TERMS * self._lease_seconds
            for task_id, token in leases:
                lease = self._held(task_id, token)
                if lease is None:
                    lost.append(task_id)
                    continue
                if task_id == counting and not lease.passed:
                    before = self._counting.get(lease.worker)
                    if before is not None and before != task_id and before in self._leases:
                        self._leases[before].passed = True  # done with, or left: no longer
                    self._counting[lease.worker] = task_id
                    limit = lease.taken_at + max(self._max_lease_age, waiting_age)
                else:
                    limit = lease.taken_at + waiting_age
                lease.deadline = max(lease.deadline, min(now + self._lease_seconds, limit))
        return lost

    def release(self, worker_id: str, leases: list[tuple[int, bytes]]) -> None:
        """Take back tasks a stopping worker did not start; the attempt does not count."""
        check_worker_id(worker_id)
        check_leases(leases)
        with self._cond:
            returned = []
            for task_id, token in leases:
                if self._held(task_id, token) is not None:
                    self._drop_lease(task_id)
                    returned.append(task_id)
            if not self._closed:  # the master is stopping: the ledger has them as open
                self._ready.extendleft(reversed(returned))  # back at the front, in order
                self._cond.notify_all()

    # --- master loop side ----------------------------------------------------------------

    def put(self, version_id: int, delay: float = 0.0) -> None:
        with self._cond:
            if self._closed:
                return  # the master is stopping; the ledger still has it as open
            if delay > 0:
                heapq.heappush(self._delayed, (self._clock() + delay, version_id))
            else:
                self._ready.append(version_id)
            self._cond.notify()

    def put_many(self, version_ids: list[int]) -> None:
        """Queue new work in one go: waiting takes wake once, to full batches."""
        with self._cond:
            if self._closed:
                return
            self._ready.extend(version_ids)
            self._cond.notify_all()

    def state(self) -> QueueState:
        with self._cond:  # every take() waits for this lock: copy, sort outside
            # An id whose version closed after it was queued counts until it reaches the front:
            # rare (a result held across a restart, a file superseded), and counting it here
            # would cost every status call a pass over the queue under this lock.
            ready, delayed, leases = len(self._ready), len(self._delayed), [*self._leases.values()]
        leases.sort(key=lambda lease: lease.taken_at)
        return QueueState(ready, delayed, leases)

    def lease(self, version_id: int) -> Lease | None:
        with self._cond:
            return self._leases.get(version_id)

    def discard(self, version_ids: list[int]) -> None:
        """End the leases on these tasks. Their versions are final or about to be retried: an
        id still queued is skipped once the registry has closed its version."""
        with self._cond:
            for version_id in version_ids:
                self._drop_lease(version_id)
            self._cond.notify_all()  # a worker that held all it may can take more now

    def session_closed(self, session: int) -> None:
        """The connection that took these leases is gone: let them expire now, not at term."""
        with self._cond:
            for lease in self._leases.values():
                if lease.session == session:
                    lease.deadline = float("-inf")

    def expire(self) -> list[Lease]:
        """Remove and return the leases whose deadline passed."""
        now = self._clock()
        with self._cond:
            expired = [lease for lease in self._leases.values() if lease.deadline <= now]
            for lease in expired:
                self._drop_lease(lease.task.id)
            return expired

    def drain_taken(self) -> list[tuple[int, int, str]]:
        with self._cond:
            taken, self._taken = self._taken, []
            return taken

    def close(self) -> None:
        """Stop handing out work: waiting and later takes return empty batches."""
        with self._cond:
            self._closed = True
            self._ready.clear()
            self._delayed.clear()
            self._cond.notify_all()

    # --- internals (lock held) ------------------------------------------------------------

    def _task(self, record: OpenVersion, attempt: int) -> Task:
        version = record.version
        signature = self.sign(version.id, attempt, version.path, version.size, version.mtime_ns)
        rules = self._rules
        bases = tuple(
            Base(b.version.id, b.fingerprint, b.lines, b.error_lines, b.counts_for(rules) or ())
            for b in record.bases
        )
        return Task(
            version.id,
            version.path,
            version.size,
            version.mtime_ns,
            attempt,
            rules.error_pattern,
            signature,
            bases,
            record.growing,
            rules.counters,
        )

    def _held(self, task_id: int, token: bytes) -> Lease | None:
        """The live lease on ``task_id`` if ``token`` is its signature: only its holder has it."""
        lease = self._leases.get(task_id)
        if lease is None or not hmac.compare_digest(lease.task.lease, token):
            return None
        return lease

    def _drop_lease(self, version_id: int) -> Lease | None:
        lease = self._leases.pop(version_id, None)
        if lease is not None:
            worker = lease.worker
            self._held_by[worker] -= 1
            if self._held_by[worker] <= 0:
                del self._held_by[worker]
            if self._counting.get(worker) == version_id:
                del self._counting[worker]
        return lease

    def _promote_due(self) -> None:
        now = self._clock()
        while self._delayed and self._delayed[0][0] <= now:
            self._ready.append(heapq.heappop(self._delayed)[1])

    def _next_due_in(self) -> float:
        if not self._delayed:
            return defaults.TAKE_WAIT_CAP_SECONDS
        return max(0.0, self._delayed[0][0] - self._clock())
