"""What a worker's result, or a lease that ran out, does to an open version: counted, retried on
other hosts first, failed for good, or closed as vanished or superseded. Runs on the master loop.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from dispatcher import defaults
from dispatcher.ledger.bulk import content_length
from dispatcher.ledger.writer import Ledger
from dispatcher.master.config import MasterConfig
from dispatcher.master.registry import Registry
from dispatcher.transport.taskqueue import Lease, TaskQueue
from dispatcher.versions import (
    Action,
    Added,
    CountedVersion,
    Disposal,
    Owner,
    Rules,
    Version,
    VersionStatus,
)
from dispatcher.views.activity import Activity, Counted
from dispatcher.watch.walk import stat_under
from workers.common import PER_FILE_LOG, display_path, host_of
from workers.protocol import Result, Status
from workers.wirechecks import MAX_BASES

log = logging.getLogger(f"logdispatch.{__name__}")
per_file_log = logging.getLogger(f"{PER_FILE_LOG}.master")


class Results:
    def __init__(
        self,
        root: bytes,
        config: MasterConfig,
        ledger: Ledger,
        versions: Registry,
        tasks: TaskQueue,
        activity: Activity,
        wall: Callable[[], float],
        look_again: Callable[[bytes], None],
    ) -> None:
        self._config = config
        self._root = root
        self._ledger = ledger
        self._versions = versions
        self._tasks = tasks
        self._activity = activity
        self._wall = wall
        self._look_again = look_again  # a path whose version changed under its worker
        self._to_dispose: list[Disposal] = []  # counted since the last commit, acted on after it

    def take_disposals(self) -> list[Disposal]:
        """The moves and deletions of the versions counted since the last call; the caller
        acts on them once the commit that recorded them is durable."""
        disposals, self._to_dispose = self._to_dispose, []
        return disposals

    def new(self, batch: list[tuple[Version, int]]) -> list[Version]:
        """New versions (with their files' inode numbers, 0 if not known), open in the
        registry: those that are a counted file renamed are recorded with its counts; the
        others get the counted versions their content may extend, and are returned, to queue.
        """
        to_queue = []
        counted: list[Counted] = []
        # The counted versions each may be or extend, looked up for the whole batch at once.
        prefixes = [_rotated_from(version.path) for version, _ in batch]
        by_inode = self._ledger.counted_by_inode(inode for _, inode in batch if inode)
        by_path = self._ledger.counted_by_path(version.path for version, _ in batch)
        by_prefix = self._ledger.counted_by_prefix(prefix for prefix in prefixes if prefix)
        rules = self._ledger.rules
        for (version, inode), prefix in zip(batch, prefixes, strict=True):
            same_file = by_inode.get(inode, []) if inode else []
            # Counted with other rules, it is read again: its counts are not these rules'.
            renamed = next(
                (c for c in same_file if _renamed(c, version) and c.rules == rules.id), None
            )
            if renamed is None:
                candidates = same_file + by_path.get(version.path, [])[:2]
                if prefix:
                    candidates += by_prefix.get(prefix, [])
                if candidates:
                    self._versions.offer(version.id, self._bases(candidates))
                to_queue.append(version)
                continue
            log.info(
                "%s is %s renamed: its counts are taken, not read again",
                display_path(version.path),
                display_path(renamed.version.path),
            )
            counts = renamed.counts_for(rules) or ()
            result = Result(
                version.id, 0, renamed.worker or "", Status.DONE, renamed.lines,
                renamed.error_lines, fingerprint=renamed.fingerprint, inode=inode, counts=counts,
            )  # fmt: skip
            owner = self._ledger.first_counted([renamed.fingerprint]).get(renamed.fingerprint)
            same_as = renamed.version.path if owner is None else owner.path
            added = Added(0, 0, 0, same_as, tuple(0 for _ in counts))
            self._done(version, result, added, counted)
        if counted:
            self._activity.counted(counted)
        return to_queue

    def _bases(self, candidates: list[CountedVersion]) -> tuple[CountedVersion, ...]:
        """The bases to offer of ``candidates``, the counted versions a new version may
        extend, most likely first: the same file's (it grew, perhaps under a new name), the
        same path's (a copy that grew, as rsync makes), and those of the names in its folder
        it may have been rotated from."""
        # One base per content: a numbered rotation renames the same content many times.
        bases: dict[bytes, CountedVersion] = {}
        for candidate in candidates:
            # A base's counts are carried on: only those of these rules will do.
            if candidate.fingerprint and candidate.version.id >= self._ledger.rules_since:
                bases.setdefault(candidate.fingerprint, candidate)
        return tuple(bases.values())[:MAX_BASES]

    def record_all(self, results: list[Result]) -> None:
        """Record a worker's batch: the versions done in bulk (one lock each for the task queue
        and the counters), anything else one by one."""
        counted: list[Counted] = []
        done_ids: list[int] = []
        refused: list[tuple[Result, Version]] = []
        # Content counted before, under the path it was first counted under.
        owners = self._ledger.first_counted(
            {r.fingerprint for r in results if r.fingerprint and r.status is Status.DONE}
        )
        per_file = per_file_log.isEnabledFor(logging.INFO)  # once a batch: it may be thousands
        for result in results:
            record = self._versions.get(result.task_id)
            version = None if record is None else record.version
            if version is not None and not self._issued(result, version):
                refused.append((result, version))
                continue
            if record is None or version is None or result.status is not Status.DONE:
                self._record(result, version)
                continue
            added = _added(version, result, record.base(result.extends), owners, self._ledger.rules)
            self._done(version, result, added, counted)
            done_ids.append(version.id)
            if per_file:
                per_file_log.info(
                    "%s: %d lines, %d error lines, %.3fs, by %s",
                    display_path(version.path),
                    result.lines,
                    result.error_lines,
                    result.seconds,
                    result.worker,
                )
        if counted:
            self._tasks.discard(done_ids)
            self._activity.counted(counted)
        if refused:  # one line a batch: a batch is up to thousands of results
            result, version = refused[0]
            log.warning(
                "%d result(s) from %s refused: not handed out for the version they name; the "
                "first, task %d attempt %d, for %s (size %d, mtime %d)",
                len(refused),
                result.worker,
                result.task_id,
                result.attempt,
                display_path(version.path),
                version.size,
                version.mtime_ns,
            )

    def _done(self, version: Version, result: Result, added: Added, counted: list[Counted]) -> None:
        """Record a counted version; the first result wins: any later one finds it closed."""
        self._versions.close(version.id)
        on_done = self._config.on_done
        self._ledger.record_result(result, self._wall(), on_done, added)
        # Empty when the worker's counts did not match the rules' counters (_added).
        counts = tuple(zip(self._ledger.rules.names, added.counts, strict=False))
        counted.append(
            (version.size, result.worker, added.lines, added.error_lines, result.seconds, counts)
        )
        if on_done.action is not Action.KEEP:
            device, inode = result.device or None, result.inode or None
            self._to_dispose.append(
                Disposal(version, on_done.action, on_done.archive, device, inode)
            )

    def _issued(self, result: Result, version: Version) -> bool:
        """Whether ``result`` answers a lease this master (or one before it on this ledger)
        handed out for exactly this version: its path, size and mtime are in the signature."""
        expected = self._tasks.sign(
            version.id, result.attempt, version.path, version.size, version.mtime_ns
        )
        return hmac.compare_digest(expected, result.lease)

    def _record(self, result: Result, version: Version | None) -> None:
        """A result that is not a count: a failure, a file gone or changed, or a late one."""
        if version is None:
            # Counted already (a late duplicate), or handed out by a master that stopped before
            # it recorded the version: ids are never given twice, so it cannot land elsewhere.
            log.info(
                "result for task %d attempt %d from %s refused: no open version has that id",
                result.task_id,
                result.attempt,
                result.worker,
            )
            return
        master_sees = stat_under(self._root, version.path)
        if result.status is Status.ERROR or master_sees == (version.size, version.mtime_ns):
            # A failed attempt. A worker that says the file is gone or changed while the
            # master still sees this very version has another view of the share (a missing
            # mount, a stale cache, another timestamp precision): that is a failure too,
            # retried on other hosts first, not a final state.
            lease = self._tasks.lease(version.id)
            if lease is None or (lease.task.attempt, lease.worker) != (
                result.attempt,
                result.worker,
            ):
                log.info(
                    "failure from %s on an attempt that no longer holds %s ignored: %s",
                    result.worker,
                    display_path(version.path),
                    result.error,
                )
                return
            self._tasks.discard([version.id])
            error = result.error or "error"
            if result.status is not Status.ERROR:
                error = f"worker {result.worker} cannot see this version: {error}"
            self._retry_or_fail(version, result.attempt, error, result.worker)
            return
        # Gone or changed, and the master agrees: final for this version.
        status = VersionStatus.VANISHED if master_sees is None else VersionStatus.SUPERSEDED
        self.close(version.id, status, result.error, result.worker)
        self._versions.forget(version.path)
        if master_sees is not None:
            self._look_again(version.path)

    def lease_expired(self, lease: Lease) -> None:
        record = self._versions.get(lease.task.id)
        if record is None:
            return
        version = record.version
        log.warning(
            "lease on %s (attempt %d) held by %s expired or its connection closed",
            display_path(version.path),
            lease.task.attempt,
            lease.worker,
        )
        reason = f"worker {lease.worker} stopped responding or disconnected"
        # The worker is gone, not necessarily because of the file: the next one may start now.
        self._retry_or_fail(version, lease.task.attempt, reason, lease.worker, backoff=False)

    def _retry_or_fail(
        self, version: Version, attempt: int, error: str, worker: str, backoff: bool = True
    ) -> None:
        if attempt >= self._config.max_attempts:
            log.warning(
                "%s failed after %d attempts: %s", display_path(version.path), attempt, error
            )
            self.close(version.id, VersionStatus.FAILED, error, worker, attempts=attempt)
            return
        delay = 0.0
        if backoff:
            delay = min(
                defaults.RETRY_BACKOFF_SECONDS * 2 ** (attempt - 1),
                defaults.RETRY_BACKOFF_CAP_SECONDS,
            )
        log.info(
            "%s attempt %d failed (%s); retrying in %g s",
            display_path(version.path),
            attempt,
            error,
            delay,
        )
        self._ledger.mark_queued(version.id, attempt, error)
        self._versions.failed(version.id, attempt, host_of(worker))
        self._tasks.put(version.id, delay)

    def close(
        self,
        version_id: int,
        status: VersionStatus,
        error: str | None,
        worker: str | None = None,
        attempts: int | None = None,
    ) -> None:
        """Final without counts. Closed in the registry before its lease ends: a take() in
        between finds it gone rather than handing it out again."""
        version = self._versions.close(version_id)
        self._tasks.discard([version_id])
        self._ledger.record_end(version_id, status, error, self._wall(), worker, attempts)
        self._activity.closed(status.value, version.size, version.path, error)


def _rotated_from(path: bytes) -> bytes | None:
    """What the paths a file may have been rotated from start with: its folder and its name up
    to the first "." (``app`` for ``app.log.1``, ``app.log-20261203.gz``); None for a name that
    starts with a "."."""
    folder, slash, name = path.rpartition(b"/")
    stem = name.split(b".")[0]
    return folder + slash + stem if stem else None


def _renamed(counted: CountedVersion, version: Version) -> bool:
    """Whether ``version``, of a file with the inode number of ``counted``'s, is that counted
    file under another name: its size and mtime are the same too."""
    before = counted.version
    return before.path != version.path and (before.size, before.mtime_ns) == (
        version.size,
        version.mtime_ns,
    )


def _added(
    version: Version,
    result: Result,
    base: CountedVersion | None,
    owners: dict[bytes, Owner],
    rules: Rules,
) -> Added:
    """What a done result adds to the totals (docs/counting.md): nothing if its content was
    counted before; what it added to the ``base`` it extends; else all of it. ``owners``: the
    content counted so far, where first and by which named counters, this one's added to it.
    Each named counter on its own: content counted before, but never by this very counter
    (its name and pattern), adds this counter's count."""
    counts = result.counts if len(result.counts) == len(rules.names) else ()
    fingerprint = result.fingerprint
    if fingerprint:
        owner = owners.get(fingerprint)
        counters = frozenset(rules.counters) if counts else frozenset()
        if owner is not None:
            new = tuple(
                0 if counter in owner.counters else count
                for counter, count in zip(rules.counters, counts, strict=False)
            )
            owners[fingerprint] = Owner(owner.path, owner.counters | counters)
            same_as = None if owner.path == version.path else owner.path
            return Added(0, 0, 0, same_as, new)
        owners[fingerprint] = Owner(version.path, counters)
    length = content_length(result)
    if base is None:
        return Added(result.lines, result.error_lines, length, counts=counts)
    base_counts = base.counts_for(rules)
    if base_counts is not None and counts:
        counts = tuple(mine - theirs for mine, theirs in zip(counts, base_counts, strict=True))
    return Added(
        result.lines - base.lines,
        result.error_lines - base.error_lines,
        length - int.from_bytes(base.fingerprint[:8], "big"),
        counts=counts,
    )
