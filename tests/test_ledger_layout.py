"""A ledger from an earlier release is brought to this layout at first start, with a copy of it
as it was beside it and one line saying so; one from a later release is refused, untouched,
by the master and the readers. Real `run --once` and `summary` processes, real SQLite."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from conftest import logdispatch

from dispatcher.ledger.schema import LAYOUT


def _run(root: Path, state: Path) -> str:
    run = logdispatch(
        "run", str(root), "--once", "--workers", "1", "--state", str(state), "--settle", "0"
    )
    assert run.returncode == 0, run.stderr
    return run.stderr


def _totals(state: Path) -> dict[str, object]:
    shown = logdispatch("summary", "--state", str(state), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    totals: dict[str, object] = json.loads(shown.stdout)["totals"]
    return totals


def _counted(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.log").write_bytes(b"ERROR one\nok\n")
    (root / "b.log").write_bytes(b"ok\n" * 5)
    state = tmp_path / "state"
    _run(root, state)
    return root, state


def test_an_earlier_layout_is_brought_up_with_a_copy_of_it_kept(tmp_path: Path) -> None:
    root, state = _counted(tmp_path)
    before = _totals(state)
    ledger = state / "ledger.sqlite3"
    # What the release before named counters wrote: no rules, no counts, no layout noted.
    with sqlite3.connect(ledger) as db:
        for column in ("own_counts", "counts", "rules"):
            db.execute(f"ALTER TABLE versions DROP COLUMN {column}")
        db.execute("DROP TABLE rules")
        db.execute("DELETE FROM meta WHERE key IN ('rules', 'layout')")
        rows = db.execute("SELECT * FROM versions ORDER BY id").fetchall()

    said = _run(root, state)
    backup = state / "ledger.sqlite3.layout-6.bak"
    line = f"ledger {ledger} brought from layout 6 to {LAYOUT}; the file as it was is kept as"
    assert f"{line} {backup}" in said
    with sqlite3.connect(backup) as db:  # the old file, whole, as that release reads it
        assert db.execute("SELECT * FROM versions ORDER BY id").fetchall() == rows
        columns = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
    assert "rules" not in columns
    assert _totals(state) == before
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'layout'").fetchone() == (
            str(LAYOUT),
        )

    # Once is enough: the next start finds this layout and copies nothing.
    assert "brought from layout" not in _run(root, state)
    assert sorted(p.name for p in state.glob("*.bak")) == [backup.name]


def test_a_later_layout_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    root, state = _counted(tmp_path)
    ledger = state / "ledger.sqlite3"
    with sqlite3.connect(ledger) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = 'layout'", (LAYOUT + 1,))
    digest = hashlib.sha256(ledger.read_bytes()).hexdigest()
    said = (
        f"{ledger} was written by a newer logdispatch (ledger layout {LAYOUT + 1}; this one "
        f"knows up to {LAYOUT}): run that release or a later one"
    )
    run = logdispatch("run", str(root), "--once", "--state", str(state), "--settle", "0")
    assert run.returncode == 2
    assert run.stderr == f"logdispatch run: error: {said}\n"
    summary = logdispatch("summary", "--state", str(state))
    assert summary.returncode == 2 and said in summary.stderr
    assert hashlib.sha256(ledger.read_bytes()).hexdigest() == digest
    assert not list(state.glob("*.bak"))
