"""Counted files that leave the root: marked gone with the time it was noticed, their counts kept
in every total; back as they were, there again and not counted twice."""

from __future__ import annotations

import datetime
import json
import os
import queue
from pathlib import Path

from conftest import Cluster, logdispatch, wait_for

from dispatcher.inbox import Inbox, Scanned
from dispatcher.watch.scanner import Eligibility, Scanner

OLD = 1_600_000_000  # an mtime long past: the file has settled


def _log(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (OLD, OLD))


def _gone(cluster: Cluster, name: str) -> str | None:
    gone: str | None = cluster.files()[name]["gone"]
    return gone


def test_a_deleted_file_is_gone_at_once_and_back_as_it_was_is_not_counted_again(
    cluster: Cluster,
) -> None:
    _log(cluster.root / "app" / "a.log", b"ERROR 1\nok\n")
    _log(cluster.root / "b.log", b"ERROR 2\n")
    cluster.serve()  # events on, and no rescan within the test: the event tells
    cluster.work()
    wait_for(lambda: cluster.summary()["totals"].get("done") == 2)
    (cluster.root / "app" / "a.log").unlink()
    wait_for(lambda: _gone(cluster, "app/a.log") is not None)
    noticed = datetime.datetime.fromisoformat(_gone(cluster, "app/a.log") or "")
    assert noticed.tzinfo is not None
    totals = cluster.summary()["totals"]
    # Gone is not uncounted: its lines stay in every total.
    assert (totals["lines"], totals["error_lines"], totals["gone"]) == (3, 2, 1)
    assert cluster.files()["app/a.log"]["status"] == "done" and _gone(cluster, "b.log") is None
    # Put back as it was (a share remounted, a restore): there again, and read no second time.
    _log(cluster.root / "app" / "a.log", b"ERROR 1\nok\n")
    wait_for(lambda: _gone(cluster, "app/a.log") is None)
    assert cluster.versions()[b"app/a.log"] == ["done"]
    assert cluster.summary()["totals"]["gone"] == 0
    assert cluster.master is not None and "app/a.log is gone from the root" in cluster.master.output


def test_without_events_a_rescan_notices_what_is_gone(cluster: Cluster) -> None:
    _log(cluster.root / "a.log", b"ERROR 1\n")
    _log(cluster.root / "keep" / "b.log", b"ok\n")
    cluster.serve("--no-events", "--rescan", "1")
    cluster.work()
    wait_for(lambda: cluster.summary()["totals"].get("done") == 2)
    (cluster.root / "a.log").rename(cluster.tmp / "elsewhere.log")  # moved out of the root
    wait_for(lambda: _gone(cluster, "a.log") is not None, timeout=30)
    assert _gone(cluster, "keep/b.log") is None
    assert cluster.summary()["totals"]["lines"] == 2


def _run_once(root: Path, state: Path, *extra: str) -> None:
    done = logdispatch("run", str(root), "--once", "--state", str(state), "--settle", "0", *extra)
    assert done.returncode == 0, done.stderr


def _files(state: Path) -> dict[str, dict[str, object]]:
    shown = logdispatch("summary", "--state", str(state), "--format", "json")
    return {f["path"]: f for f in json.loads(shown.stdout)["files"]}


def test_files_the_master_moves_or_deletes_itself_are_not_gone(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    _log(root / "a.log", b"ERROR 1\n")
    _run_once(root, state, "--on-done", "delete")
    _run_once(root, state, "--on-done", "delete")
    [entry] = _files(state).values()
    assert (entry["on_done"], entry["gone"]) == ("deleted", None)


def test_files_the_naming_rules_no_longer_take_are_not_gone(tmp_path: Path) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    _log(root / "a.log", b"ERROR 1\n")
    _log(root / "notes.txt", b"ERROR 2\n")
    _run_once(root, state)
    (root / "a.log").unlink()
    _run_once(root, state, "--include", "*.log")  # notes.txt is not looked for any more
    files = _files(state)
    assert files["a.log"]["gone"] is not None
    assert files["notes.txt"]["gone"] is None


def test_a_scan_that_could_not_list_the_root_concludes_nothing(tmp_path: Path) -> None:
    inbox: Inbox = queue.SimpleQueue()
    scanner = Scanner(os.fsencode(tmp_path / "not-there"), Eligibility(), inbox)
    scanner.scan()
    last = inbox.get_nowait()
    assert isinstance(last, Scanned) and last.complete and last.full and last.missed
    (tmp_path / "there").mkdir()
    scanner = Scanner(os.fsencode(tmp_path / "there"), Eligibility(), inbox)
    scanner.scan()
    last = inbox.get_nowait()
    assert isinstance(last, Scanned) and last.complete and not last.missed
