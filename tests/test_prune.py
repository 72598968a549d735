"""``logdispatch prune``: the rows of what was finished before the cutoff go, and every total,
group, counter and chart stays what it was; beside a running master and its workers too, and
a prune killed halfway loses nothing."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import LOGDISPATCH, Cluster, logdispatch, wait_for

from dispatcher.ledger import sums
from dispatcher.ledger.writer import Ledger
from dispatcher.versions import Added, DisposalState, VersionStatus
from workers.protocol import Result, Status

VIEWS = (
    (),
    ("--by", "dir"),
    ("--by", "worker"),
    ("--by", "host"),
    ("--by", "day"),
    ("--by", "dir", "--sort", "warn"),
)


def views(state: Path) -> list[Any]:
    """Every grouping's JSON summary: the totals and groups a prune must keep."""
    found = []
    for view in VIEWS:
        shown = logdispatch("summary", "--state", str(state), "--format", "json", *view)
        assert shown.returncode == 0, shown.stderr
        document = json.loads(shown.stdout)
        document.pop("files", None)
        found.append(document)
    return found


def prune(state: Path, older_than: str = "0s") -> str:
    done = logdispatch("prune", "--state", str(state), "--older-than", older_than)
    assert done.returncode == 0, done.stderr
    return done.stdout


def rows(state: Path) -> dict[bytes, list[tuple[str, bool]]]:
    """Each path's versions as (status, has samples), oldest first."""
    found: dict[bytes, list[tuple[str, bool]]] = {}
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        for path, status, samples in db.execute(
            "SELECT path, status, samples FROM versions ORDER BY id"
        ):
            found.setdefault(bytes(path), []).append((status, bool(samples)))
    return found


def _hand_ledger(state: Path, root: Path) -> None:
    """Versions a master writes over a day: a log that grew (two versions), a file counted and
    then gone from the root, one moved by --on-done and one whose move is still pending, a
    vanished one, a failed one, one still queued, and plain counted files."""
    ledger = Ledger(state, root)
    ledger.count_with(b"ERROR", (("warn", b"WARN"),))
    day = time.time() - 86400

    def done(path: bytes, lines: int, when: float, worker: str = "h1:1") -> int:
        version = ledger.add_version(path, lines, 1, when)
        result = Result(
            version, 1, worker, Status.DONE, lines, lines // 2, 10 * lines,
            samples=(b"ERROR " + path,), counts=(lines // 3,),
        )  # fmt: skip
        ledger.record_result(
            result, when, added=Added(lines, lines // 2, 10 * lines, None, (lines // 3,))
        )
        return version

    done(b"app/grown.log", 10, day)
    done(b"app/grown.log", 30, day + 60)
    done(b"app/kept.log", 7, day + 120, "h2:1")
    done(b"web/gone.log", 5, day + 180)
    ledger.record_gone(b"web/gone.log", day + 240)
    moved = done(b"web/moved.log", 6, day + 300)
    ledger.record_disposals([(moved, DisposalState.DONE, "moved to /archive/web/moved.log")])
    ledger.commit()
    vanished = ledger.add_version(b"web/vanished.log", 1, 1, day)
    ledger.record_end(vanished, VersionStatus.VANISHED, "No such file", day + 400, "h1:1")
    failed = ledger.add_version(b"web/bad.gz", 1, 1, day)
    ledger.record_end(failed, VersionStatus.FAILED, "corrupt", day + 500, "h2:1", 3)
    ledger.add_version(b"app/later.log", 1, 1, day)  # queued: open work
    ledger.close()


def test_prune_drops_what_left_the_root_and_keeps_every_total_and_group(tmp_path: Path) -> None:
    state, root = tmp_path / "state", tmp_path / "root"
    root.mkdir()
    _hand_ledger(state, root)
    before = views(state)
    assert before[0]["totals"]["files"] == 7 and before[0]["totals"]["counts"]["warn"] > 0

    assert "dropped 0 versions" in prune(state, "2d")  # nothing finished that long ago
    said = prune(state)
    assert said.startswith("logdispatch prune: dropped 4 versions and the sample lines of 2 files")

    assert views(state) == before
    assert rows(state) == {
        # The grown log's first version went; its latest, still in the root, stays.
        b"app/grown.log": [("done", False)],
        b"app/kept.log": [("done", False)],
        b"web/bad.gz": [("failed", False)],
        b"app/later.log": [("queued", False)],
    }
    report = logdispatch("report", "--state", str(state), "--out", str(tmp_path / "r.html"))
    assert report.returncode == 0, report.stderr


def test_prune_beside_a_running_master_and_its_workers(cluster: Cluster) -> None:
    """Files counted, grown and deleted under a master; a prune while files keep landing and
    workers keep reporting: the totals are every line written, each piece once."""
    cluster.serve("--settle", "0.2")
    cluster.work()
    cluster.work()
    lines = 0
    for n in range(40):
        (cluster.root / f"d{n % 4}").mkdir(exist_ok=True)
        (cluster.root / f"d{n % 4}" / f"f{n}.log").write_bytes(b"ERROR %d\nok\n" % n)
        lines += 2
    wait_for(lambda: cluster.summary()["totals"].get("done") == 40, timeout=60)
    for n in range(10):
        (cluster.root / f"d{n % 4}" / f"f{n}.log").unlink()  # counted, then gone
    wait_for(lambda: cluster.summary()["totals"]["gone"] == 10, timeout=60)

    prune_runs = subprocess.Popen(
        [*LOGDISPATCH, "prune", "--state", str(cluster.state), "--older-than", "0s"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for n in range(40, 80):  # landing while it prunes
        (cluster.root / f"d{n % 4}" / f"f{n}.log").write_bytes(b"ERROR %d\nok\nok\n" % n)
        lines += 3
    out, err = prune_runs.communicate(timeout=120)
    assert prune_runs.returncode == 0, err
    assert "a master runs on it" in out

    wait_for(lambda: cluster.summary()["totals"].get("done") == 80, timeout=60)
    totals = cluster.summary()["totals"]
    assert (totals["files"], totals["lines"], totals["error_lines"]) == (80, lines, 80)
    assert totals["gone"] == 10
    assert not any(b"f%d.log" % n in path for path in rows(cluster.state) for n in range(10))
    assert "Traceback" not in cluster.master.output if cluster.master else False


def test_a_prune_killed_halfway_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL in the middle of a prune over many superseded versions: every view is what it
    was, the ledger is sound, and the next prune drops the rest."""
    state, root = tmp_path / "state", tmp_path / "root"
    root.mkdir()
    Ledger(state, root).close()
    versions = 400_000  # a log seen at as many sizes: every version but the last of each goes
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        db.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
            "INSERT INTO versions (id, path, size, mtime_ns, status, worker, lines, error_lines, "
            "own_lines, own_error_lines, own_bytes, seen_at, finished_at, replaced, counts, "
            "own_counts) SELECT i, CAST('d' || (i % 3) || '/app.log' AS BLOB), i, i, 'done', "
            "'h:' || (i % 2), i, i % 7, 1, i % 2, 1, 0, 1e9 + i, i <= ? - 3, "
            "json_object('warn', i % 5), json_object('warn', i % 3) FROM n",
            (versions, versions),
        )
        sums.rebuild(db)  # rows written by SQL, not through the writer
    before = views(state)
    size = (state / "ledger.sqlite3").stat().st_size
    pruning = subprocess.Popen(
        [*LOGDISPATCH, "prune", "--state", str(state), "--older-than", "0s"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        # Its first steps are in: the first ids are gone.
        wait_for(lambda: db.execute("SELECT min(id) FROM versions").fetchone()[0] > 1, 60, 0.002)
    pruning.send_signal(signal.SIGKILL)
    pruning.wait()
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        (left,) = db.execute("SELECT count(*) FROM versions").fetchone()
    assert 3 < left < versions  # killed halfway
    assert views(state) == before
    said = prune(state)
    assert views(state) == before
    assert (state / "ledger.sqlite3").stat().st_size < size / 10, said
    assert len(rows(state)) == 3 and all(len(v) == 1 for v in rows(state).values())


def test_serve_keep_prunes_on_a_schedule_and_keeps_the_totals(cluster: Cluster) -> None:
    cluster.serve("--keep", "0s", "-v")
    cluster.work()
    for n in range(6):
        (cluster.root / f"f{n}.log").write_bytes(b"ERROR %d\nok\n" % n)
    wait_for(lambda: cluster.summary()["totals"].get("done") == 6, timeout=60)
    (cluster.root / "f0.log").unlink()
    (cluster.root / "f1.log").write_bytes(b"ERROR 1\nok\nmore\n")  # grown: its first version goes
    wait_for(lambda: cluster.summary()["totals"]["gone"] == 1, timeout=60)
    wait_for(lambda: len(cluster.versions().get(b"f1.log", [])) == 2, timeout=60)
    # Pruned by the master itself, within a few of its steps.
    wait_for(lambda: b"f0.log" not in rows(cluster.state), timeout=30)
    wait_for(lambda: len(rows(cluster.state)[b"f1.log"]) == 1, timeout=30)
    totals = cluster.summary()["totals"]
    assert (totals["files"], totals["gone"], totals["lines"], totals["error_lines"]) == (
        6,
        1,
        13,
        6,
    )
    assert cluster.master is not None
    assert "pruned 1 version and the sample lines of" in cluster.master.output
    # Its prunes, every second here, leave the ledger's write lock free between them.
    started = time.monotonic()
    assert "dropped 0 versions" in prune(cluster.state)
    assert time.monotonic() - started < 20
