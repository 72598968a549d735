"""The worker's side of a task: mapping the path under --root, refusing, and reporting."""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

import pytest
from conftest import as_unprivileged, open_versions

from dispatcher.transport.taskqueue import TaskQueue
from dispatcher.versions import Rules, Version
from workers.matching import DEFAULT_ERROR_PATTERN
from workers.protocol import Status, Task
from workers.worker import Worker, WorkerConfig


def _worker(root: Path) -> Worker:
    return Worker(WorkerConfig(("127.0.0.1", 1), b"k", root=os.fsencode(root)))


def _task(root: Path, rel: bytes, task_id: int = 1) -> Task:
    st = os.lstat(os.path.join(os.fsencode(root), rel))
    return Task(task_id, rel, st.st_size, st.st_mtime_ns, 1, DEFAULT_ERROR_PATTERN)


def test_counts_a_file_under_its_own_root(tmp_path: Path) -> None:
    (tmp_path / "host").mkdir()
    (tmp_path / "host/a.log").write_bytes(b"ERROR a\nok\n")
    result = _worker(tmp_path).count(_task(tmp_path, b"host/a.log"))
    assert (result.status, result.lines, result.error_lines) == (Status.DONE, 2, 1)
    assert result.samples == (b"ERROR a",)


@pytest.mark.parametrize("path", [b"../etc/passwd", b"/etc/passwd", b"a/../../x", b"a//b", b""])
def test_paths_leaving_the_root_are_refused(tmp_path: Path, path: bytes) -> None:
    task = Task(7, path, 1, 1, 1, DEFAULT_ERROR_PATTERN)
    result = _worker(tmp_path).count(task)
    assert result.status is Status.ERROR
    assert "leaves the root" in (result.error or "")


def test_symlinks_are_not_followed_anywhere_on_the_path(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.log").write_bytes(b"ERROR secret\n")
    root = tmp_path / "root"
    root.mkdir()
    os.symlink(outside, root / "linkdir")
    os.symlink(outside / "secret.log", root / "link.log")
    worker = _worker(root)
    for rel in (b"linkdir/secret.log", b"link.log"):
        task = Task(1, rel, 13, 0, 1, DEFAULT_ERROR_PATTERN)
        result = worker.count(task)
        assert result.status is Status.ERROR, rel
        assert "symbolic link" in (result.error or "")


def test_symlinked_folder_inside_the_root_and_a_root_reached_by_a_symlink(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "real/a.log").write_bytes(b"ERROR a\n")
    os.symlink("real", root / "alias")  # stays inside the root, but is still a symlink
    os.symlink(root, tmp_path / "root-link")
    task = _task(root, b"real/a.log")
    refused = _worker(root).count(dataclasses.replace(task, path=b"alias/a.log"))
    assert refused.status is Status.ERROR and "symbolic link" in (refused.error or "")
    for given in (root, tmp_path / "root-link", Path(f"{root}/")):
        result = _worker(given).count(task)
        assert (result.status, result.error_lines) == (Status.DONE, 1), given


def test_fifo_unreadable_missing_and_changed_files(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    os.mkfifo(tmp_path / "pipe.log")
    fifo = worker.count(Task(1, b"pipe.log", 0, 0, 1, DEFAULT_ERROR_PATTERN))
    assert (fifo.status, fifo.error) == (Status.ERROR, "not a regular file")

    missing = worker.count(Task(2, b"gone.log", 0, 0, 1, DEFAULT_ERROR_PATTERN))
    assert missing.status is Status.VANISHED

    log = tmp_path / "app.log"
    log.write_bytes(b"ERROR one\n")
    task = _task(tmp_path, b"app.log")
    log.write_bytes(b"ERROR one\nERROR two\n")
    assert worker.count(task).status is Status.CHANGED


def test_unreadable_file_is_an_error_result(public_dir: Path) -> None:
    log = public_dir / "secret.log"
    log.write_bytes(b"ERROR hidden\n")
    log.chmod(0)
    task = _task(public_dir, b"secret.log")
    worker = _worker(public_dir)
    denied = as_unprivileged(lambda: worker.count(task))
    assert (denied.status, denied.error) == (Status.ERROR, "Permission denied")


def test_take_batches_by_count_and_bytes_and_release_returns_work() -> None:
    versions = open_versions(
        *[Version(i, f"{i}.log".encode(), size=10, mtime_ns=1) for i in range(5)],
        Version(5, b"big.log", size=1000, mtime_ns=1),
    )
    queue = TaskQueue(b"/r", Rules(b"ERROR"), versions.get, secret=b"k" * 32)
    for version_id in versions:
        queue.put(version_id)
    assert [t.id for t in queue.take("w", 2, 1 << 20, 0)] == [0, 1]
    assert [t.id for t in queue.take("w", 10, 25, 0)] == [2, 3]  # third would pass 25 bytes
    batch = queue.take("w", 10, 25, 0)
    assert [t.id for t in batch] == [4]  # the big one alone would pass too: next batch
    [big] = queue.take("w", 10, 25, 0)
    assert big.id == 5  # a batch always holds at least one task
    queue.release("w", [(big.id, big.lease)])
    [again] = queue.take("w2", 10, 25, 0)
    assert (again.id, again.attempt) == (5, 1)  # a hand-back is not an attempt


def test_a_waiting_take_gets_the_whole_scan_batch() -> None:
    """New work arrives in one put: a worker waiting for it gets a full batch, not one file."""
    versions = open_versions(*[Version(i, f"{i}.log".encode(), 10, 1) for i in range(50)])
    queue = TaskQueue(b"/r", Rules(b"ERROR"), versions.get, secret=b"k" * 32)
    batches: list[list[Task]] = []
    taker = threading.Thread(target=lambda: batches.append(queue.take("w", 100, 1 << 20, 5)))
    taker.start()
    time.sleep(0.2)  # waiting in take()
    queue.put_many(list(versions))
    taker.join(5)
    assert [len(b) for b in batches] == [50]
