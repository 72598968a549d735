"""The manager server against clients that misbehave: silent, garbage, wrong key."""

from __future__ import annotations

import logging
import queue
import socket
import struct
import threading
import time
from collections.abc import Iterator
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from multiprocessing.managers import dispatch

import pytest
from conftest import manager_server, task_queue_of, wait_for

from dispatcher.transport.server import ManagerServer, ResultSink
from dispatcher.transport.taskqueue import TaskQueue
from dispatcher.versions import Rules, Version

KEY = b"server-test-key"


@pytest.fixture
def server() -> Iterator[ManagerServer]:
    with manager_server(KEY, 0.5, Version(1, b"a.log", 10, 1)) as srv:
        yield srv


def _closed_by_server(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass  # the challenge, then nothing
    except TimeoutError:
        return False
    except ConnectionResetError:
        pass  # closed with our bytes unread: a reset, still a close
    return True


def test_silent_connection_is_dropped_after_the_login_timeout(
    server: ManagerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "logdispatch.dispatcher.transport")
    started = time.monotonic()
    with socket.create_connection(server.address) as silent:
        assert _closed_by_server(silent, within=5)
    assert time.monotonic() - started < 3
    wait_for(lambda: "no login within 0.5 s" in caplog.text)
    assert task_queue_of(server, KEY).describe()["root"] == b"/srv/logs"


def test_a_byte_at_a_time_does_not_outlast_the_login_timeout(server: ManagerServer) -> None:
    started = time.monotonic()
    closed = False
    with socket.create_connection(server.address) as dripping:
        dripping.recv(4096)  # the challenge
        dripping.sendall(struct.pack("!i", 200))  # announces a 200-byte answer...
        dripping.settimeout(0.1)
        while not closed and time.monotonic() - started < 10:
            try:
                dripping.sendall(b"x")  # ...and sends it one byte every 0.1 s
                closed = dripping.recv(4096) == b""
            except TimeoutError:
                continue
            except OSError:
                closed = True
    assert closed
    assert time.monotonic() - started < 2  # the 0.5 s deadline, not the 20 s the drip needs


def test_garbage_is_refused_and_logged(
    server: ManagerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "logdispatch.dispatcher.transport")
    with socket.create_connection(server.address) as noisy:
        noisy.sendall(bytes(range(256)) * 8)
        assert _closed_by_server(noisy, within=5)
    assert "refused connection from 127.0.0.1" in caplog.text
    [task] = task_queue_of(server, KEY).take("w1", 5, 1 << 20, 0)
    assert task.path == b"a.log"


def test_wrong_key_gets_no_traceback_and_workers_cannot_stop_the_server(
    server: ManagerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "logdispatch.dispatcher.transport")
    with pytest.raises(AuthenticationError):
        task_queue_of(server, b"wrong")
    wait_for(lambda: "refused connection" in caplog.text)  # logged after the client's error
    conn = Client(server.address, authkey=KEY)
    with pytest.raises(EOFError):  # refused without an answer
        dispatch(conn, None, "shutdown")
    conn.close()
    assert "'shutdown' is not served" in caplog.text
    assert task_queue_of(server, KEY).describe()["lease"] > 0


def test_clients_that_hang_up_mid_call_leave_the_server_serving(
    server: ManagerServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "logdispatch.dispatcher.transport")
    # Logged in, then half a request and gone.
    conn = Client(server.address, authkey=KEY)
    conn._send(struct.pack("!i", 1000) + b"partial")  # type: ignore[attr-defined]
    conn.close()

    # A proxy connection that dies while its take() waits on the server. On its own thread:
    # proxies cache one connection per thread, and this one is left broken.
    def dying_client() -> None:
        proxy = task_queue_of(server, KEY)
        proxy.take("w0", 1, 1 << 20, 0)  # empties the queue
        raw = proxy._tls.connection
        raw.send((proxy._id, "take", ("w1", 1, 1 << 20, 2.0), {}))
        raw.close()

    thread = threading.Thread(target=dying_client)
    thread.start()
    thread.join()
    time.sleep(0.2)
    fresh = task_queue_of(server, KEY)
    assert fresh.describe()["root"] == b"/srv/logs"
    assert fresh.take("w2", 1, 1 << 20, 0) == []


def test_each_connection_is_a_session_of_its_own_even_on_a_reused_thread() -> None:
    contacts: list[int] = []
    ended: list[int] = []
    tasks = TaskQueue(
        b"/srv/logs",
        Rules(b"ERROR"),
        {}.get,
        on_contact=lambda _, s: contacts.append(s),
        secret=b"k" * 32,
    )
    srv = ManagerServer(
        ("127.0.0.1", 0),
        KEY,
        tasks,
        ResultSink(queue.SimpleQueue()),
        5.0,
        on_disconnect=ended.append,
    )
    srv.start()
    try:
        for n in range(1, 6):
            # One connection at a time, each from a thread that ends with it: the server's
            # thread for the next one is likely to get the same thread id.
            caller = threading.Thread(target=lambda: task_queue_of(srv, KEY).take("h:1", 1, 1, 0))
            caller.start()
            caller.join()
            wait_for(lambda n=n: len(ended) == n)  # type: ignore[misc]
    finally:
        srv.stop()
    assert len(set(contacts)) == 5
    assert ended == contacts
