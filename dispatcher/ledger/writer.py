"""The ledger's single writer: the durable record of every file version and what became of it.

One ``Ledger`` is owned by the master loop and holds the state directory's lock; readers open
their own read-only connections (dispatcher.ledger.reader), so summaries work while the master
runs and after it stopped. What it looks up rather than writes is in dispatcher.ledger.lookups,
how it takes the file up and leaves it in dispatcher.ledger.opening.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path

from dispatcher.ledger import lookups, opening
from dispatcher.ledger.bulk import (
    DONE_MANY,
    DONE_ONE,
    LEASED_MANY,
    LEASED_ONE,
    DoneRow,
    LeaseRow,
    content_length,
    counts_json,
    execute_rows,
    update_rows,
)
from dispatcher.ledger.errors import guarded, ledger_error
from dispatcher.ledger.lock import StateDirLock
from dispatcher.ledger.lookups import CounterSets, meta_int, signed64, unsigned64
from dispatcher.ledger.prune import Pruning
from dispatcher.ledger.schema import LAYOUT, create, layout, ledger_path, newer_ledger
from dispatcher.ledger.sums import Sums
from dispatcher.versions import (
    KEEP,
    Action,
    Added,
    CountedVersion,
    Disposal,
    DisposalState,
    OnDone,
    OpenVersion,
    Outcome,
    Owner,
    Rules,
    Version,
    VersionStatus,
    sql_open,
)
from workers.errors import ConfigError, LedgerError
from workers.matching import Counters
from workers.protocol import Result

log = logging.getLogger(f"logdispatch.{__name__}")


# Version ids reserved by one commit: a restart skips what is left of the block.
ID_BLOCK = 1 << 20


class Ledger:
    """Writer side; every method runs on the master loop's thread."""

    def __init__(self, state_dir: Path, root: Path) -> None:
        self._path = ledger_path(state_dir)
        self._failure: LedgerError | None = None
        self._lock = StateDirLock(state_dir)
        try:
            self._db = sqlite3.connect(self._path, isolation_level=None)
            found = layout(self._db)
            if found is not None and found > LAYOUT:  # refused before anything is written
                raise ConfigError(newer_ledger(self._path, found))
            if found is None:
                # Set before anything is written, or only a VACUUM sets it: the pages a prune
                # frees go back to the file system a few at a time, while a master writes.
                self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            opening.enter_wal(self._db, self._path)
            # FULL makes each commit durable.
            self._db.execute("PRAGMA synchronous=FULL")
            backup = None
            if found is not None and found < LAYOUT:
                backup = opening.back_up(self._db, self._path, found)
            create(self._db)
            if backup is not None:
                log.warning(
                    "ledger %s brought from layout %d to %d; the file as it was is kept as %s",
                    self._path,
                    found,
                    LAYOUT,
                    backup,
                )
            opening.check_root(self._db, root)
            self.lease_secret = opening.lease_secret(self._db)
            # Ids are handed to workers before the commit that writes their rows, so the next
            # master must not start from the largest id committed: it starts past every id this
            # one may have handed out, a bound committed before any of them is (add_version).
            (last_id,) = self._db.execute("SELECT coalesce(max(id), 0) FROM versions").fetchone()
            self._next_id = max(int(last_id) + 1, meta_int(self._db, "ids_reserved_to"))
            self._reserve_ids()
        except ConfigError:  # a ledger this master must not write: left as it is
            self._release()
            raise
        except sqlite3.Error as e:
            self._release()
            raise ledger_error(self._path, e, "open") from None
        self.rules_since = 0  # see count_with
        self.rules = Rules(b"")  # see count_with
        # The counters of each set of rules in the ledger, by its id: (name, pattern) pairs.
        self.counter_sets: CounterSets = {}
        self._new_rows: list[tuple[int, bytes, int, int, float]] = []
        self._done_rows: list[DoneRow] = []
        self._disposed_rows: list[tuple[str, str, int]] = []
        # Before count_with, the counters any version may have are not known yet.
        self._sums = Sums(
            self._db, lambda: not self.counter_sets or any(self.counter_sets.values())
        )
        self._db.execute("BEGIN")
        self._committed_changes = self._db.total_changes

    def _release(self) -> None:
        """Close the connection and give the state directory up, writing nothing."""
        with contextlib.suppress(AttributeError):
            self._db.close()
        self._lock.release()

    def _fail(self, error: sqlite3.Error) -> LedgerError:
        """Remember a failed write (see guarded) and undo what the transaction held."""
        self._failure = ledger_error(self._path, error, "write")
        with contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        return self._failure

    def _reserve_ids(self) -> None:
        """Commit that ids below ``_next_id + ID_BLOCK`` are taken (outside any transaction, or
        by committing the one open)."""
        self._ids_reserved_to = self._next_id + ID_BLOCK
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('ids_reserved_to', ?)", (self._ids_reserved_to,)
        )

    @guarded
    def commit(self) -> None:
        self._flush()
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")
        self._committed_changes = self._db.total_changes

    @property
    def dirty(self) -> bool:
        """Whether anything was written or buffered since the last commit."""
        buffered = self._new_rows or self._done_rows or self._disposed_rows
        return bool(buffered) or self._db.total_changes != self._committed_changes

    def _flush(self) -> None:
        """Write the buffered new versions and results, before any other write (order kept)."""
        if self._new_rows:
            rows = self._new_rows
            # Summaries read the latest versions with WHERE replaced = 0, not a GROUP BY over
            # every version, which is slow on a big ledger. Every row written before is older than
            # these; among these, the last of each path is the latest.
            latest = {row[1]: row[0] for row in rows}
            # Most new versions are of new paths: nothing to replace, nothing more to write.
            replaced = self._sums.latest(list(latest))
            if replaced:
                with self._sums.changing(replaced):
                    execute_rows(
                        self._db,
                        "UPDATE versions SET replaced = 1 WHERE id IN (VALUES {})",
                        1,
                        [(version,) for version in replaced],
                    )
            self._sums.add_queued(latest)
            execute_rows(
                self._db,
                "INSERT INTO versions (id, path, size, mtime_ns, seen_at, replaced, status) "
                "SELECT *, 'queued' FROM (VALUES {})",
                6,
                [(*row, latest[row[1]] != row[0]) for row in rows],
            )
            self._new_rows = []
        if self._done_rows:
            with self._sums.changing(row.id for row in self._done_rows):
                update_rows(self._db, DONE_ONE, DONE_MANY, self._done_rows)
            self._done_rows = []
        if self._disposed_rows:
            self._db.executemany(
                "UPDATE versions SET on_done_state = ?, on_done_note = ? WHERE id = ?",
                self._disposed_rows,
            )
            self._disposed_rows = []

    def close(self) -> None:
        """Commit what is buffered and give the ledger up; after a failed write, only the
        latter."""
        try:
            if self._failure is None:
                self._flush()
                if self._db.in_transaction:
                    self._db.execute("COMMIT")
                opening.leave_readable(self._db)
        except sqlite3.Error as e:
            raise self._fail(e) from None
        finally:
            self._release()

    @guarded
    def known_versions(self) -> dict[bytes, tuple[int, int]]:
        """Size and mtime of the latest live version of every path still in the root."""
        # A version that --on-done moved or deleted has left the root: a file found at its path
        # later is a new one. Leaving these out keeps start-up and the master's memory in step
        # with what ROOT holds, not with every file ever counted. Pending and failed disposals
        # are still in ROOT (and finished at start-up), skipped ones were changed or removed by
        # someone else: they stay known, as kept files do, or they would be counted again. Only
        # the latest live version is tested: an older one must not stand in for it.
        # The running master forgets nothing when a disposal is done: a scan that stat'ed the
        # file just before it went would then make it a new version, found vanished.
        rows = self._db.execute(
            "SELECT path, size, mtime_ns FROM versions WHERE id IN "
            "(SELECT max(id) FROM versions WHERE status NOT IN ('vanished', 'superseded') "
            " GROUP BY path) AND on_done_state IS NOT 'done'"
        )
        return {path: (size, mtime_ns) for path, size, mtime_ns in rows}

    @guarded
    def gone_paths(self) -> set[bytes]:
        """The paths whose counted latest version was last noticed gone from the root."""
        rows = self._db.execute(
            "SELECT path FROM versions WHERE replaced = 0 AND gone_at IS NOT NULL"
        )
        return {path for (path,) in rows}

    @guarded
    def record_gone(self, path: bytes, when: float | None) -> bool:
        """Mark the latest version of ``path`` gone from the root since ``when``, or there again
        (None); whether it was a counted version kept after counting (--on-done moves and
        deletes are the master's own, and say so themselves)."""
        self._flush()
        with self._sums.changing(self._sums.latest([path])):
            changed = self._db.execute(
                "UPDATE versions SET gone_at = ? WHERE path = ? AND replaced = 0 AND "
                "status = 'done' AND on_done IS NULL",
                (when, path),
            )
        return changed.rowcount > 0

    @guarded
    def open_versions(self) -> list[OpenVersion]:
        """The versions not final when the master last stopped, oldest first."""
        # A leased row's attempts count the attempt in flight, which was not the file's fault
        # and is not counted against it.
        rows = self._db.execute(
            "SELECT id, path, size, mtime_ns, max(attempts - (status = 'leased'), 0) "
            f"FROM versions WHERE {sql_open()} ORDER BY id"
        )
        return [OpenVersion(Version(i, p, s, m), a) for i, p, s, m, a in rows]

    @guarded
    def add_version(self, path: bytes, size: int, mtime_ns: int, seen_at: float) -> int:
        """A new queued version; its id is given here (the only writer), its row buffered.

        Its id is never given again, even if the master dies before the row is committed.
        """
        if self._next_id >= self._ids_reserved_to:
            self._reserve_ids()
            self.commit()
        version_id = self._next_id
        self._next_id += 1
        self._new_rows.append((version_id, path, size, mtime_ns, seen_at))
        return version_id

    @guarded
    def mark_leased(self, leases: Iterable[tuple[int, int, str]]) -> None:
        """Record (version id, attempt, worker) for tasks handed out; only forward, see
        LEASED_ONE."""
        self._flush()
        latest: dict[int, tuple[int, str]] = {}
        for version_id, attempt, worker in leases:  # of two attempts, the later is the lease
            if attempt > latest.get(version_id, (0, ""))[0]:
                latest[version_id] = (attempt, worker)
        if latest:
            rows = [LeaseRow(a, w, i) for i, (a, w) in latest.items()]
            update_rows(self._db, LEASED_ONE, LEASED_MANY, rows)

    @guarded
    def mark_queued(self, version_id: int, attempts: int, error: str | None) -> None:
        """Back in the queue after a failed or expired attempt."""
        self._flush()
        with self._sums.changing([version_id]):
            self._db.execute(
                "UPDATE versions SET status = 'queued', attempts = ?, error = ? WHERE id = ?",
                (attempts, error, version_id),
            )

    def record_result(
        self,
        result: Result,
        finished_at: float,
        on_done: OnDone = KEEP,
        added: Added | None = None,
    ) -> None:
        """Counts of a done version, and what they ``added`` to the totals (None: all of them);
        buffered, like new versions, to be written in bulk.

        A move or delete is recorded as pending with them, in the same transaction: once they
        are committed, the action happens even if the master stops before it (see ondone.py).
        """
        pending = on_done.action is not Action.KEEP
        counts = counts_json(self.rules.names, result.counts)
        if added is None:
            added = Added(result.lines, result.error_lines, content_length(result))
        self._done_rows.append(
            DoneRow(
                attempts=result.attempt,
                worker=result.worker,
                lines=result.lines,
                error_lines=result.error_lines,
                bytes_read=result.bytes_read,
                long_lines=result.long_lines,
                seconds=result.seconds,
                samples=b"\n".join(result.samples),
                finished_at=finished_at,
                on_done=on_done.action.value if pending else None,
                on_done_dir=on_done.archive,
                on_done_state=DisposalState.PENDING.value if pending else None,
                device=signed64(result.device),
                inode=signed64(result.inode),
                fingerprint=result.fingerprint or None,
                own_lines=added.lines,
                own_error_lines=added.error_lines,
                own_bytes=added.content,
                same_as=added.same_as,
                # Without its counters' counts (a worker too old to count them), it was not
                # counted with these rules, and a recount takes it again.
                rules=self.rules.id if counts is not None or not self.rules.names else None,
                counts=counts,
                own_counts=counts_json(self.rules.names, added.counts),
                id=result.task_id,
            )
        )

    @guarded
    def count_with(self, error_pattern: bytes, counters: Counters = ()) -> Rules:
        """Note the rules versions are counted with from now on, and return them with their
        id. ``rules_since`` is the first version id counted with them: the counts of an
        earlier one are other rules', or not known to be these."""
        self.rules, self.rules_since = lookups.note_rules(
            self._db, error_pattern, counters, self._next_id
        )
        self.counter_sets = lookups.counter_sets(self._db)
        return self.rules

    @guarded
    def to_recount(self, only_missing: bool) -> list[Version]:
        """The latest done version of each path that was counted with other rules than the
        current (``only_missing``: without one of the current counters), and that --on-done
        did not move or delete: the caller sees which are still in the root."""
        return lookups.to_recount(self._db, self.rules, self.counter_sets, only_missing)

    @guarded
    def counted_with_other_rules(self) -> int:
        """How many paths' latest versions were counted with other rules than the current."""
        return lookups.counted_with_other_rules(self._db, self.rules.id)

    @guarded
    def first_counted(self, fingerprints: Iterable[bytes]) -> dict[bytes, Owner]:
        """For each of ``fingerprints`` counted before: the path it was first counted under,
        and the named counters that have counted it (lookups.first_counted)."""
        self._flush_counted()
        return lookups.first_counted(self._db, fingerprints, self.counter_sets)

    @guarded
    def counted_by_inode(self, inodes: Iterable[int]) -> dict[int, list[CountedVersion]]:
        """The counted versions whose file had each of these inode numbers, latest first (a
        few each)."""
        self._flush_counted()
        return lookups.counted_by_inode(self._db, inodes)

    @guarded
    def counted_by_path(self, paths: Iterable[bytes]) -> dict[bytes, list[CountedVersion]]:
        """The latest counted versions of each of ``paths``, latest first (a few each)."""
        self._flush_counted()
        return lookups.counted_by_path(self._db, paths)

    @guarded
    def counted_by_prefix(self, prefixes: Iterable[bytes]) -> dict[bytes, list[CountedVersion]]:
        """The latest counted versions of the paths that start with each of ``prefixes``,
        whose content was first counted there, latest first (a few each)."""
        self._flush_counted()
        return lookups.counted_by_prefix(self._db, prefixes)

    def _flush_counted(self) -> None:
        """Write the results buffered, for a lookup of counted versions: the new versions
        buffered alone are none of them, and stay buffered to be written in bulk."""
        if self._done_rows:
            self._flush()

    def record_disposals(self, outcomes: Iterable[Outcome]) -> None:
        """What became of counted files (moved, deleted...); buffered like results."""
        self._disposed_rows.extend((state.value, note, i) for i, state, note in outcomes)

    @guarded
    def unfinished_disposals(self) -> list[Disposal]:
        """Moves and deletions pending, or failed, when the master last stopped."""
        # No index: this runs once, at start-up, and an index would cost every result a write.
        rows = self._db.execute(
            "SELECT id, path, size, mtime_ns, on_done, on_done_dir, device, inode FROM versions "
            "WHERE on_done_state IN ('pending', 'failed') ORDER BY id"
        )
        return [
            Disposal(Version(i, p, s, m), Action(a), d, unsigned64(dev), unsigned64(ino))
            for i, p, s, m, a, d, dev, ino in rows
        ]

    def pruning(self, cutoff: float) -> Pruning:
        """A prune of what was finished before ``cutoff``, in this writer's transactions:
        ``prune_step`` takes it a step further."""
        return Pruning.of(self._db, cutoff)

    @guarded
    def prune_step(self, pruning: Pruning) -> bool:
        """One step of ``pruning``; False once it is over."""
        self._flush()
        wrote = next(pruning.steps, None)
        if wrote:
            # Perhaps no row (a vacuum step), but the write lock is held all the same: the
            # next commit must come, and release it.
            self._committed_changes = -1
        return wrote is not None

    @guarded
    def record_end(
        self,
        version_id: int,
        status: VersionStatus,
        error: str | None,
        finished_at: float,
        worker: str | None = None,
        attempts: int | None = None,
    ) -> None:
        """Close a version without counts: failed, vanished or superseded."""
        self._flush()
        with self._sums.changing([version_id]):
            self._db.execute(
                "UPDATE versions SET status = ?, error = ?, finished_at = ?, "
                "worker = coalesce(?, worker), attempts = coalesce(?, attempts) WHERE id = ?",
                (status.value, error, finished_at, worker, attempts, version_id),
            )
