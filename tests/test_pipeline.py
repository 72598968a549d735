"""End to end: a real `serve` process, real `work` processes, files landing in a real folder."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from pathlib import Path

from conftest import Cluster, child_pids, wait_for
from reference import reference_counts

SAMPLES = Path(__file__).parent.parent / "sample_logs"


def _all_done(cluster: Cluster, expected: set[str]) -> bool:
    files = cluster.files()
    return set(files) == expected and all(f["status"] == "done" for f in files.values())


def test_files_landing_in_every_way_are_counted_once_and_right(cluster: Cluster) -> None:
    cluster.serve()
    cluster.work()
    cluster.work()
    root = cluster.root
    expected: dict[str, bytes] = {}

    # Copied in, in host folders.
    for name in ("app-01/python/app.log", "web-01/nginx/access.log", "db-01/syslog"):
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SAMPLES / name, target)
        expected[name] = target.read_bytes()

    # Written under a .tmp name, then renamed into place.
    (root / "api-01").mkdir()
    (root / "api-01/events.jsonl.tmp").write_bytes((SAMPLES / "api-01/events.jsonl").read_bytes())
    os.rename(root / "api-01/events.jsonl.tmp", root / "api-01/events.jsonl")
    expected["api-01/events.jsonl"] = (SAMPLES / "api-01/events.jsonl").read_bytes()

    # Never counted: hidden names and folders, unfinished names, a FIFO, a socket, symlinks.
    (root / ".hidden.log").write_bytes(b"ERROR hidden\n")
    (root / ".snapshot").mkdir()
    (root / ".snapshot/old.log").write_bytes(b"ERROR in a hidden folder\n")
    (root / "upload.log.part").write_bytes(b"ERROR partial\n")
    (root / "left.log.tmp").write_bytes(b"ERROR still a temp file\n")
    os.mkfifo(root / "pipe.log")
    with socket.socket(socket.AF_UNIX) as unix_socket:
        unix_socket.bind(str(root / "socket.log"))
    os.symlink(root / "db-01/syslog", root / "link-inside.log")
    outside = cluster.tmp / "outside.log"
    outside.write_bytes(b"ERROR outside the root\n")
    os.symlink(outside, root / "link-outside.log")

    # Written slowly: appended to every 0.2 s, longer than --settle (0.5 s) in all.
    slow = root / "slow.log"
    content = b""
    for i in range(8):
        chunk = f"2026-11-27 10:00:0{i} ERROR step {i}\nINFO ok\n".encode()
        with open(slow, "ab") as f:
            f.write(chunk)
        content += chunk
        time.sleep(0.2)
    expected["slow.log"] = content

    wait_for(lambda: _all_done(cluster, set(expected)))
    time.sleep(1.5)  # anything counted twice or late would show up now
    files = cluster.files()
    assert set(files) == set(expected)
    for name, data in expected.items():
        lines, error_lines = reference_counts(data)
        assert (files[name]["lines"], files[name]["error_lines"]) == (lines, error_lines), name
        assert files[name]["attempts"] == 1
    assert all(statuses == ["done"] for statuses in cluster.versions().values())
    assert files["slow.log"]["lines"] == 16  # its final content, not a prefix


def test_modified_file_is_counted_again_as_a_new_version(cluster: Cluster) -> None:
    cluster.serve()
    cluster.work()
    log = cluster.root / "app.log"
    log.write_bytes(b"INFO start\nERROR one\n")
    wait_for(lambda: cluster.files().get("app.log", {}).get("status") == "done")
    with open(log, "ab") as f:
        f.write(b"ERROR two\nFATAL three\n")
    wait_for(lambda: cluster.files()["app.log"]["lines"] == 4)
    assert cluster.files()["app.log"]["error_lines"] == 3
    assert cluster.versions() == {b"app.log": ["done", "done"]}


def test_worker_reaching_the_root_through_another_path(cluster: Cluster) -> None:
    alias = cluster.tmp / "mnt-logs"
    os.symlink(cluster.root, alias)
    (cluster.root / "host-a").mkdir()
    data = (SAMPLES / "batch-01/java/server.log").read_bytes()
    (cluster.root / "host-a/server.log").write_bytes(data)
    cluster.serve()
    worker = cluster.work("--root", str(alias))
    wait_for(lambda: cluster.files().get("host-a/server.log", {}).get("status") == "done")
    entry = cluster.files()["host-a/server.log"]
    assert (entry["lines"], entry["error_lines"]) == reference_counts(data)
    assert entry["worker"].endswith(f":{worker.popen.pid}")


def test_wrong_authkey_is_refused_and_the_master_keeps_serving(cluster: Cluster) -> None:
    master = cluster.serve()
    bad_key = cluster.tmp / "bad-key"
    bad_key.write_text("not the key\n")
    bad_key.chmod(0o600)
    intruder = cluster.work(key_file=bad_key)
    assert intruder.wait() != 0
    errors = [line for line in intruder.output.splitlines() if "refused" in line]
    assert len(errors) == 1 and "authkey" in errors[0], intruder.output
    assert "Traceback" not in intruder.output
    wait_for(lambda: "refused connection from 127.0.0.1" in master.output)

    (cluster.root / "after.log").write_bytes(b"ERROR still served\n")
    cluster.work()
    wait_for(lambda: cluster.files().get("after.log", {}).get("status") == "done")
    assert master.popen.poll() is None


def test_work_processes_and_sigterm_stop_everything_cleanly(cluster: Cluster) -> None:
    master = cluster.serve()
    worker = cluster.work("--processes", "2")
    wait_for(lambda: len(child_pids(worker.popen.pid)) == 2)
    for i in range(300):
        # Each file's own content: the same content under two names is counted once.
        (cluster.root / f"f{i:03}.log").write_bytes(b"ERROR %d\n" % i * (i % 5))
    wait_for(lambda: cluster.summary()["totals"].get("done") == 300)
    assert cluster.summary()["totals"]["error_lines"] == sum(i % 5 for i in range(300))
    # A counting process compiles the pattern once, not per file, and says what searches and
    # counts; one of the two may have been handed every file.
    assert 1 <= worker.output.count("hyperscan engine, lines counted by stringzilla") <= 2

    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    assert "Traceback" not in worker.output
    master.signal(signal.SIGTERM)
    assert master.wait() == 0
    assert "stopped" in master.output
