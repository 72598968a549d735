"""``logdispatch prune``: drop the rows of what was finished long ago, beside a running master or
alone; the totals and groups stay what they are (dispatcher.ledger.prune says what goes)."""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from dispatcher.cli.options import add_command, add_state_option, add_verbosity, duration
from workers.errors import ConfigError, LedgerBusy

if TYPE_CHECKING:
    from dispatcher.cli.options import Subparsers

# How long a step waits for a running master's commit, and the master for a step's.
_BUSY_WAIT_MS = 30_000


def add_prune_parser(commands: Subparsers) -> None:
    prune = add_command(
        commands,
        "prune",
        "drop from the ledger the rows of files finished before a cutoff; totals and groups "
        "keep what they counted",
    )
    add_state_option(prune)
    prune.add_argument(
        "--older-than",
        type=duration,
        required=True,
        metavar="DURATION",
        help="prune what was finished longer ago than this (30d, 12h; 0s: everything finished)",
    )
    add_verbosity(prune)
    prune.set_defaults(func=cmd_prune)


def cmd_prune(args: argparse.Namespace) -> int:
    from dispatcher.ledger.lock import StateDirLock
    from dispatcher.ledger.prune import Pruning
    from dispatcher.ledger.schema import LAYOUT, layout, ledger_path

    path = ledger_path(args.state)
    if not path.exists():
        raise ConfigError(f"no ledger in {args.state} (is --state right?)")
    cutoff = time.time() - args.older_than
    # Without a master, the lock keeps one from starting meanwhile, and the file can be
    # rewritten whole (VACUUM); with one, it gets its pages back a few at a time.
    lock: StateDirLock | None
    try:
        lock = StateDirLock(args.state)
    except LedgerBusy:
        lock = None
    before = _size(path)
    try:
        db = sqlite3.connect(path, isolation_level=None)
        with contextlib.closing(db):
            db.execute(f"PRAGMA busy_timeout = {_BUSY_WAIT_MS}")
            found = layout(db)
            if found is None or found < LAYOUT:
                raise ConfigError(
                    f"{path} is from an earlier logdispatch: start a master of this one on it "
                    "once (it brings the ledger up to date), then prune"
                )
            db.execute("BEGIN IMMEDIATE")
            try:
                pruning = Pruning.of(db, cutoff)
                for _ in pruning.steps:  # each step a transaction
                    db.execute("COMMIT")
                    db.execute("BEGIN IMMEDIATE")
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            if lock is not None:
                # Incremental from now on: a prune beside a master gives pages back too.
                db.execute("PRAGMA auto_vacuum = INCREMENTAL")
                db.execute("VACUUM")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            # Beside a master, whose open transaction a checkpoint would wait for, the write-
            # ahead log is the master's to fold in.
    except sqlite3.Error as e:
        from dispatcher.ledger.errors import ledger_error

        raise ledger_error(path, e) from None
    finally:
        if lock is not None:
            lock.release()
    after = _size(path)
    from rich.filesize import decimal

    cut = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(cutoff))
    beside = "" if lock is not None else " (a master runs on it: its free pages are reused)"
    print(
        f"logdispatch prune: dropped {pruning.done} finished before {cut}; the ledger went from "
        f"{decimal(before)} to {decimal(after)}{beside}"
    )
    return 0


def _size(ledger: Path) -> int:
    """The ledger's bytes on disk, its write-ahead log's too."""
    return sum(
        p.stat().st_size for p in (ledger, ledger.with_name(ledger.name + "-wal")) if p.exists()
    )
