"""Floods of connections from one host do not lock `status` and workers out of the master."""

from __future__ import annotations

import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import LOGDISPATCH, Cluster, manager_server, wait_for

from dispatcher.transport.server import ManagerServer

ATTACKS = Path(__file__).parent / "attacks.py"
# Longer than the test needs: the attacker is stopped once the test is done with it.
ATTACK_SECONDS = 40.0
# `status` on an idle master answers well within this, a Python start-up included.
ANSWERED_WITHIN = 5.0
# Connections a second in the flood: the master refuses several times more on one core; what
# its host has left with both cores busy and the attacker taking its share is the limit.
FLOOD_RATE = 10_000


class Attack:
    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.popen = popen
        self.opened = 0
        self.seconds = 0.0


@contextmanager
def attacking(kind: str, port: int, *extra: str) -> Iterator[Attack]:
    attacker = subprocess.Popen(
        [sys.executable, str(ATTACKS), kind, str(port), str(ATTACK_SECONDS), *extra],
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


def _done(cluster: Cluster, name: str) -> bool:
    return bool(cluster.files().get(name, {}).get("status") == "done")


@pytest.mark.parametrize("kind", ["flood", "drip"])
def test_status_and_workers_get_through_a_flood_from_another_host(
    cluster: Cluster, kind: str
) -> None:
    cluster.serve()
    old = cluster.work()
    (cluster.root / "before.log").write_bytes(b"ERROR one\n")
    wait_for(lambda: _done(cluster, "before.log"))
    with attacking(kind, cluster.port, *([str(FLOOD_RATE)] if kind == "flood" else [])) as attacker:
        took = [_status_seconds(cluster) for _ in range(3)]
        print(f"{kind}: status answered in {took} s")
        assert max(took) < ANSWERED_WITHIN, took
        # The master restarts: the worker connected before it comes back through the attack.
        assert cluster.master is not None
        cluster.master.signal(signal.SIGKILL)
        cluster.master.wait()
        master = cluster.serve()
        (cluster.root / "during.log").write_bytes(b"ERROR one\nfine\n")
        wait_for(lambda: _done(cluster, "during.log"), timeout=30)
        assert old.output.count("connected to the master") == 2
        # And a new one gets in too.
        new = cluster.work()
        (cluster.root / "new.log").write_bytes(b"fine\n")
        wait_for(lambda: "connected to the master" in new.output, timeout=ANSWERED_WITHIN * 2)
        wait_for(lambda: _done(cluster, "new.log"), timeout=ANSWERED_WITHIN * 2)
        assert attacker.popen.poll() is None  # the attack lasted the whole test
    # As many as it was asked to open, or nearly: the attack was real.
    assert attacker.opened > (FLOOD_RATE * attacker.seconds * 0.8 if kind == "flood" else 450)
    assert master.popen.poll() is None
    assert "127.0.0.2" in master.output  # refusals are logged...
    assert master.output.count("refused connection from 127.0.0.2") < 100  # ...not each one


@pytest.fixture
def server() -> Iterator[ManagerServer]:
    with manager_server(b"key", 5.0) as srv:
        yield srv


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
