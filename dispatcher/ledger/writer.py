"""The durable record of every file version and what became of it (SQLite in --state).

One ``Ledger`` is owned by the master loop and is the only writer; ``read_latest`` opens its own
read-only connection, so summaries work while the master runs and after it stopped.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Concatenate, NamedTuple, ParamSpec, TypeVar

from dispatcher import defaults
from dispatcher.versions import (
    KEEP,
    Action,
    Disposal,
    DisposalState,
    OnDone,
    OpenVersion,
    Outcome,
    Version,
    VersionStatus,
    sql_open,
)
from workers.errors import ConfigError, LedgerBusy, LedgerError
from workers.protocol import Result

log = logging.getLogger(f"logdispatch.{__name__}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS versions (
    id INTEGER PRIMARY KEY,
    path BLOB NOT NULL,           -- relative to the root, exact bytes of the name
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    lines INTEGER,
    error_lines INTEGER,
    bytes_read INTEGER,
    long_lines INTEGER,
    seconds REAL,
    error TEXT,
    samples BLOB,                 -- sample error lines joined by newlines
    seen_at REAL NOT NULL,        -- wall clock, seconds
    finished_at REAL,
    replaced INTEGER NOT NULL DEFAULT 0,  -- 1 once a newer version of the path exists
    on_done TEXT,                 -- move or delete, recorded with the counts; NULL: keep
    on_done_dir BLOB,             -- the archive folder of a move
    on_done_state TEXT,           -- pending, done, failed or skipped (dispatcher/master/ondone.py)
    on_done_note TEXT,            -- what became of the file: "deleted" or "moved to ..."
    -- The st_dev and st_ino of the file counted as its worker found them: --on-done acts on
    -- that inode only (dispatcher/master/ondone.py). NULL: not known. The comments from here up to
    -- on_done_note hold no comma: DROP COLUMN (tests use it) cuts back to the last it finds.
    device INTEGER,
    inode INTEGER
);
CREATE INDEX IF NOT EXISTS versions_path ON versions (path, id);
-- Every status change paid for this index; the one query it served runs once, at start-up.
DROP INDEX IF EXISTS versions_open;
"""


# What sqlite3 errors mean for the operator, and whether a restart may help.
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_TRANSIENT = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_NOMEM")


def ledger_error(path: Path, error: sqlite3.Error, doing: str = "read") -> LedgerError:
    """One line for the operator: which ledger, what is wrong with it, what to do.

    ``doing`` is "read" (a summary), "open" (the master starting) or "write" (the master
    recording).
    """
    name = getattr(error, "sqlite_errorname", "")
    code = 1 if name.startswith(_TRANSIENT) else 2
    if name.startswith(_DAMAGED):
        return LedgerError(
            f"the ledger {path} is damaged ({error}): restore it from a copy, or move it and "
            "its -wal file aside to start a new ledger (everything is then counted again)"
        )
    if "no such table" in str(error) or "no such column" in str(error):
        return LedgerError(f"{path} is not a logdispatch ledger ({error})")
    if doing == "read":
        if name.startswith("SQLITE_CANTOPEN"):
            return LedgerError(f"cannot open the ledger {path}: {_cannot_open(path)}")
        if name.startswith("SQLITE_READONLY") and _in_wal_mode(path):
            return LedgerError(
                f"cannot read the ledger {path} ({error}): it was left in WAL mode and its "
                "-shm file cannot be created here; read it as its owner, or stop its master "
                "cleanly once (that leaves it readable with read access alone)"
            )
        if name.startswith("SQLITE_READONLY"):
            return LedgerError(
                f"cannot read the ledger {path} ({error}): a transaction its master left "
                "unfinished must be rolled back first; its next start does that"
            )
        return LedgerError(f"cannot read the ledger {path}: {error}", code)
    if doing == "open":
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return LedgerError(
                f"the ledger {path} is locked by another process ({error}): a reader that "
                "holds it long, or a master of another host or version",
                code,
            )
        return LedgerError(f"cannot open the ledger {path}: {error}", code)
    what = "the disk is full" if name.startswith("SQLITE_FULL") else str(error)
    return LedgerError(
        f"cannot write the ledger {path}: {what}; what was committed before is kept, and "
        "files not yet recorded are counted again at the next start",
        code,
    )


def _in_wal_mode(path: Path) -> bool:
    """Whether the ledger's header says WAL (its read and write versions, bytes 18 and 19)."""
    try:
        with open(path, "rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return header[18:20] == b"\x02\x02"


def _cannot_open(path: Path) -> str:
    """Why SQLite could not open ``path``, as the file system says."""
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return e.strerror or str(e)
    return "unable to open database file"


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


class FileRow(NamedTuple):
    """The latest version of one path, as summaries show it (a tuple: a million load fast)."""

    path: bytes
    status: str
    size: int
    lines: int | None
    error_lines: int | None
    bytes_read: int | None
    worker: str | None
    attempts: int
    error: str | None
    finished_at: float | None
    on_done: str | None = None  # what became of the file after it was counted


# The sqlite3 module lets other threads run during each step of a statement. One statement per
# row (executemany) made the master loop wait for the GIL once a row while the server threads
# ran, so a big flush held the loop up for long. Rows are written many per statement.
ROWS_PER_STATEMENT = 500
# Host parameters a statement may hold: 999 before SQLite 3.32.
_MAX_PARAMETERS = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
# UPDATE ... FROM (SQLite 3.33): many rows' updates in one statement; before it, one per row.
_UPDATE_FROM = sqlite3.sqlite_version_info >= (3, 33, 0)

# Version ids reserved by one commit: a restart skips what is left of the block.
ID_BLOCK = 1 << 20

_DONE_ONE = (
    "UPDATE versions SET status = 'done', attempts = max(attempts, ?), worker = ?, lines = ?, "
    "error_lines = ?, bytes_read = ?, long_lines = ?, seconds = ?, error = NULL, samples = ?, "
    "finished_at = ?, on_done = ?, on_done_dir = ?, on_done_state = ?, device = ?, inode = ? "
    "WHERE id = ?"
)
_DONE_MANY = (
    "UPDATE versions SET status = 'done', attempts = max(versions.attempts, d.column1), "
    "worker = d.column2, lines = d.column3, error_lines = d.column4, bytes_read = d.column5, "
    "long_lines = d.column6, seconds = d.column7, error = NULL, samples = d.column8, "
    "finished_at = d.column9, on_done = d.column10, on_done_dir = d.column11, "
    "on_done_state = d.column12, device = d.column13, inode = d.column14 "
    "FROM (VALUES {}) AS d WHERE versions.id = d.column15"
)
# Only forward: a result (say a quick failure) may have been recorded for that very attempt
# before its lease is, and must not be overwritten by it.
_LEASED_ONE = (
    "UPDATE versions SET status = 'leased', attempts = ?, worker = ? WHERE id = ? AND "
    "(status = 'leased' OR (status = 'queued' AND attempts < ?))"
)
_LEASED_MANY = (
    "UPDATE versions SET status = 'leased', attempts = l.column1, worker = l.column2 "
    "FROM (VALUES {}) AS l WHERE versions.id = l.column3 AND (versions.status = 'leased' OR "
    "(versions.status = 'queued' AND versions.attempts < l.column4))"
)


def _execute_rows(
    db: sqlite3.Connection, sql: str, width: int, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Run ``sql``, whose ``{}`` is a VALUES list, for all ``rows`` (``width`` values each) in
    as few statements as the parameter limit allows."""
    group = "(" + ", ".join("?" * width) + ")"
    per = max(1, min(ROWS_PER_STATEMENT, _MAX_PARAMETERS // width))
    for start in range(0, len(rows), per):
        part = rows[start : start + per]
        db.execute(sql.format(", ".join([group] * len(part))), [v for row in part for v in row])


def _update_rows(
    db: sqlite3.Connection, one: str, many: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Update versions by the same values in ``one`` (a statement per row) or ``many`` (an
    UPDATE ... FROM a VALUES list of the rows, where SQLite has it)."""
    if _UPDATE_FROM:
        _execute_rows(db, many, len(rows[0]), rows)
    else:
        db.executemany(one, rows)


def _signed64(number: int) -> int | None:
    """A device or inode number (unsigned 64 bits) as SQLite's signed INTEGER holds it; 0 (not
    known) as NULL."""
    if not number:
        return None
    return number - (1 << 64) if number >= 1 << 63 else number


def _unsigned64(number: int | None) -> int | None:
    return None if number is None else number & ((1 << 64) - 1)


# How long close() waits for a reader's read to end before it leaves the ledger in WAL mode,
# how long a starting master waits for them to switch it to WAL, and how long any other
# statement waits for a lock (sqlite3's default).
CLOSE_WAIT_MS = 2000
OPEN_WAIT_MS = 60_000
BUSY_WAIT_MS = 5000


def ledger_path(state_dir: Path) -> Path:
    return state_dir / defaults.LEDGER_FILE


class Ledger:
    """Writer side; every method runs on the master loop's thread."""

    def __init__(self, state_dir: Path, root: Path) -> None:
        self._path = ledger_path(state_dir)
        self._failure: LedgerError | None = None
        self._lock_state_dir(state_dir)
        try:
            self._db = sqlite3.connect(self._path, isolation_level=None)
            self._enter_wal()
            # FULL makes each commit durable.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            self._migrate()
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
        self._new_rows: list[tuple[int, bytes, int, int, float]] = []
        self._done_rows: list[tuple[object, ...]] = []
        self._disposed_rows: list[tuple[str, str, int]] = []
        self._db.execute("BEGIN")
        self._committed_changes = self._db.total_changes

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

    def _lock_state_dir(self, state_dir: Path) -> None:
        """Take the state directory for this master, or raise LedgerBusy.

        The lock file alone can be deleted under a running master, and a second master would
        then take a new one; the directory itself cannot go while the ledger is in it. The lock
        file stays for masters of earlier versions.
        """
        self._dir_fd: int | None = None
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            self._lock = open(state_dir / defaults.LOCK_FILE, "a+b")  # noqa: SIM115 - held until close
            self._dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            with contextlib.suppress(AttributeError):
                self._lock.close()
            raise ConfigError(
                f"cannot use {state_dir} as the state directory: {e.strerror}"
            ) from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                fcntl.flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    # Some network file systems lock no directory: the lock file still holds.
                    log.debug("cannot lock the folder %s: %s", state_dir, e.strerror)
                    os.close(self._dir_fd)
                    self._dir_fd = None
                else:
                    raise
        except BlockingIOError:
            self._release_locks()
            raise LedgerBusy(f"another master is using the state directory {state_dir}") from None

    def _release_locks(self) -> None:
        self._lock.close()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _release(self) -> None:
        """Close the connection and give the state directory up, writing nothing."""
        with contextlib.suppress(AttributeError):
            self._db.close()
        self._release_locks()

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

    def _migrate(self) -> None:
        """Bring a ledger written by an earlier version up to SCHEMA."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(versions)")}
        if "replaced" not in columns:
            self._db.execute("ALTER TABLE versions ADD COLUMN replaced INTEGER NOT NULL DEFAULT 0")
            self._db.execute(
                "UPDATE versions SET replaced = 1 WHERE id NOT IN "
                "(SELECT max(id) FROM versions GROUP BY path)"
            )
        if "on_done" not in columns:
            for column in ("on_done", "on_done_dir", "on_done_state", "on_done_note"):
                kind = "BLOB" if column == "on_done_dir" else "TEXT"
                self._db.execute(f"ALTER TABLE versions ADD COLUMN {column} {kind}")
        if "inode" not in columns:
            for column in ("device", "inode"):
                self._db.execute(f"ALTER TABLE versions ADD COLUMN {column} INTEGER")

    @_guarded
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
            _execute_rows(
                self._db,
                "UPDATE versions SET replaced = 1 WHERE replaced = 0 AND path IN (VALUES {})",
                1,
                [(path,) for path in latest],
            )
            _execute_rows(
                self._db,
                "INSERT INTO versions (id, path, size, mtime_ns, seen_at, replaced, status) "
                "SELECT *, 'queued' FROM (VALUES {})",
                6,
                [(*row, latest[row[1]] != row[0]) for row in rows],
            )
            self._new_rows = []
        if self._done_rows:
            _update_rows(self._db, _DONE_ONE, _DONE_MANY, self._done_rows)
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
        _LEASED_ONE."""
        self._flush()
        latest: dict[int, tuple[int, str]] = {}
        for version_id, attempt, worker in leases:  # of two attempts, the later is the lease
            if attempt > latest.get(version_id, (0, ""))[0]:
                latest[version_id] = (attempt, worker)
        if latest:
            rows = [(a, w, vid, a) for vid, (a, w) in latest.items()]
            _update_rows(self._db, _LEASED_ONE, _LEASED_MANY, rows)

    @_guarded
    def mark_queued(self, version_id: int, attempts: int, error: str | None) -> None:
        """Back in the queue after a failed or expired attempt."""
        self._flush()
        self._db.execute(
            "UPDATE versions SET status = 'queued', attempts = ?, error = ? WHERE id = ?",
            (attempts, error, version_id),
        )

    def record_result(self, result: Result, finished_at: float, on_done: OnDone = KEEP) -> None:
        """Counts of a done version; buffered, like new versions, to be written in bulk.

        A move or delete is recorded as pending with them, in the same transaction: once they
        are committed, the action happens even if the master stops before it (see ondone.py).
        """
        pending = on_done.action is not Action.KEEP
        self._done_rows.append(
            (
                result.attempt,
                result.worker,
                result.lines,
                result.error_lines,
                result.bytes_read,
                result.long_lines,
                result.seconds,
                b"\n".join(result.samples),
                finished_at,
                on_done.action.value if pending else None,
                on_done.archive,
                DisposalState.PENDING.value if pending else None,
                _signed64(result.device),
                _signed64(result.inode),
                result.task_id,
            )
        )

    def record_disposals(self, outcomes: Iterable[Outcome]) -> None:
        """What became of counted files (moved, deleted...); buffered like results."""
        self._disposed_rows.extend((state.value, note, vid) for vid, state, note in outcomes)

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
        self._db.execute(
            "UPDATE versions SET status = ?, error = ?, finished_at = ?, "
            "worker = coalesce(?, worker), attempts = coalesce(?, attempts) WHERE id = ?",
            (status.value, error, finished_at, worker, attempts, version_id),
        )


FILE_COLUMNS = (
    "path, status, size, lines, error_lines, bytes_read, worker, attempts, error, finished_at, "
    "on_done_text"
)
# The latest version of every path (superseded versions are always replaced).
_LATEST = "SELECT *, {on_done} AS on_done_text FROM versions WHERE replaced = 0"
# The same for a ledger no master of this version has opened yet (read-only: no migration).
_LATEST_BEFORE_REPLACED = (
    "SELECT *, {on_done} AS on_done_text FROM versions WHERE id IN "
    "(SELECT max(id) FROM versions WHERE status != 'superseded' GROUP BY path)"
)
# What became of a file after it was counted, for summaries (NULL in ledgers from before).
_ON_DONE_TEXT = (
    "CASE on_done_state WHEN 'pending' THEN 'pending: ' || on_done ELSE on_done_note END"
)
# Failed, vanished and pending files first, then the most error lines.
ATTENTION_ORDER = "status = 'done', coalesce(error_lines, 0) DESC, path"
# Error lines per line, of a file or of a group (with its lines and error_lines columns).
ERROR_RATE = "(CASE WHEN lines > 0 THEN error_lines * 1.0 / lines ELSE 0.0 END)"
# What --sort sorts by, most first.
SORT_KEYS = {
    "lines": "coalesce(lines, 0)",
    "errors": "coalesce(error_lines, 0)",
    "rate": ERROR_RATE,
}

Select = Callable[[sqlite3.Connection, dict[str, int]], Iterable[tuple[Any, ...]]]


def read_summary(
    state_dir: Path, limit: int | None = None, sort: str | None = None, top: int | None = None
) -> tuple[dict[str, int], Iterator[FileRow]]:
    """Totals and the latest version of every path, by path, from one snapshot of the ledger.

    With ``sort`` (a SORT_KEYS key) the files with the most of it come first, ties by path;
    with ``top`` only the first ``top``. With ``limit``, and more files than that, only
    ``limit`` of them: the first by ``sort``, else those that most need attention.
    """
    totals, rows = read_latest(state_dir, select_files(limit, sort, top))
    return totals, map(FileRow._make, rows)


def select_files(
    limit: int | None = None, sort: str | None = None, top: int | None = None
) -> Select:
    """read_summary's query, for a reader of several views in one snapshot."""

    def select(db: sqlite3.Connection, totals: dict[str, int]) -> sqlite3.Cursor:
        order = f"{SORT_KEYS[sort]} DESC, path" if sort else "path"
        cut = top
        if limit is not None and totals["files"] > limit:
            if not sort:
                order = ATTENTION_ORDER
            cut = limit if top is None else min(top, limit)
        rows = "" if cut is None else f" LIMIT {int(cut)}"
        return db.execute(f"SELECT {FILE_COLUMNS} FROM latest ORDER BY {order}{rows}")

    return select


def read_latest(state_dir: Path, select: Select) -> tuple[dict[str, int], Iterator[Any]]:
    """Totals and the rows ``select(connection, totals)`` reads from the ``latest`` view (the
    latest version of every path), from one snapshot of the ledger.

    The rows stream from the open ledger (a million of them need no list); the connection
    closes once they are read.
    """
    with contextlib.ExitStack() as stack:
        db, totals = stack.enter_context(snapshot(state_dir))
        cursor = select(db, totals)
        closing = stack.pop_all()  # from here the rows' generator closes the connection

    def rows() -> Iterator[Any]:
        with closing:
            try:
                yield from cursor
            except sqlite3.Error as e:  # a damaged page met halfway through
                raise ledger_error(ledger_path(state_dir), e) from None

    return totals, rows()


@contextmanager
def snapshot(state_dir: Path) -> Iterator[tuple[sqlite3.Connection, dict[str, int]]]:
    """A read-only connection to one snapshot of the ledger, and its totals: for a reader of
    several views at once (the ``select_*`` functions give their queries)."""
    with _read_only(state_dir) as db:
        db.execute("BEGIN")  # one snapshot for the totals and the rows, while the master writes
        yield db, _totals(db)


def _totals(db: sqlite3.Connection) -> dict[str, int]:
    """Files by status, and the lines, error lines and bytes of the done ones."""
    totals = dict.fromkeys(("files", "done", "failed", "vanished", "pending"), 0)
    totals.update(lines=0, error_lines=0, bytes=0)
    rows = db.execute(
        "SELECT status, count(*), coalesce(sum(lines), 0), coalesce(sum(error_lines), 0), "
        "coalesce(sum(size), 0) FROM latest GROUP BY status"
    )
    for status, files, lines, error_lines, size in rows:
        totals["files"] += files
        key = "pending" if status in ("queued", "leased") else status
        if key in totals:
            totals[key] += files
        if status == "done":
            totals.update(lines=lines, error_lines=error_lines, bytes=size)
    return totals


@contextmanager
def _read_only(state_dir: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection with a ``latest`` view of the latest version of every path.

    SQLite's errors in the block, the caller's queries too, become a LedgerError.
    """
    path = ledger_path(state_dir)
    if not path.exists():
        raise ConfigError(f"no ledger in {state_dir} (is --state right?)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as e:
        raise ledger_error(path, e) from None
    try:
        # Room for sorting a million rows by path in memory, faster than within the default
        # 2 MB. Only used as needed.
        db.execute("PRAGMA cache_size = -131072")
        columns = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
        if not columns:
            raise LedgerError(f"{path} is not a logdispatch ledger (it has no versions table)")
        latest = _LATEST if "replaced" in columns else _LATEST_BEFORE_REPLACED
        on_done = _ON_DONE_TEXT if "on_done" in columns else "NULL"
        db.execute(f"CREATE TEMP VIEW latest AS {latest.format(on_done=on_done)}")
        yield db
    except sqlite3.Error as e:
        raise ledger_error(path, e) from None
    finally:
        db.close()
