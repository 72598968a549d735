"""Hostile input from the network and from the watched tree: the master keeps serving."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any

from conftest import Cluster, as_unprivileged, wait_for

from dispatcher.inbox import Scanned
from dispatcher.watch.scanner import Eligibility, Scanner


def _rss_peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_idle_and_garbage_connections_do_not_stop_the_work(cluster: Cluster) -> None:
    master = cluster.serve()
    cluster.work()
    host, port = "127.0.0.1", cluster.port
    silent = [socket.socket() for _ in range(200)]  # from another host
    try:
        for sock in silent:
            sock.bind(("127.0.0.2", 0))
            sock.connect((host, port))
        with socket.create_connection((host, port)) as noisy:
            noisy.sendall(b"\xff" * 4096)  # garbage whose length header is absurd
        for i in range(20):
            (cluster.root / f"during-{i}.log").write_bytes(b"ERROR a\n" * i)
        wait_for(lambda: len(cluster.files()) == 20, timeout=20)
        wait_for(lambda: all(e["status"] == "done" for e in cluster.files().values()))
        # Those past the host's places are refused at once; the others are dropped after the
        # login timeout, their threads with them.
        assert "32 connections from there still logging in" in master.output
        wait_for(lambda: "no login within 5 s" in master.output, timeout=20)
    finally:
        for sock in silent:
            sock.close()
    assert "bad message length" in master.output  # the random bytes
    assert master.popen.poll() is None
    (cluster.root / "after.log").write_bytes(b"FATAL still serving\n")
    wait_for(lambda: cluster.files().get("after.log", {}).get("status") == "done")


def test_hostile_tree_only_regular_files_are_counted(cluster: Cluster) -> None:
    root = cluster.root
    broot = os.fsencode(root)
    expected: dict[bytes, bytes] = {}

    def put(rel: bytes, data: bytes) -> None:
        path = os.path.join(broot, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        expected[rel] = data

    put(b"with spaces/a file.log", b"ERROR spaced\n")
    put(b"odd/new\nline.log", b"FATAL newline in name\n")
    put(b"odd/caf\xe9-\xff.log", b"CRITICAL latin-1 name\n")
    put(b"odd/<script>alert(1)</script>.log", b"ERROR html\n")
    deep = b"/".join(b"d%d" % i for i in range(200))
    put(deep + b"/deep.log", b"ERROR two hundred levels down\n")

    os.mkfifo(root / "fifo.log")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "socket.log"))
    os.symlink(root / "with spaces/a file.log", root / "inside-link.log")
    os.symlink("/etc/passwd", root / "outside-link.log")
    os.symlink("loop-b.log", root / "loop-a.log")
    os.symlink("loop-a.log", root / "loop-b.log")
    os.symlink(root, root / "dir-loop")
    os.symlink("/etc", root / "etc-link")

    cluster.serve()
    worker = cluster.work()
    names = {os.fsencode(k) for k in expected}
    shown = {entry.encode("utf-8", "backslashreplace") for entry in cluster.files()}
    wait_for(lambda: len(cluster.files()) == len(expected), timeout=30)
    wait_for(lambda: all(e["status"] == "done" for e in cluster.files().values()))
    time.sleep(1.0)
    versions = cluster.versions()
    assert set(versions) == names, "something that is not a regular file was counted"
    assert all(statuses == ["done"] for statuses in versions.values())
    shown = set(cluster.files())
    assert "odd/caf\\xe9-\\xff.log" in shown and "odd/new\nline.log" in shown
    assert worker.popen.poll() is None


def test_a_1_gib_single_line_file_in_bounded_memory(cluster: Cluster) -> None:
    huge = cluster.root / "one-line.log"
    with open(huge, "wb") as f:
        f.truncate(1024**3)  # sparse: 1 GiB of NUL bytes, no newline
        f.seek(1024**3)
        f.write(b" ERROR at the very end")
    cluster.serve()
    worker = cluster.work()
    wait_for(lambda: cluster.files().get("one-line.log", {}).get("status") == "done", timeout=120)
    entry = cluster.files()["one-line.log"]
    assert (entry["lines"], entry["error_lines"]) == (1, 1)
    peak_mib = _rss_peak_kib(worker.popen.pid) / 1024
    print(f"worker peak RSS counting a 1 GiB line: {peak_mib:.1f} MiB")
    assert peak_mib < 100


def test_scan_survives_folders_vanishing_and_unreadable_folders(public_dir: Path) -> None:
    for i in range(200):
        (public_dir / f"d{i}" / "sub").mkdir(parents=True)
        (public_dir / f"d{i}" / "sub" / "x.log").write_bytes(b"x\n")
    locked = public_dir / "locked"
    locked.mkdir()
    (locked / "secret.log").write_bytes(b"x\n")
    locked.chmod(0)
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
    scanner = Scanner(os.fsencode(public_dir), Eligibility(), inbox)

    def remove_some() -> None:
        for i in range(0, 200, 2):
            shutil.rmtree(public_dir / f"d{i}", ignore_errors=True)

    remover = threading.Thread(target=remove_some)
    remover.start()
    scanner.scan()
    remover.join()

    def unprivileged_scan() -> list[bytes]:
        scanner.scan()
        found: list[bytes] = []
        while True:
            message = inbox.get()
            assert isinstance(message, Scanned)
            found += [seen.path for seen in message.seen]
            if message.complete:
                return found

    while not inbox.empty():
        message = inbox.get()
        assert isinstance(message, Scanned)
    found = as_unprivileged(unprivileged_scan)
    assert len(found) == 100  # the odd folders; the locked one cost only itself
    assert all(p.startswith(b"d") for p in found)
