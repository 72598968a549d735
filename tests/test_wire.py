"""What a key holder can make the master or a worker do through the wire: only the calls the
clients make, with only the types the protocol carries."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from multiprocessing.connection import Client, Listener
from multiprocessing.managers import dispatch
from pathlib import Path
from typing import Any

import pytest
from conftest import AUTHKEY, Cluster, manager_server, task_queue_of, wait_for

from dispatcher.transport.server import ManagerServer
from dispatcher.versions import Version
from workers.protocol import DispatchManager

KEY = b"wire-test-key"


class Touch:
    """Pickles as a call of ``os.system``: unpickling it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def server() -> Iterator[ManagerServer]:
    with manager_server(KEY, 5.0, Version(1, b"a.log", 10, 1)) as srv:
        yield srv


def _is_dropped(conn: Any) -> bool:
    """The server hung up without answering."""
    try:
        conn.recv_bytes()
    except (EOFError, OSError):
        return True
    return False


def test_a_pickled_call_is_refused_before_it_runs_and_the_master_keeps_counting(
    cluster: Cluster,
) -> None:
    master = cluster.serve()
    marker = cluster.tmp / "marker"
    host, port = "127.0.0.1", cluster.port
    key = AUTHKEY.encode()
    # As the first request, in place of the arguments of a call the server makes...
    conn = Client((host, port), authkey=key)
    conn.send((None, "dummy", (Touch(marker),), {}))
    assert _is_dropped(conn)
    conn.close()
    # ...and as the method's name on a proxy's connection.
    conn = Client((host, port), authkey=key)
    dispatch(conn, None, "accept_connection", ("attacker",))
    conn.send(("0", Touch(marker), (), {}))
    assert _is_dropped(conn)
    conn.close()
    wait_for(lambda: master.output.count("names posix.system, which is not allowed") == 2)
    assert not marker.exists()
    assert "connection dropped" in master.output
    cluster.work()
    (cluster.root / "after.log").write_bytes(b"ERROR one\nfine\n")
    wait_for(lambda: cluster.files().get("after.log", {}).get("status") == "done")
    assert (cluster.files()["after.log"]["lines"], cluster.files()["after.log"]["error_lines"]) == (
        2,
        1,
    )
    assert master.popen.poll() is None


@pytest.mark.parametrize(
    "request_",
    [
        (None, "debug_info", (), {}),
        (None, "number_of_objects", (), {}),
        (None, "shutdown", (), {}),
        (None, "get_methods", ("x",), {}),
        (None, "create", ("Queue",), {}),  # a name the stdlib's own managers register
        (None, "create", ("get_task_queue", "extra"), {}),
        (None, "create", ("get_task_queue",), {"x": 1}),
        (None, "accept_connection", (["not a name"],), {}),
        ("not a request",),
    ],
    ids=lambda r: str(r[1]) if len(r) > 1 else "shape",
)
def test_calls_the_clients_never_make_are_refused_and_logged(
    server: ManagerServer, caplog: pytest.LogCaptureFixture, request_: tuple[Any, ...]
) -> None:
    caplog.set_level(logging.WARNING, "logdispatch.dispatcher.transport")
    conn = Client(server.address, authkey=KEY)
    conn.send(request_)
    assert _is_dropped(conn)
    conn.close()
    wait_for(lambda: "refused request from 127.0.0.1" in caplog.text)
    assert "Traceback" not in caplog.text
    assert task_queue_of(server, KEY).describe()["root"] == b"/srv/logs"


@pytest.mark.parametrize("method", ["__repr__", "__str__", "#GETVALUE", "session_closed"])
def test_a_served_object_answers_only_its_exposed_methods(
    server: ManagerServer, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    caplog.set_level(logging.WARNING, "logdispatch.dispatcher.transport")
    done = threading.Event()
    dropped: list[bool] = []

    # On a thread of its own: proxies cache one connection per thread, and this one is dropped.
    def call() -> None:
        try:
            proxy = task_queue_of(server, KEY)
            proxy.describe()  # connects
            raw = proxy._tls.connection
            raw.send((proxy._id, method, (), {}))
            dropped.append(_is_dropped(raw))
        finally:
            done.set()

    threading.Thread(target=call).start()
    assert done.wait(10)
    assert dropped == [True]
    wait_for(lambda: f"{method!r} is not served" in caplog.text)
    [task] = task_queue_of(server, KEY).take("w1", 5, 1 << 20, 0)
    assert task.path == b"a.log"


def _hostile_master(listener: Listener, reply: Any, served: list[int]) -> None:
    """Answer every request on ``listener`` with ``reply`` until it is closed."""
    while True:
        try:
            conn = listener.accept()
        except OSError:
            return
        try:
            conn.recv()
            conn.send(("#RETURN", reply))
            served.append(1)
        except (OSError, EOFError):
            pass
        finally:
            conn.close()


def test_a_worker_refuses_a_pickled_call_in_a_reply_and_keeps_trying(cluster: Cluster) -> None:
    marker = cluster.tmp / "marker"
    listener = Listener(("127.0.0.1", cluster.port), authkey=AUTHKEY.encode())
    served: list[int] = []
    thread = threading.Thread(target=_hostile_master, args=(listener, Touch(marker), served))
    thread.start()
    try:
        worker = cluster.work()
        wait_for(lambda: len(served) >= 2, timeout=20)  # it tried again after the first
        assert "names posix.system, which is not allowed" in worker.output
        assert worker.popen.poll() is None
    finally:
        # A thread blocked in accept() does not wake when the socket is closed: connect once.
        listener._listener._socket.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
        listener.close()
        thread.join()
    assert not marker.exists()


def test_a_client_refuses_a_pickled_call_in_a_reply(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    listener = Listener(("127.0.0.1", 0), authkey=KEY)
    served: list[int] = []
    thread = threading.Thread(target=_hostile_master, args=(listener, Touch(marker), served))
    thread.start()
    try:
        with pytest.raises(EOFError, match=r"names posix\.system"):
            DispatchManager(address=listener.address, authkey=KEY).connect()
    finally:
        listener._listener._socket.shutdown(socket.SHUT_RDWR)  # type: ignore[attr-defined]
        listener.close()
        thread.join()
    assert not marker.exists()
