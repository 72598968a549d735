"""Retention: the rows of what was finished before a cutoff go, what they added stays.

What a version added to the totals and to each group is in the ledger's sums
(dispatcher.ledger.sums), which nothing here changes: the totals, the groups, the counters and
the report's charts are the same after a prune. What goes:

- versions that are no longer the latest of their path (superseded, or counted before the file
  grew or was replaced);
- the latest versions of files that have left the root: noticed gone, moved or deleted by
  ``--on-done``, or vanished before they were counted;
- the sample error lines of the files still in the root.

The latest version of a file still in the root stays: it is what tells a master that the file
was counted, so that it is not counted again. Open work (queued, leased) and moves or deletions
not finished are never touched.

A prune runs in short transactions of a range of ids each, beside a running master (SQLite
makes each wait for the other's commit) or alone; a prune killed halfway has dropped some rows
and changed no sum.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass

from dispatcher.versions import sql_open

# Ids per transaction: a master waiting for one waits for a few milliseconds.
IDS_PER_STEP = 20_000
# Pages given back to the file system per step, where the ledger is incremental.
PAGES_PER_STEP = 2_000
_INCREMENTAL = 2  # PRAGMA auto_vacuum's value
# What no master will change any more, and no --on-done still has to act on.
_SETTLED = (
    f"finished_at < :cutoff AND NOT {sql_open()} "
    "AND coalesce(on_done_state, '') NOT IN ('pending', 'failed')"
)
_LEFT_THE_ROOT = (
    "(replaced = 1 OR gone_at IS NOT NULL OR on_done_state = 'done' OR status = 'vanished')"
)
_STEP = "id >= :first AND id < :first + :ids"
_SAMPLES = "(samples IS NOT NULL AND samples != X'')"


@dataclass
class Pruned:
    """What a prune dropped: versions (rows), and the samples of files kept."""

    versions: int = 0
    samples: int = 0

    def __str__(self) -> str:
        return (
            f"{self.versions:,} version{'s' * (self.versions != 1)} and the sample lines of "
            f"{self.samples:,} file{'s' * (self.samples != 1)}"
        )


@dataclass
class Pruning:
    """A prune under way: its steps (``steps()``) and what they dropped so far."""

    steps: Iterator[bool]  # each step's: whether it wrote
    done: Pruned

    @classmethod
    def of(cls, db: sqlite3.Connection, cutoff: float) -> Pruning:
        """A prune of what was finished before ``cutoff`` (wall clock, seconds), on ``db``."""
        done = Pruned()
        return cls(steps(db, cutoff, done), done)


def steps(db: sqlite3.Connection, cutoff: float, done: Pruned) -> Iterator[bool]:
    """Prune what was finished before ``cutoff`` (wall clock, seconds), a range of ids at a
    time: each step is one transaction of the caller's (who commits between steps), adding
    what it dropped to ``done``, and says whether it wrote."""
    (last,) = db.execute("SELECT coalesce(max(id), 0) FROM versions").fetchone()
    first = 1
    while first <= last:
        values = {"cutoff": cutoff, "first": first, "ids": IDS_PER_STEP}
        # Looked for first: a write, even of nothing, takes the ledger's write lock until the
        # commit, and most ranges of a ledger pruned before hold nothing more to drop.
        (anything,) = db.execute(
            f"SELECT EXISTS (SELECT 1 FROM versions WHERE {_STEP} AND {_SETTLED} AND "
            f"({_LEFT_THE_ROOT} OR {_SAMPLES}))",
            values,
        ).fetchone()
        if anything:
            dropped = db.execute(
                f"DELETE FROM versions WHERE {_STEP} AND {_SETTLED} AND {_LEFT_THE_ROOT}", values
            )
            done.versions += dropped.rowcount
            cleared = db.execute(
                f"UPDATE versions SET samples = NULL WHERE {_STEP} AND {_SETTLED} AND {_SAMPLES}",
                values,
            )
            done.samples += cleared.rowcount
        first += IDS_PER_STEP
        yield anything
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] == _INCREMENTAL:
        while db.execute("PRAGMA freelist_count").fetchone()[0]:
            db.execute(f"PRAGMA incremental_vacuum({PAGES_PER_STEP})")
            yield True
    # Else a ledger never vacuumed: its free pages serve the next rows.
