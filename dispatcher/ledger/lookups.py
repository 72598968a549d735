"""What the ledger's writer looks up rather than writes: the rules versions are counted with,
and the counted versions a new one is compared with (the same file renamed or grown, content
counted before).

Functions of the writer's connection, run on the master loop's thread inside its transaction;
``dispatcher.ledger.writer.Ledger`` keeps their state (the current rules, the counters of
every set) and writes what it buffered before any of them reads (its ``_flush_counted``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from typing import Any

from dispatcher.ledger.bulk import values_statements
from dispatcher.versions import CountedVersion, Owner, Rules, Version
from workers.matching import Counters

# The counters of each set of rules in the ledger, by its id: (name, pattern) pairs.
CounterSets = dict[int, frozenset[tuple[str, bytes]]]

# The most counted versions a lookup of one file's earlier versions gives.
COUNTED_ROWS = 16


def signed64(number: int) -> int | None:
    """A device or inode number (unsigned 64 bits) as SQLite's signed INTEGER holds it; 0 (not
    known) as NULL."""
    if not number:
        return None
    return number - (1 << 64) if number >= 1 << 63 else number


def unsigned64(number: int | None) -> int | None:
    return None if number is None else number & ((1 << 64) - 1)


def _past_prefix(prefix: bytes) -> bytes | None:
    """The first byte string after all those that start with ``prefix``; None: there is none."""
    stripped = prefix.rstrip(b"\xff")
    return stripped[:-1] + bytes([stripped[-1] + 1]) if stripped else None


def meta_int(db: sqlite3.Connection, key: str) -> int:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return 0 if row is None else int(row[0])


def note_rules(
    db: sqlite3.Connection, error_pattern: bytes, counters: Counters, next_id: int
) -> tuple[Rules, int]:
    """Note the rules versions are counted with from ``next_id`` on, unless they are those
    noted already; return them with their id, and the first version id counted with them."""
    rules_id = _rules_id(db, error_pattern, counters)
    before = db.execute("SELECT value FROM meta WHERE key = 'rules'").fetchone()
    if before is None:
        before = _rules_before_rules_were_kept(db)
    same = before is not None and int(before[0]) == rules_id
    if not same:
        db.execute("INSERT OR REPLACE INTO meta VALUES ('rules_since', ?)", (next_id,))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('rules', ?)", (rules_id,))
    db.execute("INSERT OR REPLACE INTO meta VALUES ('error_pattern', ?)", (error_pattern.hex(),))
    return Rules(error_pattern, counters, rules_id), meta_int(db, "rules_since")


def counter_sets(db: sqlite3.Connection) -> CounterSets:
    """The counters of every set of rules in the ledger, by its id."""
    return {
        rules: frozenset((name, bytes.fromhex(pattern)) for name, pattern in json.loads(spec))
        for rules, spec in db.execute("SELECT id, counters FROM rules")
    }


def _rules_id(db: sqlite3.Connection, error_pattern: bytes, counters: Counters) -> int:
    spec = json.dumps([[name, pattern.hex()] for name, pattern in counters])
    db.execute(
        "INSERT OR IGNORE INTO rules (error_pattern, counters) VALUES (?, ?)",
        (error_pattern, spec),
    )
    (rules_id,) = db.execute(
        "SELECT id FROM rules WHERE error_pattern = ? AND counters = ?", (error_pattern, spec)
    ).fetchone()
    return int(rules_id)


def _rules_before_rules_were_kept(db: sqlite3.Connection) -> tuple[int] | None:
    """In a ledger from before the rules were kept, the rules of the versions counted
    since its error pattern was last set (``rules_since``): that pattern and no counters,
    recorded with them. None when it has noted no pattern."""
    pattern = db.execute("SELECT value FROM meta WHERE key = 'error_pattern'").fetchone()
    if pattern is None:
        return None
    rules_id = _rules_id(db, bytes.fromhex(pattern[0]), ())
    db.execute(
        "UPDATE versions SET rules = ? WHERE rules IS NULL AND status = 'done' AND id >= ?",
        (rules_id, meta_int(db, "rules_since")),
    )
    return (rules_id,)


def to_recount(
    db: sqlite3.Connection, rules: Rules, sets: CounterSets, only_missing: bool
) -> list[Version]:
    """The latest done version of each path that was counted with other rules than
    ``rules`` (``only_missing``: without one of their counters), and that --on-done did not
    move or delete."""
    rows = db.execute(
        "SELECT id, path, size, mtime_ns, rules FROM versions WHERE replaced = 0 "
        "AND status = 'done' AND on_done_state IS NULL AND rules IS NOT ?",
        (rules.id,),
    )
    wanted = frozenset(rules.counters)
    return [
        Version(version_id, path, size, mtime_ns)
        for version_id, path, size, mtime_ns, counted_with in rows
        if not only_missing or not wanted <= sets.get(counted_with, frozenset())
    ]


def counted_with_other_rules(db: sqlite3.Connection, rules_id: int) -> int:
    """How many paths' latest versions were counted with other rules than ``rules_id``."""
    (other,) = db.execute(
        "SELECT count(*) FROM versions WHERE replaced = 0 AND status = 'done' AND rules IS NOT ?",
        (rules_id,),
    ).fetchone()
    return int(other)


def first_counted(
    db: sqlite3.Connection, fingerprints: Iterable[bytes], sets: CounterSets
) -> dict[bytes, Owner]:
    """For each of ``fingerprints`` counted before: the path it was first counted under,
    and the named counters that have counted it (of every set of rules it was counted
    with)."""
    keys = [(fingerprint,) for fingerprint in fingerprints]
    owners: dict[bytes, Owner] = {}
    for sql, values in values_statements(
        "WITH w(fingerprint) AS (VALUES {}) SELECT w.fingerprint, (SELECT path FROM versions "
        "WHERE fingerprint = w.fingerprint ORDER BY id LIMIT 1), (SELECT "
        "json_group_array(DISTINCT coalesce(rules, 0)) FROM versions "
        "WHERE fingerprint = w.fingerprint) FROM w",
        1,
        keys,
    ):
        for fingerprint, path, rules in db.execute(sql, values):
            if path is not None:
                counters = (sets.get(r, frozenset()) for r in json.loads(rules))
                owners[fingerprint] = Owner(path, frozenset().union(*counters))
    return owners


def counted_by_inode(
    db: sqlite3.Connection, inodes: Iterable[int]
) -> dict[int, list[CountedVersion]]:
    """The counted versions whose file had each of these inode numbers, latest first (a
    few each)."""
    keys = {signed64(inode): inode for inode in inodes}
    found = _counted_for(db, "v.inode = w.a", [(k, None) for k in keys])
    return {keys[k]: versions for k, versions in found.items()}


def counted_by_path(
    db: sqlite3.Connection, paths: Iterable[bytes]
) -> dict[bytes, list[CountedVersion]]:
    """The latest counted versions of each of ``paths``, latest first (a few each)."""
    return _counted_for(db, "v.path = w.a", [(path, None) for path in set(paths)])


def counted_by_prefix(
    db: sqlite3.Connection, prefixes: Iterable[bytes]
) -> dict[bytes, list[CountedVersion]]:
    """The latest counted versions of the paths that start with each of ``prefixes``,
    whose content was first counted there, latest first (a few each)."""
    # The copies (same_as) are left out: a numbered rotation makes many at each turn, and
    # they would take the place of the versions a new one may extend.
    # A range of the path index rather than LIKE, which SQLite does not index for BLOBs.
    ranges = [(prefix, _past_prefix(prefix)) for prefix in set(prefixes)]
    return _counted_for(
        db,
        "v.path >= w.a AND v.path < w.b AND v.same_as IS NULL",
        [(low, high) for low, high in ranges if high is not None],  # none past b"\xff..."
    )


def _counted_for(
    db: sqlite3.Connection, join: str, keys: list[tuple[object, object]]
) -> dict[Any, list[CountedVersion]]:
    """For each key (a, b), the latest COUNTED_ROWS done versions ``v`` that ``join``
    matches with it, latest first: one statement for many keys."""
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
        for row in db.execute(sql, values):
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
