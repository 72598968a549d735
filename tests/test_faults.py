"""Faults: processes killed and signalled at bad moments, files that change, vanish or fail.

Every test uses real `serve` and `work` processes on loopback and real signals; the promise
checked is that each file ends in exactly one final state with the right counts.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    AUTHKEY,
    LOGDISPATCH,
    Cluster,
    Proc,
    child_pids,
    free_port,
    wait_for,
    write_log,
)

# A general regex takes the line-by-line path, and this one tries ".*" from every position of
# every line: about 10 MB/s here, against some 100 MB/s for r"ERROR\s+\d+". A file of 30 MB
# keeps a worker busy for seconds, long enough to kill or signal it mid-file. Tests whose
# point needs a long count check it with _seconds().
SLOW_PATTERN = r".*ERROR\s+\d+"


def _entry(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.files().get(name, {})


def _seconds(cluster: Cluster, name: str) -> float:
    """How long the worker that counted ``name`` took, as the ledger recorded it."""
    with sqlite3.connect(cluster.state / "ledger.sqlite3") as db:
        (seconds,) = db.execute(
            "SELECT seconds FROM versions WHERE path = ? AND status = 'done'", (name.encode(),)
        ).fetchone()
    return float(seconds)


def _leased_by(cluster: Cluster, name: str, proc: Proc) -> bool:
    entry = _entry(cluster, name)
    return entry.get("status") == "leased" and entry["worker"].endswith(f":{proc.popen.pid}")


def test_worker_killed_mid_file_loses_its_lease_and_another_counts_it(cluster: Cluster) -> None:
    lines, errors = write_log(cluster.root / "big.log", 30)
    # A lease term far beyond the test's patience: the closed connection must be noticed.
    cluster.serve("--lease", "600", "--error-pattern", SLOW_PATTERN)
    first = cluster.work()
    wait_for(lambda: _leased_by(cluster, "big.log", first))
    time.sleep(0.3)
    first.signal(signal.SIGKILL)
    first.wait()
    second = cluster.work()
    wait_for(lambda: _entry(cluster, "big.log").get("status") == "done", timeout=30)
    entry = _entry(cluster, "big.log")
    assert (entry["lines"], entry["error_lines"]) == (lines, errors)
    assert entry["worker"].endswith(f":{second.popen.pid}")
    assert entry["attempts"] == 2
    assert cluster.versions() == {b"big.log": ["done"]}
    assert "expired" in (cluster.master.output if cluster.master else "")


def test_heartbeats_keep_a_lease_longer_than_its_term(cluster: Cluster) -> None:
    # Large enough that even a fast machine counts it for several lease terms.
    lines, errors = write_log(cluster.root / "big.log", 100)
    cluster.serve("--lease", "1", "--error-pattern", SLOW_PATTERN)
    worker = cluster.work()
    wait_for(lambda: _entry(cluster, "big.log").get("status") == "done", timeout=60)
    entry = _entry(cluster, "big.log")
    assert entry["attempts"] == 1, "the lease expired although the worker was alive"
    assert (entry["lines"], entry["error_lines"]) == (lines, errors)
    assert entry["worker"].endswith(f":{worker.popen.pid}")
    assert _seconds(cluster, "big.log") > 2, "counted within two lease terms: nothing tested"


def test_worker_killed_while_waiting_for_work_loses_no_task(cluster: Cluster) -> None:
    cluster.serve("--lease", "2")
    idle = cluster.work()
    wait_for(lambda: "connected to the master" in idle.output)
    time.sleep(0.5)  # now blocked in take() on the master
    idle.signal(signal.SIGKILL)
    idle.wait()
    (cluster.root / "after.log").write_bytes(b"ERROR one\nok\n")
    cluster.work()
    wait_for(lambda: _entry(cluster, "after.log").get("status") == "done")
    assert _entry(cluster, "after.log")["error_lines"] == 1


def test_master_killed_and_restarted_loses_nothing_and_redoes_nothing(cluster: Cluster) -> None:
    for i in range(100):
        (cluster.root / f"early-{i:03}.log").write_bytes(b"ERROR 7 e\nok\n" * (i + 1))
    lines, errors = write_log(cluster.root / "big.log", 60)
    master = cluster.serve("--lease", "3", "--error-pattern", SLOW_PATTERN)
    workers = [cluster.work(), cluster.work()]
    # Both must know the master before it goes: a worker slow to start would only ever meet
    # the restarted one.
    wait_for(lambda: all("connected to the master" in w.output for w in workers), timeout=30)
    wait_for(lambda: _entry(cluster, "big.log").get("status") == "leased", timeout=30)
    done_before = {
        path: entry["worker"]
        for path, entry in cluster.files().items()
        if entry["status"] == "done"
    }
    master.signal(signal.SIGKILL)
    master.wait()
    for i in range(30):  # arrive while the master is down
        (cluster.root / f"late-{i:03}.log").write_bytes(b"FATAL x\n" * (i + 1))
    time.sleep(1.5)  # an idle worker notices and starts retrying
    cluster.serve("--lease", "3", "--error-pattern", SLOW_PATTERN)

    def all_done() -> bool:
        files = cluster.files()
        return len(files) == 131 and all(e["status"] == "done" for e in files.values())

    wait_for(all_done, timeout=90)
    files = cluster.files()
    for i in range(100):
        entry = files[f"early-{i:03}.log"]
        assert (entry["lines"], entry["error_lines"]) == (2 * (i + 1), i + 1)
    for i in range(30):
        entry = files[f"late-{i:03}.log"]
        assert (entry["lines"], entry["error_lines"]) == (i + 1, 0)  # not SLOW_PATTERN
    assert (files["big.log"]["lines"], files["big.log"]["error_lines"]) == (lines, errors)
    for path, worker in done_before.items():
        assert files[path]["worker"] == worker  # recorded before the crash, not redone
    assert all(statuses == ["done"] for statuses in cluster.versions().values())
    # The idle worker retried while the master was down; the one still counting big.log may
    # find the master back at its first try.
    assert any("cannot reach the master" in worker.output for worker in workers)
    for worker in workers:
        assert worker.popen.poll() is None, "a worker gave up on the master"
        assert "lost the master" in worker.output
        # Backoff may still hold one back while the other finishes the work.
        wait_for(lambda w=worker: w.output.count("connected to the master") >= 2, timeout=40)
        assert "Traceback" not in worker.output


def test_failing_file_is_retried_then_failed_without_blocking_others(cluster: Cluster) -> None:
    (cluster.root / "broken.log.gz").write_bytes(gzip.compress(b"ERROR x\n" * 1000)[:-40])
    cluster.serve("--max-attempts", "3")
    cluster.work()
    for i in range(20):
        (cluster.root / f"ok-{i}.log").write_bytes(b"ERROR fine\n")
    wait_for(lambda: _entry(cluster, "broken.log.gz").get("status") == "failed", timeout=30)
    files = cluster.files()
    broken = files.pop("broken.log.gz")
    assert broken["attempts"] == 3
    assert "corrupt gzip data" in broken["error"]
    assert len(files) == 20 and all(e["status"] == "done" for e in files.values())


def test_file_deleted_before_it_is_counted_is_vanished(cluster: Cluster) -> None:
    cluster.serve()
    doomed = cluster.root / "doomed.log"
    doomed.write_bytes(b"ERROR soon gone\n")
    wait_for(lambda: _entry(cluster, "doomed.log").get("status") == "queued")
    doomed.unlink()
    cluster.work()
    wait_for(lambda: _entry(cluster, "doomed.log").get("status") == "vanished")
    time.sleep(1.5)
    assert cluster.versions() == {b"doomed.log": ["vanished"]}  # no retries forever


def test_file_changed_after_dispatch_is_counted_as_its_new_version(cluster: Cluster) -> None:
    cluster.serve()
    log = cluster.root / "moving.log"
    log.write_bytes(b"ERROR first\n")
    wait_for(lambda: _entry(cluster, "moving.log").get("status") == "queued")
    with open(log, "ab") as f:
        f.write(b"FATAL second\nok\n")
    cluster.work()
    wait_for(lambda: _entry(cluster, "moving.log").get("status") == "done")
    entry = _entry(cluster, "moving.log")
    assert (entry["lines"], entry["error_lines"]) == (3, 2)
    assert cluster.versions() == {b"moving.log": ["superseded", "done"]}


def test_sigterm_lets_a_worker_finish_its_file_and_exit_zero(cluster: Cluster) -> None:
    lines, errors = write_log(cluster.root / "big.log", 30)
    # Finishing takes longer than the lease: the heartbeats must go on after the signal.
    master = cluster.serve("--error-pattern", SLOW_PATTERN, "--lease", "1")
    worker = cluster.work()
    wait_for(lambda: _leased_by(cluster, "big.log", worker))
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    # Its result was sent before it exited; the ledger commits it within COMMIT_SECONDS.
    wait_for(lambda: _entry(cluster, "big.log").get("status") == "done")
    entry = _entry(cluster, "big.log")
    assert (entry["status"], entry["lines"], entry["error_lines"]) == ("done", lines, errors)
    assert entry["attempts"] == 1
    assert _seconds(cluster, "big.log") > 1, "counted within the lease term: nothing tested"
    assert "expired" not in master.output
    assert "Traceback" not in worker.output
    master.signal(signal.SIGTERM)
    assert master.wait() == 0


def test_second_signal_stops_a_worker_at_once(cluster: Cluster) -> None:
    write_log(cluster.root / "big.log", 30)  # seconds of counting: still busy at the 2nd signal
    cluster.serve("--error-pattern", SLOW_PATTERN, "--lease", "2")
    worker = cluster.work()
    wait_for(lambda: _leased_by(cluster, "big.log", worker))
    worker.signal(signal.SIGTERM)
    time.sleep(0.5)  # two signals sent back to back would arrive as one
    worker.signal(signal.SIGTERM)
    started = time.monotonic()
    assert worker.wait() == 128 + signal.SIGTERM
    assert time.monotonic() - started < 1.0
    cluster.work()  # the file is not lost: the lease expires and it is counted
    wait_for(lambda: _entry(cluster, "big.log").get("status") == "done", timeout=60)


def _run_once(root: Path, state: Path, output: Path) -> subprocess.Popen[bytes]:
    """``run --once`` over ``root`` with two workers counting slowly; its output in ``output``,
    with faulthandler armed for _ends_after_ctrl_c()."""
    with open(output, "wb") as out:
        return subprocess.Popen(
            [*LOGDISPATCH, "run", str(root), "--once", "--workers", "2", "--state", str(state),
             "--error-pattern", SLOW_PATTERN],
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"},
            stdout=out,
            stderr=out,
        )  # fmt: skip


def _ends_after_ctrl_c(run: subprocess.Popen[bytes], output: Path) -> int:
    """``run``'s exit status after a SIGINT. Should it not end, the failure shows where each of
    its threads and its workers' threads were (faulthandler prints them on SIGABRT)."""
    run.send_signal(signal.SIGINT)
    return _ends_after_ctrl_c_sent(run, output)


def _ends_after_ctrl_c_sent(run: subprocess.Popen[bytes], output: Path) -> int:
    with contextlib.suppress(subprocess.TimeoutExpired):
        return run.wait(timeout=30)
    for pid in (*child_pids(run.pid), run.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGABRT)
    run.wait()
    time.sleep(1)  # the workers' dumps
    pytest.fail(f"run did not end 30 s after a Ctrl-C:\n{output.read_text(errors='replace')}")


def test_ctrl_c_on_run_once_cleans_up_every_child(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    write_log(root / "big.log", 30)
    run = _run_once(root, tmp_path / "state", tmp_path / "output")
    children = wait_for(lambda: found if len(found := child_pids(run.pid)) == 2 else None)
    time.sleep(1.0)
    assert _ends_after_ctrl_c(run, tmp_path / "output") == 130
    # Left behind, they would now belong to init and still run.
    wait_for(functools.partial(_all_gone, children), 5)


def test_ctrl_c_at_any_moment_of_run_once_start_up_ends_it(tmp_path: Path) -> None:
    """A Ctrl-C while `run` imports, forks its workers, opens its ledger or starts its master:
    it ends, and its workers with it."""
    root = tmp_path / "root"
    root.mkdir()
    write_log(root / "big.log", 5)
    for n, delay in enumerate((0.0, 0.01, 0.03, 0.06, 0.1, 0.2, 0.3, 0.5)):
        output = tmp_path / f"output-{n}"
        run = _run_once(root, tmp_path / f"state-{n}", output)
        time.sleep(delay)
        children = child_pids(run.pid)
        # Its status depends on the moment: 130 from the program, 0 once done, Python's own
        # while it imports. What matters is that it ends, and its workers too.
        _ends_after_ctrl_c(run, output)
        wait_for(functools.partial(_all_gone, children), 15)


def test_ctrl_c_while_run_waits_for_its_ledger_stops_it_once_the_master_exists(
    tmp_path: Path,
) -> None:
    """A Ctrl-C after the workers are forked and before the master exists (here: it waits for
    a reader of its ledger) is kept, and stops the master as soon as it exists."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.log").write_bytes(b"ERROR x\nok\n")
    state = tmp_path / "state"
    first = subprocess.run(
        [*LOGDISPATCH, "run", str(root), "--once", "--state", str(state)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    (root / "b.log").write_bytes(b"ok\n")  # work for the next run, which the stop leaves undone
    output = tmp_path / "output"
    with contextlib.closing(sqlite3.connect(state / "ledger.sqlite3")) as reader:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM versions").fetchone()  # a read lock, held
        with open(output, "wb") as out:
            run = subprocess.Popen(
                [*LOGDISPATCH, "run", str(root), "--once", "-v", "--state", str(state)],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=out,
            )
        wait_for(lambda: b"waiting for the readers of the ledger" in output.read_bytes())
        workers = child_pids(run.pid)
        assert len(workers) == 2
        run.send_signal(signal.SIGINT)
        time.sleep(0.5)  # the signal is in before the master is
    assert _ends_after_ctrl_c_sent(run, output) == 130
    said = output.read_text()
    assert said.rstrip().endswith(
        f"logdispatch run: interrupted; what was counted is in the ledger: "
        f"logdispatch summary --state {state}"
    ), said
    assert "Traceback" not in said
    wait_for(functools.partial(_all_gone, workers), 15)


def _all_gone(pids: set[int]) -> bool:
    return not any(os.path.exists(f"/proc/{pid}/cmdline") for pid in pids)


@pytest.mark.parametrize("mode", [("--no-events", "--rescan", "1"), ("--poll", "0.3")])
def test_files_are_found_without_inotify(cluster: Cluster, mode: tuple[str, ...]) -> None:
    master = cluster.serve(*mode)
    cluster.work()
    time.sleep(0.5)  # after the start-up scan
    (cluster.root / "nfs-host").mkdir()
    (cluster.root / "nfs-host/late.log").write_bytes(b"CRITICAL disk\n")
    wait_for(lambda: _entry(cluster, "nfs-host/late.log").get("status") == "done", timeout=20)
    assert "rescans only" in master.output or "polling every 0.3 s" in master.output


def _serve_on_a_small_inotify_queue(cluster: Cluster, events: int) -> Proc:
    """A master whose inotify instance queues at most ``events`` events (the limit is read
    when the instance is made, and put back at once)."""
    limit_file = Path("/proc/sys/fs/inotify/max_queued_events")
    if os.geteuid() != 0:
        pytest.skip("needs root to lower the inotify queue limit")
    saved = limit_file.read_text()
    limit_file.write_text(f"{events}\n")
    try:
        master = cluster.serve("--rescan", "3600")
        # Logged once the watcher's inotify instance exists ("serving on" comes before it).
        wait_for(lambda: "watching" in master.output)
    finally:
        limit_file.write_text(saved)
    return master


def test_inotify_overflow_triggers_a_rescan(cluster: Cluster) -> None:
    master = _serve_on_a_small_inotify_queue(cluster, 16)
    cluster.work()
    for i in range(400):
        (cluster.root / f"burst-{i:03}.log").write_bytes(b"ERROR b\n")
    wait_for(lambda: len(cluster.files()) == 400, timeout=30)
    wait_for(lambda: all(e["status"] == "done" for e in cluster.files().values()))
    assert "inotify queue overflowed: events were lost, rescanning" in master.output


def test_reading_the_tree_fills_no_inotify_queue(cluster: Cluster) -> None:
    """Opens and closes without a write (every scan's reading of each folder, every worker's
    reading of each file) are not asked of inotify: on a small queue they would overflow it,
    and the rescan that follows would overflow it again."""
    for n in range(20):
        (cluster.root / f"d{n}").mkdir()
        (cluster.root / f"d{n}" / "a.log").write_bytes(b"ERROR a\n")
    master = _serve_on_a_small_inotify_queue(cluster, 64)
    cluster.work()
    wait_for(lambda: len(cluster.files()) == 20 and all(
        e["status"] == "done" for e in cluster.files().values()
    ))  # fmt: skip
    for _ in range(50):  # what readers do: a thousand opens and reads of files and folders
        for n in range(20):
            (cluster.root / f"d{n}" / "a.log").read_bytes()
            os.listdir(cluster.root / f"d{n}")
    (cluster.root / "d0" / "new.log").write_bytes(b"ERROR new\n")  # still seen at once
    wait_for(lambda: cluster.files().get("d0/new.log", {}).get("status") == "done")
    assert "overflow" not in master.output


def test_authkey_file_readable_by_others_is_warned_about(cluster: Cluster) -> None:
    cluster.key_file.chmod(0o644)
    master = cluster.serve()
    assert "readable by group or others" in master.output
    assert AUTHKEY not in master.output


def test_workers_of_a_killed_run_stop_by_themselves(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    run = subprocess.Popen(
        [*LOGDISPATCH, "run", str(root), "--workers", "2", "--state", str(tmp_path / "state")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    children = wait_for(lambda: found if len(found := child_pids(run.pid)) == 2 else None)
    time.sleep(1.0)
    run.send_signal(signal.SIGKILL)
    run.wait()
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}/cmdline") for pid in children), 15)


def test_work_processes_replace_a_killed_child(cluster: Cluster) -> None:
    cluster.serve()
    worker = cluster.work("--processes", "2")
    children = wait_for(lambda: found if len(found := child_pids(worker.popen.pid)) == 2 else None)
    killed = sorted(children)[0]
    os.kill(killed, signal.SIGKILL)
    now = wait_for(
        lambda: (
            found if len(found := child_pids(worker.popen.pid)) == 2 and found != children else None
        )
    )
    assert killed not in now and len(now & children) == 1
    assert f"counting process {killed} was killed by SIGKILL; another starts in 0.5 s" in (
        worker.output
    )
    # The new one counts.
    (cluster.root / "after-kill.log").write_text("ERROR one\n")
    wait_for(lambda: cluster.files().get("after-kill.log", {}).get("status") == "done")
    # Its stop is clean: the killed one was dealt with.
    worker.signal(signal.SIGINT)
    assert worker.wait() == 0
    assert not child_pids(worker.popen.pid)


def said_by(proc: Proc, line: str) -> bool:
    return line in proc.output


def test_work_processes_that_keep_dying_are_started_less_often(cluster: Cluster) -> None:
    cluster.serve()
    worker = cluster.work("--processes", "2")
    children = wait_for(lambda: found if len(found := child_pids(worker.popen.pid)) == 2 else None)
    victim, survivor = sorted(children)

    def replacement(dead: int) -> int | None:
        found = child_pids(worker.popen.pid)
        return (
            next(iter(found - {survivor}), None) if len(found) == 2 and dead not in found else None
        )

    for seconds in ("0.5", "1", "2"):
        os.kill(victim, signal.SIGKILL)
        said = f"counting process {victim} was killed by SIGKILL; another starts in {seconds} s"
        wait_for(functools.partial(said_by, worker, said))
        victim = wait_for(functools.partial(replacement, victim))
    assert survivor in child_pids(worker.popen.pid)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def _cpu_seconds(pid: int) -> float:
    """User and system time ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _replaced(parent: int, dead: set[int]) -> set[int] | None:
    """``parent``'s two children once neither is one of ``dead``."""
    found = child_pids(parent)
    return found if len(found) == 2 and not found & dead else None


def test_work_processes_parent_sleeps_while_its_dead_children_wait(cluster: Cluster) -> None:
    cluster.serve()
    worker = cluster.work("--processes", "2")
    pid = worker.popen.pid
    children = wait_for(lambda: found if len(found := child_pids(pid)) == 2 else None)
    # Killed four times over, both slots wait 4 s for their next process, with nothing alive.
    for seconds in ("0.5", "1", "2", "4"):
        for child in children:
            os.kill(child, signal.SIGKILL)
        for child in children:
            said = f"counting process {child} was killed by SIGKILL; another starts in {seconds} s"
            wait_for(functools.partial(said_by, worker, said))
        if seconds == "4":
            break
        children = wait_for(functools.partial(_replaced, pid, children))
    cpu, wall = _cpu_seconds(pid), time.monotonic()
    time.sleep(2)
    cpu, wall = _cpu_seconds(pid) - cpu, time.monotonic() - wall
    # A loop that polls the dead children uses a whole core meanwhile.
    assert cpu < wall / 4, f"{cpu:.2f} s of CPU in {wall:.2f} s"
    # Their replacements still come.
    wait_for(lambda: len(child_pids(pid)) == 2)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0


def test_work_processes_children_stop_when_the_parent_is_killed(cluster: Cluster) -> None:
    cluster.serve()
    worker = cluster.work("--processes", "2")
    children = wait_for(lambda: found if len(found := child_pids(worker.popen.pid)) == 2 else None)
    wait_for(lambda: worker.output.count("connected to the master") == 2)
    worker.signal(signal.SIGKILL)
    worker.wait()
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}/cmdline") for pid in children), 15)


# A child stopped before its worker has signal handlers: it is told to stop while it waits for
# its configuration, then given one.
STOPPED_BEFORE_START = """
import os, signal, sys
from workers.local import LocalWorkers
from workers.worker import WorkerConfig

workers = LocalWorkers(1)
child = workers.processes[0]
os.kill(child.pid, signal.SIGTERM)
workers.start(WorkerConfig(address=("127.0.0.1", int(sys.argv[1])), authkey=b"key"))
child.join(20)
print(child.exitcode)
if child.exitcode is None:  # not stopped: it would wait for a master for ever
    child.kill()
"""


def test_a_worker_stopped_as_it_starts_stops_cleanly() -> None:
    # No master there: a worker not stopped would wait for one.
    done = subprocess.run(
        [sys.executable, "-c", STOPPED_BEFORE_START, str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0\n", done.stderr


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_run_that_watches_says_what_it_does_and_exits_zero_when_stopped(
    tmp_path: Path, sig: signal.Signals
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.log").write_bytes(b"ERROR x\nok\n")
    state = tmp_path / "state"
    run = subprocess.Popen(
        [*LOGDISPATCH, "run", str(root), "--workers", "2", "--state", str(state), "--settle", "0"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As a terminal's Ctrl-C does: the signal reaches the workers too.
        start_new_session=True,
    )
    try:
        wait_for(lambda: len(child_pids(run.pid)) == 2)
        (root / "b.log").write_bytes(b"ok\n" * 3)  # landed while it runs: counted too
        wait_for(lambda: _done_paths(state) == {b"a.log", b"b.log"}, timeout=30)
        os.killpg(run.pid, sig)
        out, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0, err
    first = err.splitlines()[0]
    assert first == (
        f"logdispatch run: counting {root} with 2 workers, and whatever lands there until "
        f"stopped (Ctrl-C); the ledger is in {state}: logdispatch summary --state {state}"
    )
    assert err.rstrip().endswith(
        f"logdispatch run: stopped; what was counted is in the ledger: "
        f"logdispatch summary --state {state}"
    )
    assert "Traceback" not in err and out == ""


def _done_paths(state: Path) -> set[bytes]:
    if not (state / "ledger.sqlite3").exists():
        return set()
    with contextlib.closing(sqlite3.connect(state / "ledger.sqlite3")) as db:
        try:
            return {row[0] for row in db.execute("SELECT path FROM versions WHERE status = 'done'")}
        except sqlite3.OperationalError:  # not created yet
            return set()
