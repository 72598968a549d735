"""What a key holder or a crash can do to the counts: results land only on the version they
were counted for, bad requests cost their sender the connection, and nobody hoards work.

Real master and worker processes on loopback; the hostile client is a DispatchManager client
holding the key, as a compromised worker host would be.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from multiprocessing.managers import RemoteError, dispatch  # type: ignore[attr-defined]
from typing import Any

import pytest
from conftest import AUTHKEY, Cluster, Proc, logdispatch, wait_for, write_log

from dispatcher.views.status import fetch
from workers.protocol import (
    SERIALIZER,
    DispatchManager,
    Result,
    Status,
    Task,
    forget_connection,
    listener_client,
)

# A general regex that tries ".*" from every position: a big file takes seconds to count.
SLOW_PATTERN = r".*ERROR\s+\d+"

# A master that commits nothing for an hour: whatever it hands out is not in the ledger when it
# is killed, the widest form of the window between handing out a task and recording it.
UNCOMMITTING_MASTER = """
import sys
from pathlib import Path
from dispatcher.master.config import MasterConfig
from dispatcher.master.loop import Master
root, state, port, key = sys.argv[1:]
config = MasterConfig(
    root=Path(root), authkey=key.encode(), address=("127.0.0.1", int(port)),
    state_dir=Path(state), commit_interval=3600.0, error_pattern=rb".*ERROR\\s+\\d+",
)
master = Master(config)
master.start()
print("serving on", flush=True)
master.run()
"""


def _address(cluster: Cluster) -> tuple[str, int]:
    return ("127.0.0.1", cluster.port)


def _client(cluster: Cluster) -> tuple[Any, Any]:
    """A fresh connection's task queue and result sink, holding the key."""
    forget_connection(_address(cluster))
    manager = DispatchManager(_address(cluster), AUTHKEY.encode())
    manager.connect()
    return manager.get_task_queue(), manager.get_result_queue()  # type: ignore[attr-defined]


def _queued(cluster: Cluster, count: int) -> bool:
    return bool(fetch(_address(cluster), AUTHKEY.encode())["files"]["queued"] >= count)


def _handed(cluster: Cluster, name: str, content: bytes, worker: str) -> tuple[Any, Task]:
    """Drop ``name`` into the root and take its task as ``worker``, on a connection of its own."""
    (cluster.root / name).write_bytes(content)
    wait_for(lambda: _queued(cluster, 1))
    tasks, _ = _client(cluster)
    [task] = tasks.take(worker, 1, 1 << 20, 0)
    return tasks, task


def test_a_result_held_across_a_crash_never_lands_on_another_file(cluster: Cluster) -> None:
    write_log(cluster.root / "big.log", 60)
    (cluster.tmp / "uncommitting_master.py").write_text(UNCOMMITTING_MASTER)
    args = ["uncommitting_master", str(cluster.root), str(cluster.state), str(cluster.port)]
    master = Proc(
        [*args, AUTHKEY], cluster.tmp / "uncommitting.log", env={"PYTHONPATH": str(cluster.tmp)}
    )
    cluster.procs.append(master)
    wait_for(lambda: "serving on" in master.output)
    worker = cluster.work()

    def counting_big() -> bool:
        doc = fetch(_address(cluster), AUTHKEY.encode())
        return any(lease["path"] == "big.log" for lease in doc["in_flight"])

    wait_for(counting_big, interval=0.02)
    master.signal(signal.SIGKILL)  # big.log's version was never committed
    master.wait()
    (cluster.root / "big.log").unlink()  # the worker counts on from its open descriptor
    (cluster.root / "one.log").write_bytes(b"ERROR 1 the only line\n")
    restarted = cluster.serve()

    wait_for(lambda: cluster.files().get("one.log", {}).get("status") == "done", timeout=60)
    entry = cluster.files()["one.log"]
    assert (entry["lines"], entry["error_lines"]) == (1, 1)
    # The big file's result, sent again to the new master, was refused with a reason.
    wait_for(lambda: "refused: no open version has that id" in restarted.output, timeout=60)
    assert "lost the master" in worker.output


def test_malformed_requests_cost_their_sender_the_connection(cluster: Cluster) -> None:
    master = cluster.serve()
    # _holder keeps the connection that took the task, and so its lease, open.
    _holder, task = _handed(cluster, "a.log", b"ERROR 1 x\nok\n", "intruder:1")

    def result(**fields: Any) -> Result:
        base: dict[str, Any] = {"worker": "intruder:1", "status": Status.DONE, "lease": task.lease}
        base.update(bytes_read=100, lines=2, error_lines=1)
        base.update(fields)
        return Result(task.id, task.attempt, **base)

    bad_batches: list[Any] = [
        [result(lines="many")],
        [result(lines=2**64, bytes_read=2**65)],
        [result(lines=-5)],
        [result(lines=1.5)],
        [result(error_lines=3)],  # more error lines than lines
        [result(samples=["not bytes"])],
        [result(samples=(b"x" * 100_000,))],
        [Result([1], 1, "intruder:1", Status.DONE)],  # type: ignore[arg-type]
        "not a list",
        [result(seconds=float("nan"))],
        [result(error="e" * 100_000)],
        [result(samples=(b"x" * 1000,) * 40_000)],  # a 40 MB message: past the size bound
        [result(worker="w\ud800")],  # a lone surrogate: no ledger row or log line takes it
        [result(error="bad\ud800")],
        [result(error="two\nlines")],
        [result(fingerprint=b"x" * 39)],  # a fingerprint is empty or exactly 40 bytes
        [result(fingerprint=b"x" * 100_000)],
        [result(fingerprint="x" * 40)],
        [result(extends=-1)],  # a version id or 0
    ]
    for batch in bad_batches:
        _, results = _client(cluster)
        with pytest.raises((EOFError, OSError)):
            results.put(batch)
    bad_calls: list[tuple[str, tuple[Any, ...]]] = [
        ("heartbeat", (("not", "a", "string"), [])),
        ("heartbeat", ("intruder:1", [([1], b"")])),  # an unhashable task id
        ("take", ("x" * 1000, 1, 1, 0)),
        ("take", ("intruder:2", "many", 1, 0)),
        ("release", ("intruder:1", "everything")),
    ]
    for method, args in bad_calls:
        queue, _ = _client(cluster)
        with pytest.raises((EOFError, OSError)):
            getattr(queue, method)(*args)
    drops = master.output.count("; connection dropped")
    assert drops == len(bad_batches) + len(bad_calls), master.output
    assert "fingerprint must be empty or 40 bytes" in master.output
    assert "extends must be a version id or 0" in master.output

    # Nothing of it reached the ledger or the monitoring; the master goes on counting.
    assert master.popen.poll() is None
    queue, _ = _client(cluster)
    queue.release("intruder:1", [(task.id, task.lease)])
    cluster.work()
    wait_for(lambda: cluster.files().get("a.log", {}).get("status") == "done")
    assert (cluster.files()["a.log"]["lines"], cluster.files()["a.log"]["error_lines"]) == (2, 1)
    status = logdispatch("status", "--address", cluster.address, "--authkey-file",
                         str(cluster.key_file), "--json")  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert "not', 'a'" not in status.stdout
    summary = logdispatch("summary", "--state", str(cluster.state))
    assert summary.returncode == 0, summary.stderr


def test_a_key_holder_cannot_unregister_what_the_master_serves(cluster: Cluster) -> None:
    master = cluster.serve()
    worker = cluster.work()
    (cluster.root / "before.log").write_bytes(b"ok\n")
    wait_for(lambda: cluster.files().get("before.log", {}).get("status") == "done")
    tasks, _ = _client(cluster)
    ident = tasks._token.id
    connect = listener_client[SERIALIZER][1]
    for _ in range(20):  # more than the count of every proxy there is
        conn = connect(_address(cluster), authkey=AUTHKEY.encode())
        try:
            with contextlib.suppress(RemoteError):  # a count already at zero says so
                dispatch(conn, None, "decref", (ident,))
        finally:
            conn.close()
    (cluster.root / "after.log").write_bytes(b"ERROR 1 x\n")
    wait_for(lambda: cluster.files().get("after.log", {}).get("status") == "done")
    # The worker kept its connections: the task queue was still served to them.
    assert "not served" not in master.output
    assert "lost the master" not in worker.output


def test_only_the_holder_of_a_lease_reports_extends_or_hands_it_back(cluster: Cluster) -> None:
    master = cluster.serve()
    holder, task = _handed(cluster, "held.log", b"ERROR 1 x\nok\nok\n", "holder:1")

    # Another key holder, without the lease, claims it under the holder's name.
    other, results = _client(cluster)
    assert other.heartbeat("holder:1", [(task.id, b"guessed")], task.id) == [task.id]
    other.release("holder:1", [(task.id, b"guessed")])
    assert other.take("other:1", 1, 1 << 20, 0) == []  # still leased: the hand-back was refused
    forged = Result(
        task.id, task.attempt, "holder:1", Status.DONE, lines=999, bytes_read=9999,
        lease=b"0" * 16,
    )  # fmt: skip
    results.put([forged])
    # Its own lease on one version does not report on another.
    (cluster.root / "other.log").write_bytes(b"ok\n")
    wait_for(lambda: _queued(cluster, 1))
    [mine] = other.take("other:1", 1, 1 << 20, 0)
    results.put([Result(task.id, mine.attempt, "other:1", Status.DONE, lines=5, bytes_read=50,
                        lease=mine.lease)])  # fmt: skip
    wait_for(lambda: master.output.count("refused: not handed out for the version") == 2)
    assert master.output.count(", for held.log (size") == 2
    assert cluster.files()["held.log"]["status"] == "leased"

    holder.release("holder:1", [(task.id, task.lease)])
    other.release("other:1", [(mine.id, mine.lease)])
    cluster.work()
    wait_for(lambda: cluster.files().get("held.log", {}).get("status") == "done")
    entry = cluster.files()["held.log"]
    assert (entry["lines"], entry["error_lines"]) == (3, 1)


def test_a_client_that_takes_and_only_heartbeats_holds_nothing_for_long(
    cluster: Cluster,
) -> None:
    for i in range(200):
        (cluster.root / f"f-{i:03}.log").write_bytes(b"ERROR 1 x\n" * (i + 1))
    cluster.serve("--lease", "0.5", "--max-lease-age", "3")
    wait_for(lambda: _queued(cluster, 200), timeout=30)
    hoarder, _ = _client(cluster)
    hoard = hoarder.take("hoarder:1", 1000, 1 << 40, 0)
    assert len(hoard) == 200
    leases = [(t.id, t.lease) for t in hoard]
    stop = threading.Event()

    def heartbeat_forever() -> None:
        beat, _ = _client(cluster)
        turn = 0
        while not stop.wait(0.1):
            # It claims to count one file after another, and the first one all the time.
            beat.heartbeat("hoarder:1", leases, hoard[0].id)
            beat.heartbeat("hoarder:1", leases, hoard[turn % len(hoard)].id)
            turn += 1

    beating = threading.Thread(target=heartbeat_forever)
    beating.start()
    try:
        cluster.work()
        started = time.monotonic()
        wait_for(
            lambda: sum(e["status"] == "done" for e in cluster.files().values()) == 200,
            timeout=60,
        )
        assert time.monotonic() - started < 60
    finally:
        stop.set()
        beating.join()
    files = cluster.files()
    assert all(files[f"f-{i:03}.log"]["lines"] == i + 1 for i in range(200))


def test_a_worker_holds_at_most_a_bounded_number_of_tasks(cluster: Cluster) -> None:
    for i in range(1200):
        (cluster.root / f"f-{i:04}.log").write_bytes(b"ok\n")
    cluster.serve()
    wait_for(lambda: _queued(cluster, 1200), timeout=30)
    hoarder, _ = _client(cluster)
    first = hoarder.take("hoarder:1", 1000, 1 << 40, 0)
    assert len(first) == 1000
    assert hoarder.take("hoarder:1", 1000, 1 << 40, 0.2) == []  # holds all it may
    assert len(hoarder.take("hoarder:2", 1000, 1 << 40, 0)) == 200


def test_a_worker_that_holds_all_it_may_gets_work_once_its_results_are_in(
    cluster: Cluster,
) -> None:
    """Its take() waits for its results to be recorded, not for its whole timeout: then it
    is handed the next files at once."""
    for i in range(1100):
        (cluster.root / f"f-{i:04}.log").write_bytes(b"ok\n")
    cluster.serve()
    wait_for(lambda: _queued(cluster, 1100), timeout=30)
    tasks, results = _client(cluster)
    first = tasks.take("busy:1", 1000, 1 << 40, 0)
    assert len(first) == 1000
    waiting, _ = _client(cluster)  # the same worker's next take, on a connection of its own
    handed: list[Any] = []
    taker = threading.Thread(
        target=lambda: handed.append(waiting.take("busy:1", 1000, 1 << 40, 2.0))
    )
    taker.start()
    time.sleep(0.3)  # it holds all it may: its take waits
    results.put([
        Result(t.id, t.attempt, "busy:1", Status.DONE, lines=1, bytes_read=3, lease=t.lease)
        for t in first
    ])  # fmt: skip
    taker.join()
    assert len(handed[0]) == 100  # the rest, within the same take
