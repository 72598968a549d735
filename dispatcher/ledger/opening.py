"""How the master's writer connection takes the ledger file up and leaves it: WAL mode while
the master writes and a rollback journal after it, a copy before the layout is brought up to
date, and what a ledger keeps from its first start (its root, the key that signs leases).

Functions of the connection ``dispatcher.ledger.writer.Ledger`` opens, run before its first
transaction and after its last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sqlite3
from pathlib import Path

from workers.errors import ConfigError

log = logging.getLogger(f"logdispatch.{__name__}")

# How long leaving waits for a reader's read to end before it leaves the ledger in WAL mode,
# how long a starting master waits for them to switch it to WAL, and how long any other
# statement waits for a lock (sqlite3's default).
CLOSE_WAIT_MS = 2000
OPEN_WAIT_MS = 60_000
BUSY_WAIT_MS = 5000


def back_up(db: sqlite3.Connection, path: Path, found: int) -> Path:
    """A copy of the ledger at ``path`` as it is, beside it, before it is brought to this
    layout: the way back to the release that wrote it. Made by SQLite's backup, so a reader or
    the WAL leave it whole."""
    backup = path.with_name(f"{path.name}.layout-{found}.bak")
    number = 0
    while backup.exists():  # an earlier copy is kept, whatever it holds
        number += 1
        backup = path.with_name(f"{path.name}.layout-{found}.{number}.bak")
    with contextlib.closing(sqlite3.connect(backup)) as copy:
        db.backup(copy)
    return backup


def enter_wal(db: sqlite3.Connection, path: Path) -> None:
    """WAL lets summaries read while the master writes.

    A ledger a master left (see leave_readable) is in rollback-journal mode, and the switch
    waits until no reader is reading it: a long summary delays the start, it does not fail it.
    """
    db.execute("PRAGMA busy_timeout = 0")
    try:
        db.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError as e:
        if not e.sqlite_errorname.startswith("SQLITE_BUSY"):
            raise
        log.info("waiting for the readers of the ledger %s to finish", path)
        db.execute(f"PRAGMA busy_timeout = {OPEN_WAIT_MS}")
        db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA busy_timeout = {BUSY_WAIT_MS}")


def leave_readable(db: sqlite3.Connection) -> None:
    """Leave the ledger as one file that anyone with read access can read.

    In WAL mode a reader needs the -shm file beside the ledger, and the last writer to close
    removes it: a reader that cannot create it (another user, a read-only mount) could then
    not read at all. A rollback journal needs nothing beside the ledger; the next master
    switches back to WAL. A reader still reading keeps it in WAL, with its -shm file left in
    place for the next readers.
    """
    db.execute(f"PRAGMA busy_timeout = {CLOSE_WAIT_MS}")
    try:
        db.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.OperationalError as e:
        # Still readable by anyone who can open or create its -shm file.
        busy = e.sqlite_errorname.startswith("SQLITE_BUSY")
        log.info("the ledger stays in WAL mode: %s", "a reader has it open" if busy else e)


def check_root(db: sqlite3.Connection, root: Path) -> None:
    """Note ``root`` in a new ledger; refuse a ledger noted for another root."""
    row = db.execute("SELECT value FROM meta WHERE key = 'root'").fetchone()
    if row is None:
        db.execute("INSERT INTO meta VALUES ('root', ?)", (os.fsdecode(root),))
    elif row[0] != os.fsdecode(root):
        raise ConfigError(
            f"the state directory belongs to root {row[0]}, not {root}: "
            "use another --state for this root"
        )


def lease_secret(db: sqlite3.Connection) -> bytes:
    """The key that signs leases, made once per ledger: results and heartbeats are checked
    against it after a restart too."""
    row = db.execute("SELECT value FROM meta WHERE key = 'lease_secret'").fetchone()
    if row is not None:
        return bytes.fromhex(row[0])
    secret = secrets.token_bytes(32)
    db.execute("INSERT INTO meta VALUES ('lease_secret', ?)", (secret.hex(),))
    return secret
