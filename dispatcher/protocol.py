"""What crosses the wire between master and workers.

The task and result types, the manager class with its registered names, and the client
connection with the timeouts a network needs. With ``dispatcher.common``, the only part of
``dispatcher`` that ``workers`` imports.
"""

from __future__ import annotations

import builtins
import io
import pickle
import socket
import struct
from dataclasses import dataclass
from enum import StrEnum
from multiprocessing.connection import Connection, Listener, answer_challenge, deliver_challenge
from multiprocessing.managers import (  # type: ignore[attr-defined]
    BaseManager,
    BaseProxy,
    listener_client,
)
from typing import Any

from dispatcher.common import printable

# A master that does not accept within this is unreachable for now.
CONNECT_TIMEOUT_SECONDS = 10.0
# Every reply is due well within this (the longest call, take(), waits 2 s on the master);
# a silent connection is then treated as lost instead of blocking forever.
REPLY_TIMEOUT_SECONDS = 30.0
# TCP keepalive (idle, interval, probes): a vanished peer is noticed within about 25 s.
KEEPALIVE = (
    (socket.TCP_KEEPIDLE, 10),
    (socket.TCP_KEEPINTVL, 5),
    (socket.TCP_KEEPCNT, 3),
)


class Status(StrEnum):
    """Outcome of one counting attempt, as a worker reports it."""

    DONE = "done"
    ERROR = "error"  # could not count (unreadable, corrupt archive...): retried, then failed
    VANISHED = "vanished"  # the file is gone
    CHANGED = "changed"  # size or mtime differ from the task: a newer version exists


_STATUSES = {status.value: status for status in Status}


# Tasks and results are made by the thousand a second on the master's server threads, under
# its GIL: not frozen, since a frozen dataclass sets each field through object.__setattr__,
# which made unpickling a result 3.7 times slower (5.1 against 1.4 us). Nothing changes them.
@dataclass(slots=True)
class Task:
    """One file version to count; ``path`` is relative to the watched root, exact bytes."""

    id: int
    path: bytes
    size: int
    mtime_ns: int
    attempt: int
    error_pattern: bytes

    def __reduce__(self) -> tuple[type[Task], tuple[object, ...]]:
        # Pickled as its constructor's arguments: several times faster both ways than the
        # dataclass default, which walks fields() for every object (tasks go in batches of 100s).
        return Task, (
            self.id,
            self.path,
            self.size,
            self.mtime_ns,
            self.attempt,
            self.error_pattern,
        )


@dataclass(slots=True)
class Result:
    """What a worker found for one task attempt."""

    task_id: int
    attempt: int
    worker: str
    status: Status
    lines: int = 0
    error_lines: int = 0
    bytes_read: int = 0
    long_lines: int = 0
    seconds: float = 0.0
    error: str | None = None
    samples: tuple[bytes, ...] = ()

    def __reduce__(self) -> tuple[type[Result], tuple[object, ...]]:
        # As Task.__reduce__; the status travels as its plain value.
        return Result, (
            self.task_id,
            self.attempt,
            self.worker,
            self.status.value,
            self.lines,
            self.error_lines,
            self.bytes_read,
            self.long_lines,
            self.seconds,
            self.error,
            self.samples,
        )

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):
            # A dict first: 0.1 us, where Status() takes 0.6; it still refuses an unknown value.
            self.status = _STATUSES.get(self.status) or Status(self.status)


# What an unpickled message may name. Pickle calls whatever class or function a message
# names, so a message naming anything else (``os.system``...) is refused before it runs.
# Requests name results (a result's status travels as its value); replies name tasks and the
# exceptions a served method may raise.
REQUEST_TYPES: dict[tuple[str, str], Any] = {
    (t.__module__, t.__qualname__): t for t in (Result, Status)
}
REPLY_TYPES: dict[tuple[str, str], Any] = {
    **{(t.__module__, t.__qualname__): t for t in (Task, Result, Status)},
    **{
        ("builtins", name): value
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, Exception)
    },
}


class MessageRefused(EOFError):
    """A message that names something outside its allowed types: the connection is dropped.

    An ``EOFError``, so that whoever reads it treats the connection as lost.
    """


class _WireUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, allowed: dict[tuple[str, str], Any]) -> None:
        super().__init__(io.BytesIO(data))
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[module, name]
        except KeyError:
            name = printable(f"{module}.{name}")
            raise MessageRefused(f"the message names {name}, which is not allowed") from None


def load_message(data: bytes, allowed: dict[tuple[str, str], Any]) -> Any:
    """Unpickle ``data``, refusing any class or function not in ``allowed``."""
    try:
        return _WireUnpickler(data, allowed).load()
    except MessageRefused:
        raise
    except Exception as e:  # a truncated or malformed pickle, or a type given bad arguments
        raise MessageRefused(f"malformed message: {printable(str(e))}") from None


class _ClientConnection(Connection):
    """A connection to the master whose replies may name only ``REPLY_TYPES``."""

    def recv(self) -> Any:
        return load_message(self.recv_bytes(), REPLY_TYPES)


def _connect(address: tuple[str, int], family: object = None, authkey: bytes | None = None) -> Any:
    """``multiprocessing.connection.Client`` with the timeouts a real network needs.

    The stdlib client connects and waits for replies without limit, so a master that hangs or a
    host that vanishes without a reset would block a worker for good (and past its SIGTERM).
    """
    sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        sock.settimeout(None)  # blocking again, as Connection expects; reads time out below
        # Without it, Nagle's algorithm and delayed ACKs hold some messages back 40 ms: a
        # connection took 45 ms instead of 1, and a message over 16 KiB (sent in two writes)
        # waited 40 ms every time.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for option, value in KEEPALIVE:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
        timeval = struct.pack("ll", int(REPLY_TIMEOUT_SECONDS), 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    except OSError:
        sock.close()
        raise
    conn = _ClientConnection(sock.detach())
    if authkey is not None:
        answer_challenge(conn, authkey)
        deliver_challenge(conn, authkey)
    return conn


# Proxies find their connection factory by serializer name: this one pickles like "pickle".
SERIALIZER = "logdispatch"
listener_client[SERIALIZER] = (Listener, _connect)


def forget_connection(address: tuple[str, int]) -> None:
    """Drop the proxies' cached connections to ``address`` (they are cached per address and
    thread), so the next proxy connects afresh instead of reusing a broken one.

    Proxies that still exist keep their own reference, so other threads are not disturbed.
    """
    with BaseProxy._mutex:
        BaseProxy._address_to_local.pop(address, None)


class DispatchManager(BaseManager):
    """Client side of the master's manager server.

    ``get_task_queue`` serves ``take(worker_id, max_items, max_bytes, timeout) -> list[Task]``,
    ``heartbeat(worker_id, task_ids) -> list[int]`` (ids no longer leased to that worker),
    ``release(worker_id, task_ids)`` (hand back untouched tasks) and ``describe() -> dict``
    (``root``: the master's root path as bytes, ``lease``: lease seconds);
    ``get_result_queue`` serves ``put(results: list[Result])``; ``get_status`` serves
    ``status() -> dict`` (the document of ``logdispatch status``).
    """

    def __init__(self, address: tuple[str, int], authkey: bytes) -> None:
        super().__init__(address, authkey, serializer=SERIALIZER)


DispatchManager.register("get_task_queue")
DispatchManager.register("get_result_queue")
DispatchManager.register("get_status")
