"""The ledger's single writer: the durable record of every file version and what became of it.

One ``Ledger`` is owned by the master loop and holds the state directory's lock; readers open
their own read-only connections (dispatcher.ledger.reader), so summaries work while the master
runs and after it stopped.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from dispatcher.ledger.bulk import (
    DONE_MANY,
    DONE_ONE,
    LEASED_MANY,
    LEASED_ONE,
    DoneRow,
    LeaseRow,
    execute_rows,
    update_rows,
    values_statements,
)
from dispatcher.ledger.errors import ledger_error
from dispatcher.ledger.lock import StateDirLock
from dispatcher.ledger.prune import Pruned, Pruning, steps
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


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _guarded(
    method: Callable[Concatenate[Ledger, _P], _R],
) -> Callable[Concatenate[Ledger, _P], _R]:
    """A Ledger method whose SQLite errors become one LedgerError. After one, the transaction
    is rolled back and every such method raises it again: nothing is written, and nothing
    (a move or delete of a counted file) follows a commit that did not happen."""

    @functools.wraps(method)
    def guarded(self: Ledger, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self._failure is not None:
            raise self._failure
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as e:
            raise self._fail(e) from None

    return guarded


# Version ids reserved by one commit: a restart skips what is left of the block.
ID_BLOCK = 1 << 20


def _signed64(number: int) -> int | None:
    """A device or inode number (unsigned 64 bits) as SQLite's signed INTEGER holds it; 0 (not
    known) as NULL."""
    if not number:
        return None
    return number - (1 << 64) if number >= 1 << 63 else number


def _unsigned64(number: int | None) -> int | None:
    return None if number is None else number & ((1 << 64) - 1)


# The most counted versions a lookup of one file's earlier versions gives.
COUNTED_ROWS = 16


def _past_prefix(prefix: bytes) -> bytes | None:
    """The first byte string after all those that start with ``prefix``; None: there is none."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None


def content_length(result: Result) -> int:
    """The length of the content a done result counted: its fingerprint's first field, else
    what the worker read."""
    if result.fingerprint:
        return int.from_bytes(result.fingerprint[:8], "big")
    return result.bytes_read


# How long close() waits for a reader's read to end before it leaves the ledger in WAL mode,
# how long a starting master waits for them to switch it to WAL, and how long any other
# statement waits for a lock (sqlite3's default).
CLOSE_WAIT_MS = 2000
OPEN_WAIT_MS = 60_000
BUSY_WAIT_MS = 5000


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
                self._release()
                raise ConfigError(newer_ledger(self._path, found))
            if found is None:
                # Set before anything is written, or only a VACUUM sets it: the pages a prune
                # frees go back to the file system a few at a time, while a master writes.
                self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            self._enter_wal()
            # FULL makes each commit durable.
            self._db.execute("PRAGMA synchronous=FULL")
            backup = self._back_up(found) if found is not None and found < LAYOUT else None
            create(self._db)
            if backup is not None:
                log.warning(
                    "ledger %s brought from layout %d to %d; the file as it was is kept as %s",
                    self._path,
                    found,
                    LAYOUT,
                    backup,
                )
            self._check_root(root)
            self.lease_secret = self._lease_secret()
            # Ids are handed to workers before the commit that writes their rows, so the next
            # master must not start from the largest id committed: it starts past every id this
            # one may have handed out, a bound committed before any of them is (add_version).
            (last_id,) = self._db.execute("SELECT coalesce(max(id), 0) FROM versions").fetchone()
            self._next_id = max(int(last_id) + 1, self._meta_int("ids_reserved_to"))
            self._reserve_ids()
        except sqlite3.Error as e:
            self._release()
            raise ledger_error(self._path, e, "open") from None
        self.rules_since = 0  # see count_with
        self.rules = Rules(b"")  # see count_with
        # The counters of each set of rules in the ledger, by its id: (name, pattern) pairs.
        self.counter_sets: dict[int, frozenset[tuple[str, bytes]]] = {}
        self._new_rows: list[tuple[int, bytes, int, int, float]] = []
        self._done_rows: list[DoneRow] = []
        self._disposed_rows: list[tuple[str, str, int]] = []
        # Before count_with, the counters any version may have are not known yet.
        self._sums = Sums(
            self._db, lambda: not self.counter_sets or any(self.counter_sets.values())
        )
        self._db.execute("BEGIN")
        self._committed_changes = self._db.total_changes
        self._pruned_since_commit = False

    def _back_up(self, found: int) -> Path:
        """A copy of the ledger as it is, beside it, before it is brought to this layout: the
        way back to the release that wrote it. Made by SQLite's backup, so a reader or the
        WAL leave it whole."""
        backup = self._path.with_name(f"{self._path.name}.layout-{found}.bak")
        number = 0
        while backup.exists():  # an earlier copy is kept, whatever it holds
            number += 1
            backup = self._path.with_name(f"{self._path.name}.layout-{found}.{number}.bak")
        with contextlib.closing(sqlite3.connect(backup)) as copy:
            self._db.backup(copy)
        return backup

    def _enter_wal(self) -> None:
        """WAL lets summaries read while the master writes.

        A ledger a master left (see _leave_readable) is in rollback-journal mode, and the
        switch waits until no reader is reading it: a long summary delays the start, it does
        not fail it.
        """
        self._db.execute("PRAGMA busy_timeout = 0")
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError as e:
            if not e.sqlite_errorname.startswith("SQLITE_BUSY"):
                raise
            log.info("waiting for the readers of the ledger %s to finish", self._path)
            self._db.execute(f"PRAGMA busy_timeout = {OPEN_WAIT_MS}")
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA busy_timeout = {BUSY_WAIT_MS}")

    def _release(self) -> None:
        """Close the connection and give the state directory up, writing nothing."""
        with contextlib.suppress(AttributeError):
            self._db.close()
        self._lock.release()

    def _fail(self, error: sqlite3.Error) -> LedgerError:
        """Remember a failed write (see _guarded) and undo what the transaction held."""
        self._failure = ledger_error(self._path, error, "write")
        with contextlib.suppress(sqlite3.Error):
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        return self._failure

    def _check_root(self, root: Path) -> None:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'root'").fetchone()
        if row is None:
            self._db.execute("INSERT INTO meta VALUES ('root', ?)", (os.fsdecode(root),))
        elif row[0] != os.fsdecode(root):
            self._release()
            raise ConfigError(
                f"the state directory belongs to root {row[0]}, not {root}: "
                "use another --state for this root"
            )

    def _meta_int(self, key: str) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return 0 if row is None else int(row[0])

    def _reserve_ids(self) -> None:
        """Commit that ids below ``_next_id + ID_BLOCK`` are taken (outside any transaction, or
        by committing the one open)."""
        self._ids_reserved_to = self._next_id + ID_BLOCK
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('ids_reserved_to', ?)", (self._ids_reserved_to,)
        )

    def _lease_secret(self) -> bytes:
        """The key that signs leases, made once per ledger: results and heartbeats are checked
        against it after a restart too."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'lease_secret'").fetchone()
        if row is not None:
            return bytes.fromhex(row[0])
        secret = secrets.token_bytes(32)
        self._db.execute("INSERT INTO meta VALUES ('lease_secret', ?)", (secret.hex(),))
        return secret

    @_guarded
    def commit(self) -> None:
        self._flush()
        self._db.execute("COMMIT")
        self._db.execute("BEGIN")
        self._committed_changes = self._db.total_changes
        self._pruned_since_commit = False

    @property
    def dirty(self) -> bool:
        """Whether anything was written or buffered since the last commit."""
        buffered = self._new_rows or self._done_rows or self._disposed_rows
        changed = self._db.total_changes != self._committed_changes
        return bool(buffered) or changed or self._pruned_since_commit

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
                self._leave_readable()
        except sqlite3.Error as e:
            raise self._fail(e) from None
        finally:
            self._release()

    def _leave_readable(self) -> None:
        """Leave the ledger as one file that anyone with read access can read.

        In WAL mode a reader needs the -shm file beside the ledger, and the last writer to
        close removes it: a reader that cannot create it (another user, a read-only mount)
        could then not read at all. A rollback journal needs nothing beside the ledger; the
        next master switches back to WAL. A reader still reading keeps it in WAL, with its
        -shm file left in place for the next readers.
        """
        self._db.execute(f"PRAGMA busy_timeout = {CLOSE_WAIT_MS}")
        try:
            self._db.execute("PRAGMA journal_mode=DELETE")
        except sqlite3.OperationalError as e:
            # Still readable by anyone who can open or create its -shm file.
            busy = e.sqlite_errorname.startswith("SQLITE_BUSY")
            log.info("the ledger stays in WAL mode: %s", "a reader has it open" if busy else e)

    @_guarded
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

    @_guarded
    def gone_paths(self) -> set[bytes]:
        """The paths whose counted latest version was last noticed gone from the root."""
        rows = self._db.execute(
            "SELECT path FROM versions WHERE replaced = 0 AND gone_at IS NOT NULL"
        )
        return {path for (path,) in rows}

    @_guarded
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

    @_guarded
    def open_versions(self) -> list[OpenVersion]:
        """The versions not final when the master last stopped, oldest first."""
        # A leased row's attempts count the attempt in flight, which was not the file's fault
        # and is not counted against it.
        rows = self._db.execute(
            "SELECT id, path, size, mtime_ns, max(attempts - (status = 'leased'), 0) "
            f"FROM versions WHERE {sql_open()} ORDER BY id"
        )
        return [OpenVersion(Version(i, p, s, m), a) for i, p, s, m, a in rows]

    @_guarded
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

    @_guarded
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

    @_guarded
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
        counts = self._counts_json(result.counts)
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
                device=_signed64(result.device),
                inode=_signed64(result.inode),
                fingerprint=result.fingerprint or None,
                own_lines=added.lines,
                own_error_lines=added.error_lines,
                own_bytes=added.content,
                same_as=added.same_as,
                # Without its counters' counts (a worker too old to count them), it was not
                # counted with these rules, and a recount takes it again.
                rules=self.rules.id if counts is not None or not self.rules.names else None,
                counts=counts,
                own_counts=self._counts_json(added.counts),
                id=result.task_id,
            )
        )

    def _counts_json(self, counts: tuple[int, ...]) -> str | None:
        """Counts of the current rules' counters as the ledger keeps them; None when there are
        none, or they are not one per counter (a worker that does not count them)."""
        names = self.rules.names
        if not names or len(counts) != len(names):
            return None
        return json.dumps(dict(zip(names, counts, strict=True)), separators=(",", ":"))

    @_guarded
    def count_with(self, error_pattern: bytes, counters: Counters = ()) -> Rules:
        """Note the rules versions are counted with from now on, and return them with their
        id. ``rules_since`` is the first version id counted with them: the counts of an
        earlier one are other rules', or not known to be these."""
        rules_id = self._rules_id(error_pattern, counters)
        before = self._db.execute("SELECT value FROM meta WHERE key = 'rules'").fetchone()
        if before is None:
            before = self._rules_before_rules_were_kept()
        same = before is not None and int(before[0]) == rules_id
        if not same:
            self._db.execute(
                "INSERT OR REPLACE INTO meta VALUES ('rules_since', ?)", (self._next_id,)
            )
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('rules', ?)", (rules_id,))
        self._db.execute(
            "INSERT OR REPLACE INTO meta VALUES ('error_pattern', ?)", (error_pattern.hex(),)
        )
        self.rules_since = self._meta_int("rules_since")
        self.rules = Rules(error_pattern, counters, rules_id)
        self.counter_sets = {
            rules: frozenset((name, bytes.fromhex(pattern)) for name, pattern in json.loads(spec))
            for rules, spec in self._db.execute("SELECT id, counters FROM rules")
        }
        return self.rules

    def _rules_id(self, error_pattern: bytes, counters: Counters) -> int:
        spec = json.dumps([[name, pattern.hex()] for name, pattern in counters])
        self._db.execute(
            "INSERT OR IGNORE INTO rules (error_pattern, counters) VALUES (?, ?)",
            (error_pattern, spec),
        )
        (rules_id,) = self._db.execute(
            "SELECT id FROM rules WHERE error_pattern = ? AND counters = ?", (error_pattern, spec)
        ).fetchone()
        return int(rules_id)

    def _rules_before_rules_were_kept(self) -> tuple[int] | None:
        """In a ledger from before the rules were kept, the rules of the versions counted
        since its error pattern was last set (``rules_since``): that pattern and no counters,
        recorded with them. None when it has noted no pattern."""
        pattern = self._db.execute("SELECT value FROM meta WHERE key = 'error_pattern'").fetchone()
        if pattern is None:
            return None
        rules_id = self._rules_id(bytes.fromhex(pattern[0]), ())
        self._db.execute(
            "UPDATE versions SET rules = ? WHERE rules IS NULL AND status = 'done' AND id >= ?",
            (rules_id, self._meta_int("rules_since")),
        )
        return (rules_id,)

    @_guarded
    def to_recount(self, only_missing: bool) -> list[Version]:
        """The latest done version of each path that was counted with other rules than the
        current (``only_missing``: without one of the current counters), and that --on-done
        did not move or delete: the caller sees which are still in the root."""
        rows = self._db.execute(
            "SELECT id, path, size, mtime_ns, rules FROM versions WHERE replaced = 0 "
            "AND status = 'done' AND on_done_state IS NULL AND rules IS NOT ?",
            (self.rules.id,),
        )
        wanted = frozenset(self.rules.counters)
        return [
            Version(version_id, path, size, mtime_ns)
            for version_id, path, size, mtime_ns, rules in rows
            if not only_missing or not wanted <= self.counter_sets.get(rules, frozenset())
        ]

    @_guarded
    def counted_with_other_rules(self) -> int:
        """How many paths' latest versions were counted with other rules than the current."""
        (other,) = self._db.execute(
            "SELECT count(*) FROM versions WHERE replaced = 0 AND status = 'done' "
            "AND rules IS NOT ?",
            (self.rules.id,),
        ).fetchone()
        return int(other)

    @_guarded
    def first_counted(self, fingerprints: Iterable[bytes]) -> dict[bytes, Owner]:
        """For each of ``fingerprints`` counted before: the path it was first counted under,
        and the named counters that have counted it (of every set of rules it was counted
        with)."""
        keys = [(fingerprint,) for fingerprint in fingerprints]
        self._flush_counted()
        owners: dict[bytes, Owner] = {}
        for sql, values in values_statements(
            "WITH w(fingerprint) AS (VALUES {}) SELECT w.fingerprint, (SELECT path FROM versions "
            "WHERE fingerprint = w.fingerprint ORDER BY id LIMIT 1), (SELECT "
            "json_group_array(DISTINCT coalesce(rules, 0)) FROM versions "
            "WHERE fingerprint = w.fingerprint) FROM w",
            1,
            keys,
        ):
            for fingerprint, path, rules in self._db.execute(sql, values):
                if path is not None:
                    sets = (self.counter_sets.get(r, frozenset()) for r in json.loads(rules))
                    owners[fingerprint] = Owner(path, frozenset().union(*sets))
        return owners

    @_guarded
    def counted_by_inode(self, inodes: Iterable[int]) -> dict[int, list[CountedVersion]]:
        """The counted versions whose file had each of these inode numbers, latest first (a
        few each)."""
        keys = {_signed64(inode): inode for inode in inodes}
        found = self._counted_for("v.inode = w.a", [(k, None) for k in keys])
        return {keys[k]: versions for k, versions in found.items()}

    @_guarded
    def counted_by_path(self, paths: Iterable[bytes]) -> dict[bytes, list[CountedVersion]]:
        """The latest counted versions of each of ``paths``, latest first (a few each)."""
        return self._counted_for("v.path = w.a", [(path, None) for path in set(paths)])

    @_guarded
    def counted_by_prefix(self, prefixes: Iterable[bytes]) -> dict[bytes, list[CountedVersion]]:
        """The latest counted versions of the paths that start with each of ``prefixes``,
        whose content was first counted there, latest first (a few each)."""
        # The copies (same_as) are left out: a numbered rotation makes many at each turn, and
        # they would take the place of the versions a new one may extend.
        # A range of the path index rather than LIKE, which SQLite does not index for BLOBs.
        ranges = [(prefix, _past_prefix(prefix)) for prefix in set(prefixes)]
        return self._counted_for(
            "v.path >= w.a AND v.path < w.b AND v.same_as IS NULL",
            [(low, high) for low, high in ranges if high is not None],  # none past b"\xff..."
        )

    def _counted_for(
        self, join: str, keys: list[tuple[object, object]]
    ) -> dict[Any, list[CountedVersion]]:
        """For each key (a, b), the latest COUNTED_ROWS done versions ``v`` that ``join``
        matches with it, latest first: one statement for many keys."""
        self._flush_counted()
        found: dict[Any, list[CountedVersion]] = {}
        for sql, values in values_statements(
            "WITH w(a, b) AS (VALUES {}) SELECT a, id, path, size, mtime_ns, lines, error_lines, "
            "fingerprint, worker, bytes_read, rules, counts FROM (SELECT w.a, v.*, "
            "row_number() OVER (PARTITION BY w.a ORDER BY v.id DESC) AS n "
            f"FROM w JOIN versions v ON {join} "
            # "+": not a term for an index. Given many keys, SQLite would otherwise build an
            # index on status for the statement rather than search the keys' own.
            f"AND +v.status = 'done') WHERE n <= {COUNTED_ROWS} ORDER BY id DESC",
            2,
            keys,
        ):
            for row in self._db.execute(sql, values):
                key, i, p, s, m, lines, errors, fp, worker, read, rules, counts = row
                named = tuple(json.loads(counts).items()) if counts else ()
                counted = CountedVersion(
                    Version(i, p, s, m),
                    lines,
                    errors,
                    fp or b"",
                    worker,
                    read or 0,
                    rules or 0,
                    named,
                )
                found.setdefault(key, []).append(counted)
        return found

    def _flush_counted(self) -> None:
        """Write the results buffered, for a lookup of counted versions: the new versions
        buffered alone are none of them, and stay buffered to be written in bulk."""
        if self._done_rows:
            self._flush()

    def record_disposals(self, outcomes: Iterable[Outcome]) -> None:
        """What became of counted files (moved, deleted...); buffered like results."""
        self._disposed_rows.extend((state.value, note, i) for i, state, note in outcomes)

    @_guarded
    def unfinished_disposals(self) -> list[Disposal]:
        """Moves and deletions pending, or failed, when the master last stopped."""
        # No index: this runs once, at start-up, and an index would cost every result a write.
        rows = self._db.execute(
            "SELECT id, path, size, mtime_ns, on_done, on_done_dir, device, inode FROM versions "
            "WHERE on_done_state IN ('pending', 'failed') ORDER BY id"
        )
        return [
            Disposal(Version(i, p, s, m), Action(a), d, _unsigned64(dev), _unsigned64(ino))
            for i, p, s, m, a, d, dev, ino in rows
        ]

    def pruning(self, cutoff: float) -> Pruning:
        """A prune of what was finished before ``cutoff`` (dispatcher.ledger.prune), in this
        writer's transactions: ``prune_step`` takes it a step further."""
        done = Pruned()
        return Pruning(steps(self._db, cutoff, done), done)

    @_guarded
    def prune_step(self, pruning: Pruning) -> bool:
        """One step of ``pruning``; False once it is over."""
        self._flush()
        wrote = next(pruning.steps, None)
        # What it wrote may have changed no row (a vacuum step): it holds the write lock all
        # the same, which the next commit must release.
        self._pruned_since_commit |= bool(wrote)
        return wrote is not None

    @_guarded
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
