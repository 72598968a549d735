"""The master's bookkeeping, driven step by step with a fake clock.

The test plays the worker, either through a real DispatchManager client on loopback, so leases,
results and restarts go through the same queue and ledger a remote worker would reach, or (the
"in-process" runs) by calling the master's own task queue and result sink, through a server
factory that opens no socket: the master's bookkeeping does not depend on the transport.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port

from dispatcher.master.config import MasterConfig
from dispatcher.master.loop import Master
from dispatcher.master.services import Server
from dispatcher.transport.server import ResultSink, StatusService
from dispatcher.transport.taskqueue import TaskQueue
from dispatcher.views.summary import build
from workers.errors import ConfigError
from workers.protocol import DispatchManager, Result, Status, Task

KEY = b"test-key"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _old_file(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.utime(path, (1_600_000_000, 1_600_000_000))  # long settled


class InProcess:
    """A server without sockets: the test calls the task queue and the result sink itself."""

    address = ("127.0.0.1", 0)

    def __init__(self, tasks: TaskQueue, sink: ResultSink, status: StatusService) -> None:
        self.tasks, self.sink, self.status = tasks, sink, status
        self.running = False

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False


class Harness:
    def __init__(self, tmp_path: Path, sockets: bool = True, **options: Any) -> None:
        self.sockets = sockets
        self.server: InProcess | None = None
        self.root = tmp_path / "root"
        self.root.mkdir(exist_ok=True)
        self.state = tmp_path / "state"
        self.clock = FakeClock()
        # Every step commits, so what a step did is in the ledger for the test to read.
        self.options = {"lease": 10.0, "max_attempts": 3, "commit_interval": 0.0, **options}
        self.master: Master | None = None

    def start(self) -> Master:
        config = MasterConfig(
            root=self.root,
            authkey=KEY,
            address=("127.0.0.1", 0),
            state_dir=self.state,
            **self.options,
        )
        if self.sockets:
            self.master = Master(config, clock=self.clock)
            self.master.start()
            manager = DispatchManager(address=self.master.address, authkey=KEY)
            manager.connect()
            self.tasks: Any = manager.get_task_queue()  # type: ignore[attr-defined]
            self.results: Any = manager.get_result_queue()  # type: ignore[attr-defined]
            return self.master
        self.master = Master(config, serve=self._in_process, clock=self.clock)
        self.master.start()
        assert self.server is not None and self.server.running
        self.tasks, self.results = self.server.tasks, self.server.sink
        return self.master

    def _in_process(
        self, tasks: TaskQueue, sink: ResultSink, status: StatusService, _: Any
    ) -> Server:
        self.server = InProcess(tasks, sink, status)
        return self.server

    def step_until(self, predicate: Any, steps: int = 200) -> None:
        assert self.master is not None
        for _ in range(steps):
            self.master.step(timeout=0.02)
            if predicate():
                return
        pytest.fail("condition not reached")

    def take(self, worker: str) -> list[Task]:
        assert self.master is not None
        batch: list[Task] = self.tasks.take(worker, 10, 1 << 30, 0)
        self.master.step(timeout=0)
        return batch

    def report(self, task: Task, worker: str, status: Status, **fields: Any) -> None:
        assert self.master is not None
        fields.setdefault("lease", task.lease)
        fields.setdefault("bytes_read", 10 * fields.get("lines", 0))  # as a real count has
        self.results.put([Result(task.id, task.attempt, worker, status, **fields)])
        self.master.step(timeout=0.5)

    def files(self) -> dict[str, dict[str, Any]]:
        return {f["path"]: f for f in build(self.state)["files"]}

    def close(self) -> None:
        if self.master is not None:
            del self.tasks, self.results
            self.master.close()
            self.master = None
            assert self.server is None or not self.server.running  # close() stopped it


@pytest.fixture(params=["sockets", "in-process"])
def harness(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Harness]:
    h = Harness(tmp_path, sockets=request.param == "sockets")
    try:
        yield h
    finally:
        h.close()


def test_take_leases_and_expired_lease_goes_to_another_worker(harness: Harness) -> None:
    _old_file(harness.root / "a.log", b"ERROR x\n")
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    [first] = harness.take("w1")
    assert first.attempt == 1 and first.path == b"a.log"
    assert harness.files()["a.log"]["status"] == "leased"
    assert harness.take("w2") == []  # leased, so not handed out twice

    harness.clock.now += 11  # past the lease, no heartbeat
    master.step(timeout=0)
    [second] = harness.take("w2")
    assert (second.id, second.attempt) == (first.id, 2)
    # w1's lease is over; w2's, on the same version, is another one.
    assert harness.tasks.heartbeat("w1", [(first.id, first.lease)], first.id) == [first.id]
    assert harness.tasks.heartbeat("w2", [(second.id, second.lease)], second.id) == []


def test_heartbeat_keeps_a_lease(harness: Harness) -> None:
    _old_file(harness.root / "big.log", b"x\n")
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    [task] = harness.take("w1")
    for _ in range(5):
        harness.clock.now += 6
        assert harness.tasks.heartbeat("w1", [(task.id, task.lease)], task.id) == []
        master.step(timeout=0)
    assert harness.take("w2") == []


def test_first_result_wins_and_late_duplicates_change_nothing(harness: Harness) -> None:
    _old_file(harness.root / "a.log", b"ERROR x\n")
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    [first] = harness.take("w1")
    harness.clock.now += 11
    master.step(timeout=0)
    [second] = harness.take("w2")

    harness.report(first, "w1", Status.DONE, lines=1, error_lines=1)  # the expired attempt
    harness.report(second, "w2", Status.DONE, lines=99, error_lines=99)
    entry = harness.files()["a.log"]
    assert (entry["status"], entry["lines"], entry["worker"]) == ("done", 1, "w1")
    assert harness.tasks.heartbeat("w2", [(second.id, second.lease)], second.id) == [second.id]
    assert master.finished


def test_failing_file_is_retried_with_backoff_then_failed(harness: Harness) -> None:
    _old_file(harness.root / "bad.log.gz", b"\x1f\x8bnot really")
    _old_file(harness.root / "good.log", b"fine\n")
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    batch = harness.take("w1")
    bad = next(t for t in batch if t.path == b"bad.log.gz")
    good = next(t for t in batch if t.path == b"good.log")
    harness.report(bad, "w1", Status.ERROR, error="corrupt gzip data")
    harness.report(good, "w1", Status.DONE, lines=1)
    assert harness.take("w1") == []  # backing off
    harness.clock.now += 1.5
    [again] = harness.take("w1")
    assert again.attempt == 2
    harness.report(again, "w1", Status.ERROR, error="corrupt gzip data")
    harness.clock.now += 2.5
    [last] = harness.take("w1")
    harness.report(last, "w1", Status.ERROR, error="corrupt gzip data (last)")
    files = harness.files()
    assert files["bad.log.gz"]["status"] == "failed"
    assert files["bad.log.gz"]["error"] == "corrupt gzip data (last)"
    assert files["bad.log.gz"]["attempts"] == 3
    assert files["good.log"]["status"] == "done"
    assert master.finished


def test_restart_requeues_unfinished_and_keeps_what_is_done(harness: Harness) -> None:
    _old_file(harness.root / "done.log", b"ERROR a\n")
    _old_file(harness.root / "inflight.log", b"ERROR b\nERROR c\n")
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    batch = {t.path: t for t in harness.take("w1")}
    harness.report(batch[b"done.log"], "w1", Status.DONE, lines=1, error_lines=1)
    harness.close()  # master stops with inflight.log leased

    _old_file(harness.root / "arrived-while-down.log", b"INFO\n")
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    again = {t.path: t for t in harness.take("w2")}
    assert set(again) == {b"inflight.log", b"arrived-while-down.log"}
    inflight = again[b"inflight.log"]
    assert (inflight.id, inflight.attempt) == (batch[b"inflight.log"].id, 1)
    # The old worker's result for the old lease still counts: the task id outlived the restart.
    harness.report(batch[b"inflight.log"], "w1", Status.DONE, lines=2, error_lines=2)
    harness.report(again[b"arrived-while-down.log"], "w2", Status.DONE, lines=1)
    files = harness.files()
    assert {p: f["status"] for p, f in files.items()} == dict.fromkeys(files, "done")
    assert files["done.log"]["worker"] == "w1" and files["inflight.log"]["lines"] == 2


def test_vanished_and_changed_files(harness: Harness) -> None:
    _old_file(harness.root / "gone.log", b"x\n")
    _old_file(harness.root / "moving.log", b"x\n")
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    batch = {t.path: t for t in harness.take("w1")}
    (harness.root / "gone.log").unlink()
    harness.report(batch[b"gone.log"], "w1", Status.VANISHED, error="file not found")
    _old_file(harness.root / "moving.log", b"x\ny\n")  # a new version: new size
    harness.report(batch[b"moving.log"], "w1", Status.CHANGED, error="changed since queued")
    [newer] = harness.take("w1")
    assert newer.path == b"moving.log" and newer.size == 4 and newer.id != batch[b"moving.log"].id
    harness.report(newer, "w1", Status.DONE, lines=2)
    files = harness.files()
    assert files["gone.log"]["status"] == "vanished"
    assert (files["moving.log"]["status"], files["moving.log"]["lines"]) == ("done", 2)


def test_a_file_still_being_written_waits_for_settle(harness: Harness) -> None:
    harness.options["settle"] = 2.0
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    growing = harness.root / "growing.log"
    growing.write_bytes(b"a\n")
    os.utime(growing, ns=(time.time_ns(), time.time_ns()))
    harness.step_until(lambda: b"growing.log" in _settling(master))
    harness.clock.now += 1.0
    with open(growing, "ab") as f:
        f.write(b"b\n")
    master.step(timeout=0.2)
    harness.clock.now += 1.5  # 2.5 s since first seen, but only 1.5 s since it changed
    master.step(timeout=0)
    assert harness.take("w1") == []
    harness.clock.now += 1.0
    harness.step_until(lambda: not _settling(master))
    [task] = harness.take("w1")
    assert task.size == 4


def _settling(master: Master) -> dict[bytes, Any]:
    return master._versions._settling


def test_a_quick_failure_is_not_overwritten_by_its_own_lease(harness: Harness) -> None:
    _old_file(harness.root / "bad.log", b"x\n")
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    [task] = harness.tasks.take("w1", 10, 1 << 30, 0)  # no step between take and result
    harness.report(task, "w1", Status.ERROR, error="boom")
    entry = harness.files()["bad.log"]
    assert (entry["status"], entry["attempts"], entry["error"]) == ("queued", 1, "boom")


def test_errors_from_another_worker_or_attempt_are_ignored(harness: Harness) -> None:
    _old_file(harness.root / "a.log", b"x\n")
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    [task] = harness.take("w1")
    harness.report(task, "w2", Status.ERROR, error="not mine")  # same id and attempt
    assert harness.files()["a.log"]["status"] == "leased"
    # w1 still holds it
    assert harness.tasks.heartbeat("w1", [(task.id, task.lease)], task.id) == []


def test_a_change_the_master_cannot_see_is_retried_not_looped(harness: Harness) -> None:
    _old_file(harness.root / "same.log", b"x\n")
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    for attempt in (1, 2, 3):
        harness.clock.now += 100  # past any backoff
        [task] = harness.take("w1")
        assert task.attempt == attempt
        harness.report(task, "w1", Status.CHANGED, error="changed since it was queued")
    entry = harness.files()["same.log"]
    assert entry["status"] == "failed"
    assert "cannot see this version" in entry["error"]
    assert master.finished


def test_a_host_that_cannot_see_a_file_leaves_it_to_the_others(harness: Harness) -> None:
    _old_file(harness.root / "there.log", b"ERROR x\n")
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    [task] = harness.take("host-a:1")
    assert harness.take("host-b:7") == []  # host-b is asking for work too
    harness.report(task, "host-a:1", Status.VANISHED, error="file not found")  # no mount there
    assert harness.files()["there.log"]["status"] == "queued"  # not vanished: the master sees it
    harness.clock.now += 2  # past the backoff
    assert harness.take("host-a:1") == []  # host-a failed it and host-b is active: withheld
    [again] = harness.take("host-b:7")
    assert (again.id, again.attempt) == (task.id, 2)
    harness.report(again, "host-b:7", Status.DONE, lines=1, error_lines=1)
    assert harness.files()["there.log"]["worker"] == "host-b:7"


def test_a_lone_host_still_retries_what_it_failed(harness: Harness) -> None:
    _old_file(harness.root / "flaky.log", b"x\n")
    master = harness.start()
    harness.step_until(lambda: master.scan_complete)
    [task] = harness.take("host-a:1")
    harness.report(task, "host-a:1", Status.ERROR, error="I/O error")
    harness.clock.now += 2
    [again] = harness.take("host-a:1")  # nobody else asks: the failing host tries again
    assert again.attempt == 2


def test_commits_keep_their_interval_and_a_result_after_a_quiet_spell_is_committed_at_once(
    tmp_path: Path,
) -> None:
    h = Harness(tmp_path, commit_interval=5.0, lease=600.0)
    try:
        _old_file(h.root / "a.log", b"ERROR a\n")
        _old_file(h.root / "b.log", b"b\n")
        master = h.start()
        h.step_until(lambda: master.scan_complete)
        h.clock.now += 60
        master.step(timeout=0)  # the new versions are committed
        tasks = {t.path: t for t in h.take("w1")}
        h.clock.now += 5
        master.step(timeout=0)  # the leases are committed
        h.clock.now += 60  # the worker counts for a minute: nothing to commit meanwhile
        master.step(timeout=0)
        h.report(tasks[b"a.log"], "w1", Status.DONE, lines=1, error_lines=1)
        assert h.files()["a.log"]["status"] == "done"  # at once, not an interval later
        h.report(tasks[b"b.log"], "w1", Status.DONE, lines=1)
        assert h.files()["b.log"]["status"] == "leased"  # within the interval of that commit
        h.clock.now += 5
        master.step(timeout=0)
        assert h.files()["b.log"]["status"] == "done"
    finally:
        h.close()


def test_a_message_nothing_handles_stops_the_loop_loudly(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    master = harness.start()
    master._inbox.put(("not", "a message"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown inbox message tuple"):
        master.step(timeout=0)
    assert "unknown message" in caplog.text


def test_an_address_in_use_fails_the_start_before_anything_is_watched(tmp_path: Path) -> None:
    (tmp_path / "root" / "deep").mkdir(parents=True)
    taken = socket.create_server(("127.0.0.1", 0))
    config = MasterConfig(
        root=tmp_path / "root",
        authkey=KEY,
        address=taken.getsockname(),
        state_dir=tmp_path / "state",
    )
    master = Master(config)
    before = set(threading.enumerate())
    try:
        in_use = r"cannot listen on 127\.0\.0\.1:\d+: Address already in use"
        with pytest.raises(ConfigError, match=in_use):
            master.start()
        # Nothing was watched or scanned: the address was tried first.
        started = {t.name for t in set(threading.enumerate()) - before}
        assert not started & {"scanner", "root-guard"}, started
    finally:
        master.close()
        taken.close()
    assert not (set(threading.enumerate()) - before)  # close() stopped what did start
    Master(config).close()  # and released the ledger


def test_a_failed_start_after_the_address_is_bound_releases_it(tmp_path: Path) -> None:
    """A server that was bound but never started (the watcher failed meanwhile) is closed."""
    (tmp_path / "root").mkdir()
    port = free_port()
    config = MasterConfig(
        root=tmp_path / "root",
        authkey=KEY,
        address=("127.0.0.1", port),
        state_dir=tmp_path / "state",
    )
    master = Master(config)

    def refuse() -> None:
        raise ConfigError("cannot watch: a test's refusal")

    master._watch = refuse  # type: ignore[method-assign]
    try:
        with pytest.raises(ConfigError, match="a test's refusal"):
            master.start()
    finally:
        master.close()
    socket.create_server(("127.0.0.1", port)).close()  # free again
