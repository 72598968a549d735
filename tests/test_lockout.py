"""Floods of connections from one host do not lock `status` and workers out of the master."""

from __future__ import annotations

import queue
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import LOGDISPATCH, Cluster, wait_for

from dispatcher.server import ManagerServer, ResultSink
from dispatcher.taskqueue import TaskQueue

ATTACKS = Path(__file__).parent / "attacks.py"
# Longer than the test needs: the attacker is stopped once the test is done with it.
ATTACK_SECONDS = 40.0
# `status` on an idle master answers well within this, a Python start-up included.
ANSWERED_WITHIN = 5.0


class Attack:
    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.popen = popen
        self.opened = 0
        self.seconds = 0.0


@contextmanager
def attacking(kind: str, port: int) -> Iterator[Attack]:
    attacker = subprocess.Popen(
        [sys.executable, str(ATTACKS), kind, str(port), str(ATTACK_SECONDS)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert attacker.stdout is not None
        assert attacker.stdout.readline() == "started\n"
        time.sleep(2.0)  # under way: the backlog and the login slots are full by now
        attack = Attack(attacker)
        yield attack
    finally:
        attacker.terminate()
        out, _ = attacker.communicate(timeout=10)
    _, opened, seconds = out.split()
    attack.opened, attack.seconds = int(opened), float(seconds)
    print(f"{kind}: {attack.opened} connections in {attack.seconds} s")


def _status_seconds(cluster: Cluster) -> float:
    started = time.monotonic()
    key = ["--address", cluster.address, "--authkey-file", str(cluster.key_file)]
    shown = subprocess.run(
        [*LOGDISPATCH, "status", *key, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    return time.monotonic() - started


@pytest.mark.parametrize("kind", ["flood", "drip"])
def test_status_and_a_new_worker_get_through_a_flood_from_another_host(
    cluster: Cluster, kind: str
) -> None:
    master = cluster.serve()
    with attacking(kind, cluster.port) as attacker:
        took = [_status_seconds(cluster) for _ in range(3)]
        print(f"{kind}: status answered in {took} s")
        assert max(took) < ANSWERED_WITHIN, took
        cluster.work()
        (cluster.root / "during.log").write_bytes(b"ERROR one\nfine\n")
        wait_for(
            lambda: cluster.files().get("during.log", {}).get("status") == "done",
            timeout=ANSWERED_WITHIN * 2,
        )
        assert attacker.popen.poll() is None  # the attack lasted the whole test
    assert attacker.opened > (10_000 if kind == "flood" else 450)
    assert master.popen.poll() is None
    assert "127.0.0.2" in master.output  # refusals are logged...
    assert master.output.count("refused connection from 127.0.0.2") < 100  # ...not each one


@pytest.fixture
def server() -> Iterator[ManagerServer]:
    tasks = TaskQueue(b"/srv/logs", rb"ERROR")
    srv = ManagerServer(("127.0.0.1", 0), b"key", tasks, ResultSink(queue.SimpleQueue()), 5.0)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def test_a_burst_of_connections_is_queued_not_dropped(server: ManagerServer) -> None:
    # A connection the backlog has no room for is retried by the client's kernel after 1 s.
    burst = [socket.socket() for _ in range(300)]
    try:
        started = time.monotonic()
        for sock in burst:
            sock.setblocking(False)
            sock.connect_ex(server.address)
        pending = list(burst)
        while pending and time.monotonic() - started < 5:
            _, writable, _ = select.select([], pending, [], 0.1)
            pending = [sock for sock in pending if sock not in writable]
        assert not pending
        assert time.monotonic() - started < 0.9
    finally:
        for sock in burst:
            sock.close()


def test_a_connection_logging_in_costs_one_thread(server: ManagerServer) -> None:
    before = threading.active_count()
    silent = [socket.create_connection(server.address) for _ in range(20)]
    try:
        wait_for(lambda: threading.active_count() >= before + 20)
        time.sleep(0.2)  # any thread started for them is there by now
        assert threading.active_count() == before + 20
    finally:
        for sock in silent:
            sock.close()
