"""The sums the writer keeps (dispatcher.ledger.sums) against the same sums worked out again from
every version, after random sequences of what a master writes: new versions of the same paths,
leases, retries, results with and without named counters, failures, supersessions, files gone
and back, moves by --on-done, prunes, commits, and the ledger closed and opened again.

A prune leaves the sums as they were: they are those of every version, the pruned ones as they
were when pruned, as long as no pruned file comes back (docs/guarantees.md, "Retention")."""

from __future__ import annotations

import sqlite3
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.ledger import sums
from dispatcher.ledger.writer import Ledger
from dispatcher.versions import Added, DisposalState, VersionStatus
from workers.protocol import Result, Status

PATHS = (b"a.log", b"app/x.log", b"web/deep/w.log", b"\xff/q.log")
WORKERS = ("h1:1", "h2:7")
RULES = {
    "plain": (),
    "warn": (("warn", b"WARN"),),
    "two": (("warn", b"WARN"), ("slow", b"slow")),
}

operation = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(PATHS), st.integers(0, 3)),
    st.tuples(st.just("lease"), st.integers(0, 10), st.sampled_from(WORKERS)),
    st.tuples(st.just("queue"), st.integers(0, 10)),
    st.tuples(
        st.just("done"),
        st.integers(0, 10),
        st.sampled_from(WORKERS),
        st.integers(0, 50),
        st.booleans(),  # all of its counts added to the totals, or a part
        st.floats(1.7e9, 1.7e9 + 3 * 86400),
    ),
    st.tuples(
        st.just("end"),
        st.integers(0, 10),
        st.sampled_from([VersionStatus.FAILED, VersionStatus.VANISHED, VersionStatus.SUPERSEDED]),
    ),
    st.tuples(st.just("gone"), st.sampled_from(PATHS), st.booleans()),
    st.tuples(st.just("moved"), st.integers(0, 10)),
    st.tuples(st.just("prune")),
    st.tuples(st.just("commit")),
    st.tuples(st.just("reopen"), st.sampled_from(sorted(RULES))),
)
# The versions pruned, as they were: the sums are those of these and of the ledger's.
PRUNED = "pruned_in_test"
EVERY_VERSION = f"(SELECT * FROM versions UNION ALL SELECT * FROM {PRUNED})"


def kept_and_recomputed(state: Path) -> tuple[Any, ...]:
    """The sums and counter sums as kept, and as worked out from the versions: groups with no
    version shown (every sum back to 0) are no groups."""
    db = sqlite3.connect(state / "ledger.sqlite3")
    try:
        db.execute(f"CREATE TABLE IF NOT EXISTS {PRUNED} AS SELECT * FROM versions WHERE 0")
        recomputed_sums, recomputed_counters = sums.recomputed(EVERY_VERSION)
        shown = "WHERE versions != 0"
        columns = f"dim, key, {', '.join(sums.SUMS)}"
        kept = sorted(db.execute(f"SELECT {columns} FROM sums {shown}").fetchall())
        again = sorted(db.execute(f"SELECT {columns} FROM ({recomputed_sums}) {shown}").fetchall())
        # The times are the first and last of every version a group held: never later, never
        # earlier, than those of the versions it holds now.
        times_off = db.execute(
            f"SELECT * FROM sums AS k JOIN ({recomputed_sums}) AS a USING (dim, key) "
            "WHERE k.first_at > a.first_at OR k.last_at < a.last_at"
        ).fetchall()
        nonzero = "WHERE lines != 0 OR files != 0"
        kept_counters = sorted(db.execute(f"SELECT * FROM counter_sums {nonzero}").fetchall())
        counters_again = sorted(
            db.execute(f"SELECT * FROM ({recomputed_counters}) {nonzero}").fetchall()
        )
        leftovers = db.execute(
            "SELECT * FROM sums WHERE versions = 0 AND (files != 0 OR lines != 0 OR bytes != 0 "
            "OR pending != 0 OR done != 0 OR failed != 0 OR vanished != 0 OR gone != 0 OR "
            "error_lines != 0)"
        ).fetchall()
    finally:
        db.close()
    return kept, again, kept_counters, counters_again, leftovers + times_off


def run(state: Path, root: Path, operations: list[tuple[Any, ...]]) -> None:
    ledger = Ledger(state, root)
    ledger.count_with(b"ERROR", RULES["warn"])
    ids: list[int] = []
    gone_for_good: set[bytes] = set()  # pruned latest versions: their paths do not come back
    try:
        for op, *args in operations:
            if op == "add":
                path, more = args
                if path not in gone_for_good:
                    ids.append(ledger.add_version(path, 100 + more, 1 + more, 1.7e9))
            elif op == "prune":
                gone_for_good |= prune(ledger, state)
            elif op == "commit":
                ledger.commit()
            elif op == "reopen":
                ledger.close()
                ledger = Ledger(state, root)
                ledger.count_with(b"ERROR", RULES[args[0]])
            elif op == "gone":
                path, gone = args
                ledger.record_gone(path, 1.7e9 if gone else None)
            elif ids:
                version = ids[args[0] % len(ids)]
                if op == "lease":
                    ledger.mark_leased([(version, 1, args[1])])
                elif op == "queue":
                    ledger.mark_queued(version, 2, "lost")
                elif op == "done":
                    worker, lines, whole, when = args[1:]
                    counts = tuple(lines // (n + 2) for n in range(len(ledger.rules.names)))
                    result = Result(
                        version, 1, worker, Status.DONE, lines, lines // 3, 10 * lines,
                        counts=counts,
                    )  # fmt: skip
                    added = None
                    if not whole:
                        added = Added(lines // 2, lines // 6, 5 * lines, b"a.log",
                                      tuple(c // 2 for c in counts))  # fmt: skip
                    ledger.record_result(result, when, added=added)
                elif op == "end":
                    ledger.record_end(version, args[1], "why", 1.7e9 + 7, "h1:1")
                elif op == "moved":
                    ledger.record_disposals([(version, DisposalState.DONE, "moved to /a")])
    finally:
        ledger.close()


def prune(ledger: Ledger, state: Path) -> set[bytes]:
    """Prune everything finished, as the master does with --keep; keep a copy of what went.
    Returns the paths whose latest version went."""
    ledger.commit()
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        before = {row[0]: row for row in db.execute("SELECT * FROM versions")}
    pruning = ledger.pruning(1.7e9 + 30 * 86400)
    while ledger.prune_step(pruning):
        pass
    ledger.commit()
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        db.execute(f"CREATE TABLE IF NOT EXISTS {PRUNED} AS SELECT * FROM versions WHERE 0")
        kept = {version for (version,) in db.execute("SELECT id FROM versions")}
        went = [row for version, row in before.items() if version not in kept]
        columns = [c[1] for c in db.execute("PRAGMA table_info(versions)")]
        marks = ", ".join("?" for _ in columns)
        db.executemany(f"INSERT INTO {PRUNED} VALUES ({marks})", went)
    assert pruning.done.versions == len(went)
    latest = columns.index("replaced")
    return {bytes(row[1]) for row in went if row[latest] == 0}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operation, max_size=40))
def test_kept_sums_equal_the_sums_worked_out_from_every_version(
    operations: list[tuple[Any, ...]],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        state, root = Path(tmp) / "state", Path(tmp) / "root"
        root.mkdir()
        run(state, root, operations)
        kept, again, kept_counters, counters_again, leftovers = kept_and_recomputed(state)
        assert kept == again
        assert kept_counters == counters_again
        assert leftovers == []


def test_a_ledger_from_before_sums_gets_them_from_its_versions(tmp_path: Path) -> None:
    """A ledger without sums (dropped here, as an earlier release wrote it) has them worked out
    at its first start, and kept from then on."""
    state, root = tmp_path / "state", tmp_path / "root"
    root.mkdir()
    operations: list[tuple[Any, ...]] = [("add", p, 0) for p in PATHS]
    operations += [("done", n, WORKERS[n % 2], 10 * n, n % 2 == 0, 1.7e9 + n) for n in range(5)]
    run(state, root, operations)
    before = kept_and_recomputed(state)
    db = sqlite3.connect(state / "ledger.sqlite3")
    db.executescript(
        "DROP TABLE sums; DROP TABLE counter_sums; "
        "UPDATE meta SET value = '7' WHERE key = 'layout';"
    )
    db.close()
    run(state, root, [("add", b"a.log", 1), ("done", 5, "h1:1", 7, True, 1.7e9)])
    kept, again, kept_counters, counters_again, leftovers = kept_and_recomputed(state)
    assert before[0] and kept != before[0]  # the new result is in
    assert (kept, kept_counters, leftovers) == (again, counters_again, [])
