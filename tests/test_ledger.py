"""The ledger's bulk writes: many rows per statement must leave exactly what one statement per
row leaves, on real SQLite, whatever the SQLite version offers."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

import dispatcher.ledger.bulk as ledger_module
from dispatcher.ledger.schema import SCHEMA, ledger_path
from dispatcher.ledger.writer import Ledger
from workers.protocol import Result, Status

# More rows than one statement takes, so that every write is split.
ROWS = ledger_module.ROWS_PER_STATEMENT * 2 + 37


def _history(state: Path, root: Path) -> list[tuple[object, ...]]:
    """Write a history with every kind of row change the master makes; return the table."""
    ledger = Ledger(state, root)
    paths = [b"d%d/f%04d.log" % (i % 7, i) for i in range(ROWS)]
    ids = [
        ledger.add_version(path, 100 + i, 10**18 + i, 1000.0 + i) for i, path in enumerate(paths)
    ]
    ledger.commit()
    # New versions of known paths: one once, one twice within the same flush.
    again = ledger.add_version(paths[3], 1, 2, 3000.0)
    twice = [ledger.add_version(paths[4], n, n, 3000.0 + n) for n in (1, 2)]
    # Leases: two attempts of one version in one batch, the later is the lease.
    leases = [(vid, 1, "host-a:1") for vid in ids[:600]] + [(ids[5], 2, "host-b:2")]
    ledger.mark_leased(leases)
    for vid in ids[:500]:
        ledger.record_result(
            Result(
                vid, 1, "host-a:1", Status.DONE, lines=vid, error_lines=vid % 3, samples=(b"x",)
            ),
            2000.0,
        )
    # A failure recorded before the lease of that very attempt: the lease must not undo it.
    ledger.mark_queued(ids[700], 1, "unreadable")
    ledger.mark_leased([(ids[700], 1, "host-a:1"), (again, 1, "host-a:1")])
    ledger.record_result(Result(twice[1], 1, "host-b:2", Status.DONE, lines=9), 2001.0)
    ledger.commit()
    ledger.close()
    with sqlite3.connect(ledger_path(state)) as db:
        return db.execute("SELECT * FROM versions ORDER BY id").fetchall()


def test_bulk_writes_leave_what_one_statement_per_row_leaves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    bulk = _history(tmp_path / "bulk", root)
    # SQLite before 3.32 (999 parameters a statement) and before 3.33 (no UPDATE ... FROM).
    monkeypatch.setattr(ledger_module, "_MAX_PARAMETERS", 999)
    monkeypatch.setattr(ledger_module, "_UPDATE_FROM", False)
    assert _history(tmp_path / "per-row", root) == bulk

    columns = [
        c[1]
        for c in sqlite3.connect(ledger_path(tmp_path / "bulk")).execute(
            "PRAGMA table_info(versions)"
        )
    ]
    rows = [dict(zip(columns, row, strict=True)) for row in bulk]
    by_path: dict[bytes, list[dict[str, object]]] = {}
    for row in rows:
        by_path.setdefault(row["path"], []).append(row)  # type: ignore[arg-type]
    # Exactly the newest version of each path is the latest (replaced = 0).
    for versions in by_path.values():
        assert [v["replaced"] for v in versions] == [1] * (len(versions) - 1) + [0]
    assert len(by_path[b"d4/f0004.log"]) == 3
    by_id = {row["id"]: row for row in rows}
    assert by_id[6]["status"] == "done" and by_id[6]["attempts"] == 2  # the later lease, then done
    assert by_id[600]["status"] == "leased" and by_id[600]["worker"] == "host-a:1"
    assert by_id[601]["status"] == "queued"
    assert (by_id[701]["status"], by_id[701]["error"]) == ("queued", "unreadable")
    assert sum(row["status"] == "done" for row in rows) == 501
    assert by_id[500]["lines"] == 500 and by_id[500]["error_lines"] == 500 % 3


def test_device_and_inode_numbers_keep_all_64_bits(tmp_path: Path) -> None:
    """st_ino and st_dev are unsigned 64-bit; SQLite's INTEGER is signed."""
    from dispatcher.versions import Action, OnDone

    ledger = Ledger(tmp_path / "state", tmp_path)
    huge = (1 << 64) - 5
    version = ledger.add_version(b"a.log", 10, 1, 1.0)
    result = Result(version, 1, "w:1", Status.DONE, 1, 0, 10, device=huge - 1, inode=huge)
    ledger.record_result(result, 2.0, OnDone(Action.DELETE))
    ledger.close()
    ledger = Ledger(tmp_path / "state", tmp_path)
    try:
        [pending] = ledger.unfinished_disposals()
        assert (pending.device, pending.inode) == (huge - 1, huge)
    finally:
        ledger.close()


def test_version_ids_are_never_given_twice_even_uncommitted(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state", tmp_path)
    handed = ledger.add_version(b"a.log", 10, 1, 1.0)
    # The master dies before any commit: the row is lost, its id must not come back.
    ledger._release()
    ledger = Ledger(tmp_path / "state", tmp_path)
    try:
        assert ledger.add_version(b"b.log", 1, 1, 1.0) > handed
    finally:
        ledger.close()


@pytest.mark.parametrize("update_from", [True, False], ids=["bulk", "per-row"])
def test_a_done_row_keeps_its_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, update_from: bool
) -> None:
    monkeypatch.setattr(ledger_module, "_UPDATE_FROM", update_from)
    ledger = Ledger(tmp_path / "state", tmp_path)
    fingerprint = bytes(range(40))
    ids = [ledger.add_version(b"%d.log" % i, 10, 1, 1.0) for i in range(3)]
    ledger.record_result(Result(ids[0], 1, "w:1", Status.DONE, fingerprint=fingerprint), 2.0)
    ledger.record_result(Result(ids[1], 1, "w:1", Status.DONE), 2.0)  # a worker sending none
    ledger.close()
    with sqlite3.connect(ledger_path(tmp_path / "state")) as db:
        rows = db.execute("SELECT status, fingerprint FROM versions ORDER BY id").fetchall()
    assert rows == [("done", fingerprint), ("done", None), ("queued", None)]


def test_a_ledger_from_before_the_fingerprint_gets_the_column_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    with contextlib.closing(sqlite3.connect(ledger_path(state))) as db:
        db.executescript(SCHEMA)
        db.execute("ALTER TABLE versions DROP COLUMN fingerprint")
        db.execute("INSERT INTO meta VALUES ('root', ?)", (str(tmp_path),))
        db.execute(
            "INSERT INTO versions (id, path, size, mtime_ns, status, lines, error_lines, seen_at, "
            "device, inode) VALUES (1, x'612e6c6f67', 5, 7, 'done', 3, 1, 0, 2049, 12)"
        )
        db.commit()
        before = db.execute("SELECT * FROM versions").fetchall()
    with contextlib.closing(Ledger(state, tmp_path)) as ledger:  # as a master starts
        assert ledger.known_versions() == {b"a.log": (5, 7)}
        new = ledger.add_version(b"b.log", 6, 8, 1.0)
        ledger.record_result(Result(new, 1, "w:1", Status.DONE, fingerprint=b"f" * 40), 2.0)
    with contextlib.closing(sqlite3.connect(ledger_path(state))) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(versions)")]
        rows = db.execute("SELECT * FROM versions ORDER BY id").fetchall()
    assert columns[-1] == "fingerprint"
    assert rows[0] == (*before[0], None)  # the old row as it was, its fingerprint not known
    assert rows[1][-1] == b"f" * 40
