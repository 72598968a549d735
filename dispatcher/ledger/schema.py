"""Where the ledger lives and what it holds: its tables, and how a ledger written by an earlier
version is brought up to them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dispatcher import defaults
from dispatcher.ledger import sums

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
    -- that inode only (dispatcher/master/ondone.py). NULL: not known. The comments from
    -- on_done_note down hold no comma: DROP COLUMN (tests use it) cuts back to the last it finds.
    device INTEGER,
    inode INTEGER,
    gone_at REAL,                 -- wall clock when a counted file was noticed gone from the root
    -- The length of the content counted and hashes of its first and last 64 KiB whatever its
    -- file or compression (workers/fingerprint.py). NULL: not known.
    fingerprint BLOB,
    -- What a done version adds to the totals (which count each piece of content once; see
    -- docs/counting.md): all of its counts; or what it added to a version it extends; or
    -- nothing when its content was counted before.
    own_lines INTEGER,
    own_error_lines INTEGER,
    own_bytes INTEGER,
    same_as BLOB,                 -- another path its content was first counted under
    -- The rules (error pattern and named counters) a done version was counted with: an id in
    -- rules. NULL: counted before rules were kept; its error pattern was meta's error_pattern.
    rules INTEGER,
    -- JSON objects: the lines each named counter matched; what each adds to the totals as
    -- own_lines does. NULL: no counter counted it.
    counts TEXT,
    own_counts TEXT
);
-- Each set of rules versions were counted with; counters: JSON [[name, pattern hex], ...].
CREATE TABLE IF NOT EXISTS rules (
    id INTEGER PRIMARY KEY,
    error_pattern BLOB NOT NULL,
    counters TEXT NOT NULL,
    UNIQUE (error_pattern, counters)
);
CREATE INDEX IF NOT EXISTS versions_path ON versions (path, id);
-- Every status change paid for this index; the one query it served runs once, at start-up.
DROP INDEX IF EXISTS versions_open;
"""
# On columns a ledger from an earlier version gains in ``_migrate``: made after it.
INDEXES = """
-- Content counted before, and the counted versions of a file that was renamed or grew.
CREATE INDEX IF NOT EXISTS versions_fingerprint ON versions (fingerprint, id)
    WHERE fingerprint IS NOT NULL;
CREATE INDEX IF NOT EXISTS versions_inode ON versions (inode, id) WHERE inode IS NOT NULL;
-- summary --failed and the report's failed files, by path, without reading the others: few
-- rows, so next to nothing for the writer.
CREATE INDEX IF NOT EXISTS versions_failed ON versions (path)
    WHERE replaced = 0 AND status IN ('failed', 'vanished');
-- The files with the most error lines, or the highest error rate, first (the summary's
-- table, --sort errors|rate, the report): only the files that have any, which the writer pays
-- for, not every file. The rate's expression is queries.RATE_OF_FILES.
CREATE INDEX IF NOT EXISTS versions_error_lines ON versions (error_lines DESC, path)
    WHERE replaced = 0 AND status = 'done' AND error_lines > 0;
CREATE INDEX IF NOT EXISTS versions_error_rate ON versions ((error_lines * 1.0 / lines) DESC, path)
    WHERE replaced = 0 AND status = 'done' AND error_lines > 0;
"""


# The ledger's layout: one more for each step ``_migrate`` takes, in its order. A ledger notes
# its layout in meta; one from before layouts were noted is known by the columns it has.
LAYOUT = 8
# The column each step of ``_migrate`` adds first, in order: a ledger with the first N of them
# has layout N (those of layout 8 on note theirs in meta).
_STEPS = ("replaced", "on_done", "inode", "gone_at", "fingerprint", "own_lines", "rules")


def layout(db: sqlite3.Connection) -> int | None:
    """The layout of the ledger ``db`` holds, or None for a file that holds none yet."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "versions" not in tables:
        return None
    if "meta" in tables:
        row = db.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone()
        if row is not None:
            return int(row[0])
    columns = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
    return sum(1 for column in _STEPS if column in columns)


def newer_ledger(path: Path, found: int) -> str:
    """Why a ledger of a later layout is left alone: this release cannot know its rows."""
    return (
        f"{path} was written by a newer logdispatch (ledger layout {found}; this one knows up "
        f"to {LAYOUT}): run that release or a later one"
    )


def ledger_path(state_dir: Path) -> Path:
    return state_dir / defaults.LEDGER_FILE


def create(db: sqlite3.Connection) -> None:
    """Make the ledger's tables, or bring a ledger written by an earlier version up to them,
    and note its layout."""
    db.executescript(SCHEMA)
    _migrate(db)
    db.executescript(INDEXES)
    _keep_sums(db)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('layout', ?)", (LAYOUT,))


def _keep_sums(db: sqlite3.Connection) -> None:
    """The sums and the triggers that keep them (dispatcher.ledger.sums); a ledger from before
    them gets its sums worked out from its versions, in the same transaction."""
    if _has_table(db, "sums"):
        return
    db.execute("BEGIN")
    try:
        for table in sums.TABLES:
            db.execute(table)
        sums.rebuild(db)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


def _migrate(db: sqlite3.Connection) -> None:
    columns = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
    if "replaced" not in columns:
        db.execute("ALTER TABLE versions ADD COLUMN replaced INTEGER NOT NULL DEFAULT 0")
        db.execute(
            "UPDATE versions SET replaced = 1 WHERE id NOT IN "
            "(SELECT max(id) FROM versions GROUP BY path)"
        )
    if "on_done" not in columns:
        for column in ("on_done", "on_done_dir", "on_done_state", "on_done_note"):
            kind = "BLOB" if column == "on_done_dir" else "TEXT"
            db.execute(f"ALTER TABLE versions ADD COLUMN {column} {kind}")
    if "inode" not in columns:
        for column in ("device", "inode"):
            db.execute(f"ALTER TABLE versions ADD COLUMN {column} INTEGER")
    if "gone_at" not in columns:
        db.execute("ALTER TABLE versions ADD COLUMN gone_at REAL")
    if "fingerprint" not in columns:
        db.execute("ALTER TABLE versions ADD COLUMN fingerprint BLOB")
    if "own_lines" not in columns:
        for column, kind in (
            ("own_lines", "INTEGER"),
            ("own_error_lines", "INTEGER"),
            ("own_bytes", "INTEGER"),
            ("same_as", "BLOB"),
        ):
            db.execute(f"ALTER TABLE versions ADD COLUMN {column} {kind}")
        # The totals stay what they were: the latest version of each path, all of it.
        db.execute(
            "UPDATE versions SET own_lines = lines, own_error_lines = error_lines, "
            "own_bytes = coalesce(bytes_read, size) WHERE status = 'done' AND replaced = 0"
        )
        db.execute(
            "UPDATE versions SET own_lines = 0, own_error_lines = 0, own_bytes = 0 "
            "WHERE status = 'done' AND replaced = 1"
        )
    if "rules" not in columns:
        for column, kind in (("rules", "INTEGER"), ("counts", "TEXT"), ("own_counts", "TEXT")):
            db.execute(f"ALTER TABLE versions ADD COLUMN {column} {kind}")
