"""The live view: `status` (table, JSON, --watch), the metrics endpoint, run's progress."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    AUTHKEY,
    LOGDISPATCH,
    Cluster,
    free_port,
    open_versions,
    port_in_use,
    wait_for,
    write_log,
)
from reference import reference_counts, reference_line_counts

from dispatcher.transport.taskqueue import TaskQueue
from dispatcher.versions import Rules, Version
from dispatcher.views.activity import FORGET_WORKER_SECONDS, SECONDS_BUCKETS, Activity
from dispatcher.views.status import MasterInfo, fetch, status_document
from workers.errors import MasterUnreachable


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _document(queue: TaskQueue, activity: Activity, clock: FakeClock) -> dict[str, Any]:
    info = MasterInfo(b"/srv/logs", ("127.0.0.1", 50000), "master", 1, "events", lease=30.0)
    return status_document(info, queue.state(), activity.snapshot(), 0, clock())


def test_worker_states_follow_their_calls_and_connections() -> None:
    clock = FakeClock()
    activity = Activity(clock, wall=lambda: 1_800_000_000.0)
    versions = open_versions(Version(1, b"a/big.log", 10_000, 1), Version(2, b"b/small.log", 10, 1))
    queue = TaskQueue(b"/srv/logs", Rules(b"ERROR"), versions.get, 30.0, clock, secret=b"k" * 32)
    queue.put_many(list(versions))
    # Each worker on its own connection (the server gives each connection a session id).
    activity.contact("h1:1", 101)
    assert queue.take("h1:1", 1, 1 << 30, 0) != []
    activity.contact("h2:2", 102)
    assert queue.take("h2:2", 1, 1 << 30, 0) != []
    clock.now += 5
    activity.contact("h1:1", 101)  # a heartbeat
    activity.counted([(10, "h2:2", 3, 1, 0.02, ())])
    queue.discard([2])
    clock.now += 1
    workers = {w["id"]: w for w in _document(queue, activity, clock)["workers"]}
    assert workers["h1:1"]["state"] == "counting"
    assert workers["h1:1"]["current"] == "a/big.log"
    assert workers["h1:1"]["current_seconds"] == pytest.approx(6.0)
    assert workers["h2:2"]["state"] == "idle"
    assert (workers["h2:2"]["files"], workers["h2:2"]["bytes"]) == (1, 10)

    clock.now += 31  # h1 silent longer than the lease: lost, whatever its connection says
    assert {w["id"]: w["state"] for w in _document(queue, activity, clock)["workers"]}["h1:1"] == (
        "lost"
    )

    activity.hung_up(102)
    states = {w["id"]: w["state"] for w in _document(queue, activity, clock)["workers"]}
    assert states == {"h1:1": "lost", "h2:2": "gone"}
    clock.now += FORGET_WORKER_SECONDS + 1
    assert _document(queue, activity, clock)["workers"] == []


def test_rates_cover_the_last_minute_and_the_histogram_is_cumulative() -> None:
    clock = FakeClock()
    activity = Activity(clock, counters=["warn", "slow"])
    assert activity.snapshot().counts == {"warn": 0, "slow": 0}  # shown before any file
    activity.queued(7, 5_000_012)
    for seconds in (0.001, 0.02, 0.02, 7.0, 1000.0):
        activity.counted([(1_000_000, "h:1", 10, 0, seconds, (("warn", 2), ("slow", 1)))])
    clock.now += 30
    activity.counted([(2, "h:1", 1, 1, 0.001, (("warn", 0), ("slow", 3)))])
    activity.closed("failed", 5, b"bad.gz", "corrupt archive")
    activity.closed("vanished", 5, b"gone.log", None)
    snapshot = activity.snapshot()
    # Rates and bytes are of counted files: a failed or vanished one is no work done.
    assert (snapshot.window_files, snapshot.window_bytes) == (6, 5_000_002)
    assert (snapshot.finished_bytes, snapshot.lines, snapshot.error_lines) == (5_000_002, 51, 1)
    assert snapshot.finished == {"done": 6, "failed": 1, "vanished": 1, "superseded": 0}
    assert snapshot.counts == {"warn": 10, "slow": 8}
    assert activity.progress() == (7, 5_000_012, 8, 5_000_012)  # every version is final
    assert snapshot.window == pytest.approx(30.0)
    assert snapshot.seconds_buckets[-1] == 6
    assert snapshot.seconds_buckets[SECONDS_BUCKETS.index(0.005)] == 2
    assert snapshot.seconds_buckets[SECONDS_BUCKETS.index(0.025)] == 4
    assert snapshot.seconds_buckets[SECONDS_BUCKETS.index(10.0)] == 5
    assert [f.path for f in snapshot.failures] == [b"bad.gz"]
    clock.now += 45  # the first five left the window
    snapshot = activity.snapshot()
    assert (snapshot.window_files, snapshot.window_bytes) == (1, 2)
    assert snapshot.window == 60


def _worker_state(cluster: Cluster, worker_pid: int) -> dict[str, Any] | None:
    doc = fetch(("127.0.0.1", cluster.port), AUTHKEY.encode())
    for worker in doc["workers"]:
        if worker["id"].endswith(f":{worker_pid}"):
            return dict(worker)
    return None


def test_status_follows_a_worker_counting_stopped_and_killed(cluster: Cluster) -> None:
    lines, _ = write_log(cluster.root / "big.log", 150)
    for i in range(20):
        (cluster.root / f"small-{i}.log").write_bytes(b"ERROR x\nok\n" * i)
    # A general regex (no literal fast path) makes the big file take a while.
    cluster.serve("--lease", "3", "--error-pattern", r"ERROR [0-9]+ up")
    worker = cluster.work()
    pid = worker.popen.pid

    def counting_big() -> bool:
        state = _worker_state(cluster, pid)
        return state is not None and state["current"] == "big.log"

    wait_for(counting_big, interval=0.02)
    worker.signal(signal.SIGSTOP)
    try:
        doc = fetch(("127.0.0.1", cluster.port), AUTHKEY.encode())
        assert doc["files"]["in_flight"] == 1
        assert doc["in_flight"][0]["path"] == "big.log"
        state = _worker_state(cluster, pid)
        assert state is not None and state["state"] == "counting"
        # Heartbeats stop with the process: lost after the lease term.
        wait_for(lambda: (_worker_state(cluster, pid) or {}).get("state") == "lost", timeout=10)
    finally:
        worker.signal(signal.SIGCONT)
    wait_for(lambda: cluster.files().get("big.log", {}).get("status") == "done", timeout=60)
    assert cluster.files()["big.log"]["lines"] == lines
    doc = fetch(("127.0.0.1", cluster.port), AUTHKEY.encode())
    assert doc["since_start"]["done"] == 21
    assert doc["since_start"]["lines"] == lines + sum(2 * i for i in range(20))
    assert doc["master"]["watch"] == "events"

    worker.popen.kill()
    worker.wait()
    wait_for(lambda: (_worker_state(cluster, pid) or {}).get("state") == "gone")


def test_status_command_table_json_and_errors(cluster: Cluster, tmp_path: Path) -> None:
    (cluster.root / "a").mkdir()
    (cluster.root / "a" / "one.log").write_bytes(b"ERROR boom\nfine\n")
    (cluster.root / "bad.gz").write_bytes(b"\x1f\x8b\x08\x00 truncated")
    cluster.serve("--max-attempts", "1")
    cluster.work()
    wait_for(
        lambda: (
            cluster.summary()["totals"].get("files") == 2
            and not cluster.summary()["totals"]["pending"]
        )
    )
    key = ["--address", cluster.address, "--authkey-file", str(cluster.key_file)]

    shown = subprocess.run(
        [*LOGDISPATCH, "status", *key, "--json"], capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert set(doc) >= {"master", "files", "since_start", "rate", "workers", "in_flight"}
    assert (doc["since_start"]["done"], doc["since_start"]["failed"]) == (1, 1)
    assert doc["since_start"]["counts"] == {}  # no named counters
    assert doc["recent_failures"][0]["path"] == "bad.gz"
    assert doc["master"]["root"] == os.fsdecode(os.path.realpath(cluster.root))

    table = subprocess.run(
        [*LOGDISPATCH, "status", *key], capture_output=True, text=True, timeout=30
    )
    assert table.returncode == 0, table.stderr
    assert "1 done, 1 failed" in table.stdout
    assert "bad.gz" in table.stdout and "idle" in table.stdout
    assert "counters" not in table.stdout

    wrong_key = tmp_path / "wrong"
    wrong_key.write_text("not the key\n")
    wrong_key.chmod(0o600)
    refused = subprocess.run(
        [*LOGDISPATCH, "status", "--address", cluster.address, "--authkey-file", str(wrong_key)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "refused this authkey" in refused.stderr
    with pytest.raises(MasterUnreachable, match="Connection refused"):
        fetch(("127.0.0.1", free_port()), AUTHKEY.encode())


def test_status_watch_keeps_going_while_the_master_is_away(cluster: Cluster) -> None:
    port = cluster.port
    watcher = subprocess.Popen(
        [*LOGDISPATCH, "status", "--address", cluster.address, "--watch", "--interval", "0.2"],
        env={**os.environ, "LOGDISPATCH_AUTHKEY": AUTHKEY, "COLUMNS": "120"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # no master yet: it says so and tries again
        cluster.serve()
        time.sleep(1.0)
        assert watcher.poll() is None
    finally:
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=20)
    assert watcher.returncode == 0, err
    # Without a terminal rich prints the last view when it stops: the master's, found later.
    assert f"127.0.0.1:{port}" in out and "workers (0)" in out


def _scrape(port: int) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_metrics_endpoint_over_http(cluster: Cluster) -> None:
    expected_lines = 0
    expected_errors = 0
    for i in range(12):
        content = b"2026 ERROR one\n2026 INFO two\n" * (i + 1)
        (cluster.root / f"f{i}.log").write_bytes(content)
        counts = reference_counts(content)
        expected_lines += counts[0]
        expected_errors += counts[1]
    metrics_port = free_port()
    master = cluster.serve("--metrics", f"127.0.0.1:{metrics_port}")
    wait_for(lambda: "metrics at http://" in master.output)  # it starts after the queue server
    cluster.work()
    cluster.work()
    wait_for(lambda: _scrape(metrics_port).get("logdispatch_files_total{state=done}") == 12)
    samples = _scrape(metrics_port)
    assert samples["logdispatch_lines_total"] == expected_lines
    assert samples["logdispatch_error_lines_total"] == expected_errors
    assert samples["logdispatch_file_seconds_count"] == 12
    assert samples["logdispatch_file_seconds_bucket{le=+Inf}"] == 12
    assert samples["logdispatch_queue_depth"] == 0
    assert samples["logdispatch_in_flight"] == 0
    wait_for(lambda: _scrape(metrics_port)["logdispatch_workers_connected"] == 2)
    assert samples["process_resident_memory_bytes"] > 0
    assert not any(name.startswith("logdispatch_count_lines") for name in samples)


COUNTERS = {"warn": rb"\bWARN\b", "slow": rb"took [0-9]{4,}ms"}


def test_counters_since_start_in_status_and_metrics(cluster: Cluster) -> None:
    """Each named counter's lines in the content counted since start, each piece once: a copy
    adds nothing, and what a master counted before it started is not its own."""
    (cluster.root / "before.log").write_bytes(b"WARN counted by an earlier master\n")
    args = [arg for name, p in COUNTERS.items() for arg in ("--count", f"{name}={p.decode()}")]
    run = subprocess.run(
        [*LOGDISPATCH, "run", str(cluster.root), "--once", "--settle", "0", "--state",
         str(cluster.state), *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    metrics_port = free_port()
    master = cluster.serve(*args, "--metrics", f"127.0.0.1:{metrics_port}")
    wait_for(lambda: "metrics at http://" in master.output)
    key = ["--address", cluster.address, "--authkey-file", str(cluster.key_file)]
    # Shown from the start, at zero.
    assert fetch(("127.0.0.1", cluster.port), AUTHKEY.encode())["since_start"]["counts"] == {
        "warn": 0,
        "slow": 0,
    }
    assert _scrape(metrics_port)["logdispatch_count_lines_total{counter=slow}"] == 0

    contents = [
        b"".join(b"%d WARN took %dms\n" % (n, 990 + n * i) for n in range(40 * i + 5))
        + b"INFO WARNING is not WARN's word\nfine\n"
        for i in range(6)
    ]
    for i, content in enumerate(contents):
        (cluster.root / f"f{i}.log").write_bytes(content)
    (cluster.root / "copy.log").write_bytes(contents[3])
    expected = dict.fromkeys(COUNTERS, 0)
    for content in contents:
        counts = reference_line_counts(content, list(COUNTERS.values()))
        for name, count in zip(COUNTERS, counts, strict=True):
            expected[name] += count
    assert expected["warn"] > expected["slow"] > 0
    cluster.work()
    cluster.work()
    wait_for(
        lambda: fetch(("127.0.0.1", cluster.port), AUTHKEY.encode())["since_start"]["done"] == 7
    )

    shown = subprocess.run(
        [*LOGDISPATCH, "status", *key, "--json"], capture_output=True, text=True, timeout=30
    )
    assert shown.returncode == 0, shown.stderr
    since = json.loads(shown.stdout)["since_start"]
    assert since["counts"] == expected
    assert list(since["counts"]) == list(COUNTERS)  # in the order they were given
    # The ledger's totals hold the earlier master's file too.
    totals = cluster.summary()["totals"]["counts"]
    assert totals == {"warn": expected["warn"] + 1, "slow": expected["slow"]}

    table = subprocess.run(
        [*LOGDISPATCH, "status", *key], env={**os.environ, "COLUMNS": "120"},
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    since_start = next(i for i, line in enumerate(lines) if line.startswith("since start"))
    assert lines[since_start + 1].split() == ["counters", "warn", f"{expected['warn']:,}",
                                              "slow", f"{expected['slow']:,}"]  # fmt: skip

    samples = _scrape(metrics_port)
    assert samples["logdispatch_count_lines_total{counter=warn}"] == expected["warn"]
    assert samples["logdispatch_count_lines_total{counter=slow}"] == expected["slow"]
    assert samples["logdispatch_files_total{state=done}"] == 7


def test_metrics_address_in_use_is_a_clear_error(cluster: Cluster) -> None:
    with port_in_use() as port:
        # Refused at start, before the ledger is opened (tests/test_preflight.py).
        master = cluster.serve_refused("--metrics", f"127.0.0.1:{port}")
    assert master.returncode == 2
    assert f"cannot serve metrics on 127.0.0.1:{port}" in master.stderr


def _small_root(tmp_path: Path, files: int) -> Path:
    root = tmp_path / "logs"
    root.mkdir()
    for i in range(files):
        (root / f"{i}.log").write_bytes(b"line\n" * (i + 1))
    return root


def test_run_once_reports_progress_without_a_terminal_and_quiet_silences_it(
    tmp_path: Path,
) -> None:
    root = _small_root(tmp_path, 30)
    shown = subprocess.run(
        [*LOGDISPATCH, "run", str(root), "--once", "--state", str(tmp_path / "s1")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert "logdispatch run: 30 files (" in shown.stderr
    assert "30 done" in shown.stdout  # the summary stays on stdout, alone

    quiet = subprocess.run(
        [*LOGDISPATCH, "run", str(root), "--once", "-q", "--state", str(tmp_path / "s2")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""


def test_run_once_draws_a_bar_on_a_terminal(tmp_path: Path) -> None:
    root = _small_root(tmp_path, 30)
    controller, terminal = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*LOGDISPATCH, "run", str(root), "--once", "--state", str(tmp_path / "s")],
            stdout=subprocess.DEVNULL,
            stderr=terminal,
            env={**os.environ, "COLUMNS": "120", "TERM": "xterm"},
        )
        os.close(terminal)
        drawn = b""
        while True:
            ready, _, _ = select.select([controller], [], [], 60)
            if not ready:
                break
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the terminal's other end closed
                break
            if not chunk:
                break
            drawn += chunk
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(controller)
    text = drawn.decode(errors="replace")
    assert "30/30 files" in text
    assert "━" in text  # the bar itself
