"""--on-done: counted files moved to an archive or deleted, only once their counts are safe.

Real `run`, `serve` and `work` processes over real files and a real ledger, SIGKILL for the
crashes; the rules of a single action (idempotence, name clashes, copies to another filesystem)
are checked on the Disposer itself, over real files.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, free_port, wait_for
from reference import reference_counts
from test_cli import logdispatch
from test_master import Harness, _old_file

from dispatcher.ledger.schema import SCHEMA
from dispatcher.ledger.writer import Ledger
from dispatcher.master.ondone import Disposer
from dispatcher.versions import (
    KEEP,
    Action,
    Disposal,
    DisposalState,
    OnDone,
    Version,
    VersionStatus,
)
from workers.protocol import Result, Status

# Logs of a few shapes: nested folders, an archive, a name that is not UTF-8.
LOGS = {
    b"top.log": b"ERROR a\nok\n",
    b"host-01/app.log": b"INFO x\nFATAL y\nERROR z\n",
    b"host-02/deep/app.log.1.gz": gzip.compress(b"CRITICAL c\n" * 7 + b"fine\n"),
    b"host-02/caf\xe9.log": b"no newline at the end ERROR",
}


def _plant(root: Path, logs: dict[bytes, bytes] = LOGS) -> dict[bytes, int]:
    """Write ``logs`` under ``root`` with old mtimes; returns each file's mtime_ns."""
    mtimes = {}
    for rel, data in logs.items():
        path = os.path.join(os.fsencode(root), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789 + len(rel)))
        mtimes[rel] = os.stat(path).st_mtime_ns
    return mtimes


def _files_under(folder: Path) -> set[bytes]:
    top = os.fsencode(folder)
    return {
        os.path.relpath(os.path.join(d, name), top)
        for d, _, names in os.walk(top)
        for name in names
    }


def _counts(rel: bytes, data: bytes) -> tuple[int, int]:
    return reference_counts(gzip.decompress(data) if rel.endswith(b".gz") else data)


def _summary(state: Path) -> dict[str, dict[str, Any]]:
    shown = logdispatch("summary", "--state", str(state), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    return {f["path"]: f for f in json.loads(shown.stdout)["files"]}


def _name(rel: bytes) -> str:
    return rel.decode("utf-8", "backslashreplace")  # as summaries show it


def _ledger(state: Path, sql: str) -> list[tuple[Any, ...]]:
    with contextlib.closing(sqlite3.connect(state / "ledger.sqlite3")) as db:
        return db.execute(sql).fetchall()


def _versions(state: Path) -> dict[bytes, list[str]]:
    """Every version in the ledger, as statuses per path, oldest first."""
    found: dict[bytes, list[str]] = {}
    for path, status in _ledger(state, "SELECT path, status FROM versions ORDER BY id"):
        found.setdefault(bytes(path), []).append(status)
    return found


def _known(root: Path, state: Path) -> dict[bytes, tuple[int, int]]:
    """What a master starting on ``state`` loads as known (size, mtime_ns) per path."""
    with contextlib.closing(Ledger(state, root.resolve())) as ledger:
        return ledger.known_versions()


def _run_once(root: Path, state: Path, *extra: str) -> Any:
    return logdispatch("run", str(root), "--once", "--state", str(state), "--settle", "0", *extra)


# --- run --once ----------------------------------------------------------------------------


def test_run_once_deletes_what_it_counted_and_keeps_the_counts(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    _plant(root)
    run = _run_once(root, state, "--on-done", "delete")
    assert run.returncode == 0, run.stderr
    assert _files_under(root) == set()
    assert (root / "host-02/deep").is_dir()  # folders stay: writers may be about to use them
    assert "done, deleted" in run.stdout
    files = _summary(state)
    assert set(files) == {_name(rel) for rel in LOGS}
    for rel, data in LOGS.items():
        entry = files[_name(rel)]
        assert (entry["status"], entry["on_done"]) == ("done", "deleted")
        assert (entry["lines"], entry["error_lines"]) == _counts(rel, data)

    again = _run_once(root, state, "--on-done", "delete")  # nothing new is recorded for them
    assert again.returncode == 0, again.stderr
    assert _summary(state) == files
    assert sorted(_ledger(state, "SELECT status, on_done_state FROM versions")) == [
        ("done", "done")
    ] * len(LOGS)


def test_a_restarted_master_has_forgotten_the_files_it_deleted(tmp_path: Path) -> None:
    """Deleted files are not loaded at the next start: a file arriving at one of their paths is
    a new one, counted even with the very bytes and mtime of the file deleted there."""
    root, state = tmp_path / "root", tmp_path / "state"
    _plant(root)
    run = _run_once(root, state, "--on-done", "delete")
    assert run.returncode == 0, run.stderr
    assert _files_under(root) == set()
    assert _known(root, state) == {}

    mtimes = _plant(root)  # the same names, bytes and mtimes
    again = _run_once(root, state)  # --on-done keep
    assert again.returncode == 0, again.stderr
    assert _files_under(root) == set(LOGS)
    assert _versions(state) == {rel: ["done", "done"] for rel in LOGS}
    files = _summary(state)
    for rel, data in LOGS.items():
        entry = files[_name(rel)]
        assert (entry["status"], entry["on_done"], entry["lines"], entry["error_lines"]) == (
            "done",
            None,
            *_counts(rel, data),
        )
    # Kept, they are known again, and counted no more.
    assert _known(root, state) == {rel: (len(data), mtimes[rel]) for rel, data in LOGS.items()}
    third = _run_once(root, state)
    assert third.returncode == 0, third.stderr
    assert _versions(state) == {rel: ["done", "done"] for rel in LOGS}


def test_files_left_in_the_root_stay_known_at_the_next_start(tmp_path: Path) -> None:
    """A kept file, one whose move failed and one that failed to count are still in ROOT: the
    next master knows them and counts none of them again. Only the moved file is forgotten."""
    root, state, archive = tmp_path / "root", tmp_path / "state", tmp_path / "archive"
    kept = {b"kept.log": b"INFO kept\n"}
    mtimes = _plant(root, kept)
    first = _run_once(root, state)
    assert first.returncode == 0, first.stderr
    archive.mkdir()
    (archive / "host-01").write_bytes(b"in the way\n")  # where the move must make a folder
    logs = {
        b"host-01/app.log": b"ERROR stuck\n",
        b"moved.log": b"ERROR gone\n",
        b"broken.log.gz": gzip.compress(b"ERROR x\n" * 1000)[:-30],
    }
    mtimes.update(_plant(root, logs))
    second = _run_once(root, state, "--on-done", f"move:{archive}", "--max-attempts", "1")
    assert second.returncode == 1  # broken.log.gz failed
    assert _files_under(root) == {b"kept.log", b"host-01/app.log", b"broken.log.gz"}
    files = _summary(state)
    assert files["host-01/app.log"]["on_done"].startswith("move failed: cannot create")
    assert files["broken.log.gz"]["status"] == "failed"
    assert files["moved.log"]["on_done"] == f"moved to {archive}/moved.log"
    still_there = {**kept, **logs}
    del still_there[b"moved.log"]
    expected = {rel: (len(data), mtimes[rel]) for rel, data in still_there.items()}
    assert _known(root, state) == expected

    third = _run_once(root, state)  # retries the failed move, which fails again
    assert third.returncode == 1
    assert _files_under(root) == set(still_there)
    assert _versions(state) == {
        b"kept.log": ["done"],
        b"host-01/app.log": ["done"],
        b"moved.log": ["done"],
        b"broken.log.gz": ["failed"],
    }
    assert _known(root, state) == expected


def test_run_once_moves_into_the_archive_keeping_the_tree(tmp_path: Path) -> None:
    root, state, archive = tmp_path / "root", tmp_path / "state", tmp_path / "archive"
    mtimes = _plant(root)
    run = _run_once(root, state, "--on-done", f"move:{archive}")
    assert run.returncode == 0, run.stderr
    assert _files_under(root) == set()
    assert _files_under(archive) == set(LOGS)
    files = _summary(state)
    for rel, data in LOGS.items():
        moved = os.path.join(os.fsencode(archive), rel)
        with open(moved, "rb") as f:
            assert f.read() == data
        assert os.stat(moved).st_mtime_ns == mtimes[rel]
        entry = files[_name(rel)]
        assert entry["on_done"] == f"moved to {archive}/{_name(rel)}"
        assert (entry["status"], entry["lines"], entry["error_lines"]) == (
            "done",
            *_counts(rel, data),
        )
    assert "done, moved" in run.stdout


def test_a_name_taken_in_the_archive_is_never_overwritten(tmp_path: Path) -> None:
    root, state, archive = tmp_path / "root", tmp_path / "state", tmp_path / "archive"
    taken = {
        b"host/app.log": b"archived last week\n",
        b"host/app.1.log": b"archived the week before\n",
        b"x.log.gz": gzip.compress(b"older\n"),
    }
    _plant(archive, taken)
    arriving = {b"host/app.log": b"ERROR today\n", b"x.log.gz": gzip.compress(b"FATAL new\n")}
    _plant(root, arriving)
    run = _run_once(root, state, "--on-done", f"move:{archive}")
    assert run.returncode == 0, run.stderr
    for rel, data in taken.items():
        assert (archive / os.fsdecode(rel)).read_bytes() == data
    assert (archive / "host/app.2.log").read_bytes() == arriving[b"host/app.log"]
    assert (archive / "x.log.1.gz").read_bytes() == arriving[b"x.log.gz"]
    assert _files_under(root) == set()
    files = _summary(state)
    assert files["host/app.log"]["on_done"] == f"moved to {archive}/host/app.2.log"
    assert files["x.log.gz"]["on_done"] == f"moved to {archive}/x.log.1.gz"


def test_failed_files_are_never_moved_or_deleted(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    broken = gzip.compress(b"ERROR x\n" * 1000)[:-30]
    _plant(root, {b"good.log": b"ERROR fine\n", b"broken.log.gz": broken})
    run = _run_once(root, state, "--on-done", "delete", "--max-attempts", "1")
    assert run.returncode == 1
    assert _files_under(root) == {b"broken.log.gz"}
    assert (root / "broken.log.gz").read_bytes() == broken
    files = _summary(state)
    assert (files["broken.log.gz"]["status"], files["broken.log.gz"]["on_done"]) == ("failed", None)
    assert (files["good.log"]["status"], files["good.log"]["on_done"]) == ("done", "deleted")


def test_bad_on_done_settings_are_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    _plant(root)
    (tmp_path / "a-file").write_bytes(b"not a folder\n")
    refused = {
        f"move:{root}/archive": "is inside the watched root",
        f"move:{root}": "is inside the watched root",
        f"move:{tmp_path}/a-file": "cannot create or write to it: File exists",
        f"move:{tmp_path}/a-file/below": "cannot create or write to it: Not a directory",
        "remove": "--on-done must be keep, delete or move:DIR, not 'remove'",
        "move:": "--on-done must be keep, delete or move:DIR",
    }
    for value, reason in refused.items():
        run = _run_once(root, state, "--on-done", value)
        assert run.returncode == 2, value
        assert run.stderr.startswith("logdispatch run: error: --on-done") and reason in run.stderr
        assert run.stderr.count("\n") == 1 and "Traceback" not in run.stderr
    monkeypatch.setenv("LOGDISPATCH_AUTHKEY", "a key")
    served = logdispatch(
        "serve", str(root), "--state", str(state), "--on-done", f"move:{root}/host-01/old",
        "--address", f"127.0.0.1:{free_port()}",  # the default port may be another's
    )  # fmt: skip
    assert served.returncode == 2
    assert "logdispatch serve: error: --on-done" in served.stderr
    assert "inside the watched root" in served.stderr
    assert not state.exists() and not (root / "archive").exists()
    assert _files_under(root) == set(LOGS)


# --- serve and work ------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["delete", "move"])
def test_serve_and_work_act_on_files_as_they_are_counted(cluster: Cluster, action: str) -> None:
    archive = cluster.tmp / "archive"
    setting = "delete" if action == "delete" else f"move:{archive}"
    master = cluster.serve("--on-done", setting)
    cluster.work()
    _plant(cluster.root)
    expected = "deleted" if action == "delete" else f"moved to {archive}/"

    def acted(*paths: bytes) -> bool:
        files = cluster.files()
        return all(
            str(files.get(_name(rel), {}).get("on_done")).startswith(expected) for rel in paths
        )

    wait_for(lambda: acted(*LOGS))
    assert _files_under(cluster.root) == set()
    assert _files_under(archive) == (set(LOGS) if action == "move" else set())
    late = {b"host-03/late.log": b"ERROR late\n"}  # the master goes on after acting
    _plant(cluster.root, late)
    wait_for(lambda: acted(*late))
    assert _files_under(cluster.root) == set()
    files = cluster.files()
    for rel, data in {**LOGS, **late}.items():
        entry = files[_name(rel)]
        assert (entry["status"], entry["lines"], entry["error_lines"]) == (
            "done",
            *_counts(rel, data),
        )
    # The watcher saw the links and deletions; neither made the master record anything new.
    assert all(statuses == ["done"] for statuses in cluster.versions().values())
    assert "Traceback" not in master.output


def test_a_failed_move_is_recorded_then_finished_at_the_next_start(cluster: Cluster) -> None:
    """A move that cannot be made (a file stands where its folder must be) fails, is recorded,
    and leaves the master running; the master is then SIGKILLed, the obstacle removed, and the
    next master, whatever its own --on-done, makes the move recorded with the counts."""
    archive = cluster.tmp / "archive"
    archive.mkdir()
    (archive / "host-01").write_bytes(b"in the way\n")
    _plant(cluster.root)
    master = cluster.serve("--on-done", f"move:{archive}")
    cluster.work()

    def blocked() -> str:
        return str((cluster.files().get("host-01/app.log") or {}).get("on_done") or "")

    wait_for(lambda: blocked() == f"move failed: cannot create {archive}/host-01: File exists")

    def all_acted() -> bool:
        after = [str(f["on_done"]) for f in cluster.files().values()]
        return len(after) == len(LOGS) and not any(a.startswith(("None", "pending")) for a in after)

    wait_for(all_acted)
    assert _files_under(cluster.root) == {b"host-01/app.log"}
    assert cluster.files()["host-01/app.log"]["status"] == "done"  # its counts stand
    assert master.popen.poll() is None and "host-01/app.log: move failed" in master.output
    master.signal(signal.SIGKILL)
    master.wait()

    (archive / "host-01").unlink()
    restarted = cluster.serve()  # --on-done keep: the recorded intent still holds
    wait_for(lambda: blocked() == f"moved to {archive}/host-01/app.log")
    assert _files_under(cluster.root) == set()
    assert (archive / "host-01/app.log").read_bytes() == LOGS[b"host-01/app.log"]
    assert "finishing 1 moves or deletions recorded in the ledger" in restarted.output
    assert all(statuses == ["done"] for statuses in cluster.versions().values())


def test_master_killed_between_commit_and_action_finishes_on_restart(cluster: Cluster) -> None:
    """SIGKILL while files are counted and moved: the last commit's moves are pending, some made
    on disk and some not. The next master (with --on-done keep) finishes them, never twice."""
    archive = cluster.tmp / "archive"
    logs = {b"host-%02d/app-%05d.log" % (i % 10, i): b"ERROR %d\nok\n" % i for i in range(4000)}
    _plant(cluster.root, logs)
    master = cluster.serve("--on-done", f"move:{archive}")
    cluster.work()

    def pending() -> int:
        sql = "SELECT count(*) FROM versions WHERE on_done_state = 'pending'"
        return int(_ledger(cluster.state, sql)[0][0]) if cluster.state.exists() else 0

    wait_for(lambda: pending() > 0, timeout=30, interval=0.01)
    master.signal(signal.SIGKILL)
    master.wait()
    rows = _ledger(cluster.state, "SELECT path, status, on_done_state FROM versions")
    intended = {bytes(path) for path, _, state in rows if state is not None}
    assert [state for _, _, state in rows].count("pending") > 0
    assert len(intended) < len(logs), "the kill came after every file was counted"
    # Nothing was moved before its counts were committed with the intent to move it.
    assert _files_under(archive) <= intended
    assert _files_under(archive) | _files_under(cluster.root) == set(logs)

    cluster.serve()  # --on-done keep

    def settled() -> bool:
        sql = "SELECT count(*) FROM versions WHERE status = 'done' AND " + (
            "(on_done_state IS NULL OR on_done_state = 'done')"
        )
        return int(_ledger(cluster.state, sql)[0][0]) == len(logs)

    wait_for(settled, timeout=60)
    assert _files_under(archive) == intended  # every one at its own name: none moved twice
    assert _files_under(cluster.root) == set(logs) - intended  # counted by the new master: kept
    for rel in intended:
        with open(os.path.join(os.fsencode(archive), rel), "rb") as f:
            assert f.read() == logs[rel]
    assert all(statuses == ["done"] for statuses in cluster.versions().values())
    totals = cluster.summary()["totals"]
    assert (totals["done"], totals["lines"], totals["error_lines"]) == (4000, 8000, 4000)


# --- the master, step by step --------------------------------------------------------------


@pytest.fixture
def deleting(tmp_path: Path) -> Iterator[Harness]:
    h = Harness(tmp_path, on_done=OnDone.parse("delete"))
    try:
        yield h
    finally:
        h.close()


def test_a_file_appended_to_after_counting_is_not_deleted(deleting: Harness) -> None:
    log = deleting.root / "app.log"
    _old_file(log, b"ERROR first\n")
    master = deleting.start()
    deleting.step_until(lambda: master.scan_complete)
    [task] = deleting.take("w1")
    with open(log, "ab") as f:  # appended after the worker counted it, before the master acts
        f.write(b"ERROR second\n")
    deleting.report(task, "w1", Status.DONE, lines=1, error_lines=1)
    deleting.step_until(
        lambda: deleting.files()["app.log"]["on_done"] not in (None, "pending: delete")
    )
    assert deleting.files()["app.log"]["on_done"] == "left in place: changed since it was counted"
    assert log.read_bytes() == b"ERROR first\nERROR second\n"

    newer: list[Any] = []
    for _ in range(100):  # the new version settles (on the fake clock), is queued and taken
        deleting.clock.now += 1
        newer = deleting.take("w1")
        if newer:
            break
        time.sleep(0.02)
    assert newer[0].size == len(b"ERROR first\nERROR second\n")
    deleting.report(newer[0], "w1", Status.DONE, lines=2, error_lines=2)
    deleting.step_until(lambda: deleting.files()["app.log"]["on_done"] == "deleted")
    assert not log.exists()
    assert deleting.files()["app.log"]["lines"] == 2


# --- one action, on real files -------------------------------------------------------------


class _Files:
    """A root and an archive, and Disposals of the files in the root as they are now."""

    def __init__(self, root: Path, archive: Path) -> None:
        self.root, self.archive = root, archive
        root.mkdir(parents=True, exist_ok=True)
        self.disposer = Disposer(os.fsencode(root), lambda _: None)

    def add(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_987_654_321))
        return path

    def disposal(self, rel: str, action: Action, size: int = -1, mtime_ns: int = -1) -> Disposal:
        if size < 0:
            st = os.stat(self.root / rel)
            size, mtime_ns = st.st_size, st.st_mtime_ns
        archive = os.fsencode(self.archive) if action is Action.MOVE else None
        return Disposal(Version(7, os.fsencode(rel), size, mtime_ns), action, archive)

    def dispose(self, disposal: Disposal) -> tuple[DisposalState, str]:
        vid, state, note = self.disposer.dispose(disposal)
        assert vid == disposal.version.id
        return state, note


def test_each_action_is_idempotent(tmp_path: Path) -> None:
    files = _Files(tmp_path / "root", tmp_path / "archive")
    moved = f"moved to {tmp_path}/archive/a/x.log"

    files.add("gone.log", b"x\n")
    counted = files.disposal("gone.log", Action.DELETE)
    assert files.dispose(counted) == (DisposalState.DONE, "deleted")
    assert files.dispose(counted) == (DisposalState.DONE, "deleted")  # already gone

    source = files.add("a/x.log", b"ERROR 1\n")
    counted = files.disposal("a/x.log", Action.MOVE)
    (tmp_path / "archive/a").mkdir(parents=True)
    os.link(source, tmp_path / "archive/a/x.log")  # the link made before a crash, not the unlink
    assert files.dispose(counted) == (DisposalState.DONE, moved)
    assert not source.exists()
    assert files.dispose(counted) == (DisposalState.DONE, moved)  # done already: found there
    assert _files_under(tmp_path / "archive") == {b"a/x.log"}  # never a second copy

    files.add("b.log", b"abc\n")
    gone = files.disposal("b.log", Action.MOVE)
    (tmp_path / "root/b.log").unlink()  # removed by someone else before it could be moved
    assert files.dispose(gone) == (DisposalState.SKIPPED, "gone before it could be moved")


def test_a_changed_file_is_left_alone_by_either_action(tmp_path: Path) -> None:
    files = _Files(tmp_path / "root", tmp_path / "archive")
    path = files.add("c.log", b"one\n")
    for action in (Action.DELETE, Action.MOVE):
        stale = files.disposal("c.log", action, size=3, mtime_ns=os.stat(path).st_mtime_ns)
        assert files.dispose(stale) == (
            DisposalState.SKIPPED,
            "left in place: changed since it was counted",
        )
    assert path.read_bytes() == b"one\n"
    assert not (tmp_path / "archive").exists()


def test_a_move_to_another_filesystem_copies_then_removes(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's tmp_path")
    with tempfile.TemporaryDirectory(dir=shm) as elsewhere:
        files = _Files(tmp_path / "root", Path(elsewhere))
        source = files.add("h/y.log", b"ERROR across\n" * 1000)
        mtime_ns = source.stat().st_mtime_ns
        counted = files.disposal("h/y.log", Action.MOVE)
        # A copy with the same bytes and mtime, as a crash after its link would leave it.
        Path(elsewhere, "h").mkdir()
        Path(elsewhere, "h/y.log").write_bytes(source.read_bytes())
        os.utime(Path(elsewhere, "h/y.log"), ns=(mtime_ns, mtime_ns))
        assert files.dispose(counted) == (DisposalState.DONE, f"moved to {elsewhere}/h/y.log")
        assert not source.exists()
        assert _files_under(Path(elsewhere)) == {b"h/y.log"}

        source = files.add("h/y.log", b"ERROR another day\n")  # same name, other content
        assert files.dispose(files.disposal("h/y.log", Action.MOVE)) == (
            DisposalState.DONE,
            f"moved to {elsewhere}/h/y.1.log",
        )
        copied = Path(elsewhere, "h/y.1.log")
        assert copied.read_bytes() == b"ERROR another day\n"
        assert copied.stat().st_mtime_ns == mtime_ns
        assert not source.exists()
        assert _files_under(Path(elsewhere)) == {b"h/y.log", b"h/y.1.log"}  # no temporary left


def test_known_versions_leave_out_only_the_files_moved_or_deleted(tmp_path: Path) -> None:
    """What a master loads at start-up: the latest live version of every path, unless
    --on-done moved or deleted it; pending, failed and skipped disposals stay, as kept files do."""
    delete, move = OnDone(Action.DELETE), OnDone(Action.MOVE, b"/archive")
    with contextlib.closing(Ledger(tmp_path / "state", tmp_path)) as ledger:

        def counted(
            path: bytes, size: int, on_done: OnDone = KEEP, disposal: DisposalState | None = None
        ) -> None:
            vid = ledger.add_version(path, size, 1000 + size, 0.0)
            ledger.record_result(Result(vid, 1, "w1", Status.DONE, lines=1), 1.0, on_done)
            if disposal is not None:
                ledger.record_disposals([(vid, disposal, "what became of it")])

        counted(b"kept.log", 1)
        counted(b"deleted.log", 2, delete, DisposalState.DONE)
        counted(b"moved.log", 3, move, DisposalState.DONE)
        counted(b"pending.log", 4, delete)
        counted(b"failed.log", 5, move, DisposalState.FAILED)
        counted(b"skipped.log", 6, delete, DisposalState.SKIPPED)
        counted(b"again.log", 7)  # kept, then a newer version deleted: the older is not known
        counted(b"again.log", 8, delete, DisposalState.DONE)
        counted(b"back.log", 9, delete, DisposalState.DONE)  # deleted, then a new file, kept
        counted(b"back.log", 10)
        counted(b"brief.log", 11, delete, DisposalState.DONE)  # then one that vanished
        vanished = ledger.add_version(b"brief.log", 12, 1012, 0.0)
        ledger.record_end(vanished, VersionStatus.VANISHED, "gone", 1.0)
        ledger.commit()
        sizes = {b"kept.log": 1, b"pending.log": 4, b"failed.log": 5, b"skipped.log": 6}
        expected = {path: (size, 1000 + size) for path, size in {**sizes, b"back.log": 10}.items()}
        assert ledger.known_versions() == expected
    assert _known(tmp_path, tmp_path / "state") == expected


def test_a_ledger_from_before_on_done_is_read_then_migrated(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(state / "ledger.sqlite3")
    db.executescript(SCHEMA)
    for column in ("on_done", "on_done_dir", "on_done_state", "on_done_note"):
        db.execute(f"ALTER TABLE versions DROP COLUMN {column}")
    db.execute("INSERT INTO meta VALUES ('root', ?)", (str(tmp_path),))
    db.execute(
        "INSERT INTO versions (id, path, size, mtime_ns, status, lines, error_lines, seen_at) "
        "VALUES (1, x'612e6c6f67', 5, 0, 'done', 3, 1, 0)"
    )
    db.commit()
    db.close()
    before = _summary(state)  # read-only: no migration
    assert (before["a.log"]["lines"], before["a.log"]["on_done"]) == (3, None)
    with contextlib.closing(Ledger(state, tmp_path)) as ledger:  # as a master starts
        assert ledger.known_versions() == {b"a.log": (5, 0)}
    assert _summary(state) == before
    assert _ledger(state, "SELECT on_done, on_done_dir, on_done_state, on_done_note "
                   "FROM versions") == [(None, None, None, None)]  # fmt: skip


def test_a_move_that_would_land_inside_the_root_is_refused(tmp_path: Path) -> None:
    """ROOT inside the archive: ARCHIVE/<path> may fall inside ROOT, where it would be counted
    again; that move fails and the file stays."""
    archive = tmp_path / "archive"
    files = _Files(archive / "incoming", archive)
    path = files.add("incoming/x.log", b"ERROR x\n")
    state, note = files.dispose(files.disposal("incoming/x.log", Action.MOVE))
    assert state is DisposalState.FAILED
    assert note == f"move failed: {archive}/incoming/x.log would be inside the watched root"
    assert path.read_bytes() == b"ERROR x\n"
    assert _files_under(archive) == {b"incoming/incoming/x.log"}
