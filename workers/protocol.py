"""What crosses the wire between master and workers.

The task and result types and what a reply may name, the manager class with its registered
names, the client connection with the timeouts a network needs, and TLS. The limits of what a
worker may send and the restricted unpickling both ends read messages with live in
``workers.wirechecks``; a worker needs nothing of the master's.

It is the workers' one user of the stdlib manager's private parts (each marked "stdlib
internal" with what it relies on; checked on Python 3.11 to 3.13).
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import io
import logging
import os
import socket
import stat
import struct
import sys
from dataclasses import dataclass
from enum import StrEnum
from multiprocessing.connection import (
    Connection,
    Listener,
    answer_challenge,
    deliver_challenge,
    wait,
)
from multiprocessing.managers import (  # type: ignore[attr-defined]
    BaseManager,
    BaseProxy,
    listener_client,
)
from typing import TYPE_CHECKING, Any

from workers.common import TLSFiles
from workers.errors import ConfigError
from workers.wirechecks import load_message

# ssl loads only where TLS is used: importing it would lengthen every worker's and status' start.
if TYPE_CHECKING:
    import ssl

log = logging.getLogger(f"logdispatch.{__name__}")

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
# which made unpickling a result several times slower. Nothing changes them.
@dataclass(slots=True)
class Base:
    """An earlier counted version that a task's content may extend (docs/counting.md,
    "Extending an earlier version"): its fingerprint and the full counts it was counted with."""

    version_id: int
    fingerprint: bytes  # workers.fingerprint's, of the base's content: its length, head, tail
    lines: int
    error_lines: int
    # Its counters' counts, in the order of the task's counters. A base whose counts are not
    # one per counter of the task is not used at all (workers.counting's bases).
    counts: tuple[int, ...] = ()

    def __reduce__(self) -> tuple[type[Base], tuple[object, ...]]:
        # As Task.__reduce__: a task may carry several.
        return Base, (self.version_id, self.fingerprint, self.lines, self.error_lines, self.counts)


@dataclass(slots=True)
class Task:
    """One file version to count; ``path`` is relative to the watched root, exact bytes."""

    id: int
    path: bytes
    size: int
    mtime_ns: int
    attempt: int
    error_pattern: bytes
    # The master's signature of this lease (version, attempt, path, size, mtime): a result,
    # heartbeat or hand-back for the task must bring it back, so that nobody but the holder of
    # this very lease can report on it, and a result can never land on another version.
    lease: bytes = b""
    # Earlier versions the content may extend, at most workers.wirechecks.MAX_BASES: the worker
    # reports the longest one it does extend, and reads only past it where it can.
    bases: tuple[Base, ...] = ()
    # A log still growing (the master's --follow): its content is counted up to the last
    # complete line of its first ``size`` bytes, and may grow meanwhile. A compressed file is
    # counted as any other, whole and unchanged.
    growing: bool = False
    # Named counters, (name, pattern) pairs (workers.matching.check_counters): the lines each
    # matches are counted beside the error lines, in this order (Result.counts).
    counters: tuple[tuple[str, bytes], ...] = ()

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
            self.lease,
            self.bases,
            self.growing,
            self.counters,
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
    lease: bytes = b""  # the task's lease signature, returned as it came
    # st_dev and st_ino of the file counted, from the worker's fstat of it (0: not known): the
    # master moves or deletes only that file (see its --on-done).
    device: int = 0
    inode: int = 0
    # The fingerprint of the content counted (workers.fingerprint) for a done result, else
    # b"". Last and with a default, so that a result from a worker that sends none still
    # loads: its content's fingerprint is then not known.
    fingerprint: bytes = b""
    # The version id of the task's base that the content counted extends, 0 for none; the
    # counts are the content's full counts all the same. Last with a default, as fingerprint.
    extends: int = 0
    # The lines each of the task's counters matched, in the task's order, for a done result.
    # Last with a default, as fingerprint: a result from a worker that sends none still loads.
    counts: tuple[int, ...] = ()

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
            self.lease,
            self.device,
            self.inode,
            self.fingerprint,
            self.extends,
            self.counts,
        )

    def __post_init__(self) -> None:
        if not isinstance(self.status, Status):
            # A dict first, cheaper than Status()'s own lookup; that still refuses an unknown value.
            self.status = _STATUSES.get(self.status) or Status(self.status)


# What an unpickled reply may name. Pickle calls whatever class or function a message names,
# so a message naming anything else (``os.system``...) is refused before it runs. Replies name
# tasks and results, and the exceptions a served method may raise; what a request may name is
# the master's to say.
REPLY_TYPES: dict[tuple[str, str], Any] = {
    **{(t.__module__, t.__qualname__): t for t in (Task, Base, Result, Status)},
    **{
        ("builtins", name): value
        for name, value in vars(builtins).items()
        if isinstance(value, type) and issubclass(value, Exception)
    },
}


class _ClientConnection(Connection):
    """A connection to the master whose replies may name only ``REPLY_TYPES``."""

    def recv(self) -> Any:
        return load_message(self.recv_bytes(), REPLY_TYPES)


class TLSConnection(Connection):
    """A ``Connection`` over TLS: the stdlib's reads and writes its descriptor directly.

    Stdlib internal: Connection's framing (send_bytes, recv_bytes) does all its I/O through
    _send(buf), _recv(size) -> BytesIO, _poll(timeout) and _close(), overridden here
    (3.11 to 3.13).
    """

    def __init__(self, sock: ssl.SSLSocket) -> None:
        super().__init__(sock.fileno())
        self.tls_socket = sock

    def _close(self, _close: Any = None) -> None:
        self.tls_socket.close()

    def _send(self, buf: Any, write: Any = None) -> None:
        self.tls_socket.sendall(buf)

    def _recv(self, size: int, read: Any = None) -> io.BytesIO:
        buf = io.BytesIO()
        remaining = size
        while remaining > 0:
            chunk = self.tls_socket.recv(min(remaining, 1 << 20))
            if not chunk:
                if remaining == size:
                    raise EOFError
                raise OSError("got end of file during message")
            buf.write(chunk)
            remaining -= len(chunk)
        return buf

    def _poll(self, timeout: float) -> bool:
        # Decrypted bytes waiting in the TLS layer do not show on the descriptor.
        return self.tls_socket.pending() > 0 or bool(wait([self.tls_socket], timeout))


class _TLSClientConnection(TLSConnection, _ClientConnection):
    pass


def client_context(files: TLSFiles) -> ssl.SSLContext:
    """A client's TLS: its certificate, and the master's checked against the CA and against
    the host name or address the client connects to."""
    import ssl

    return load_tls(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), files)


def load_tls(context: ssl.SSLContext, files: TLSFiles) -> ssl.SSLContext:
    """``context`` with this host's certificate and key and the CA, TLS 1.2 at least; files
    that cannot be read or do not match are a ConfigError. The master's side uses it too."""
    import ssl

    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
    except ssl.SSLError as e:
        raise ConfigError(
            f"--tls-cert {files.cert} with --tls-key {files.key}: {tls_error_text(e)}"
        ) from None
    except OSError as e:
        raise ConfigError(
            f"cannot read --tls-cert {files.cert} or --tls-key {files.key}: {e.strerror}"
        ) from None
    with contextlib.suppress(OSError):
        mode = os.stat(files.key).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            log.warning(
                "TLS key file %s is readable by group or others (mode %o): chmod 600 it",
                files.key,
                stat.S_IMODE(mode),
            )
    try:
        context.load_verify_locations(cafile=files.ca)
    except ssl.SSLError as e:
        raise ConfigError(f"--tls-ca {files.ca}: {tls_error_text(e)}") from None
    except OSError as e:
        raise ConfigError(f"cannot read --tls-ca {files.ca}: {e.strerror}") from None
    return context


def tls_error_text(error: BaseException) -> str | None:
    """A TLS error as one line (its verification message or reason, not the C location);
    None for any other error."""
    ssl = sys.modules.get("ssl")  # not loaded: no TLS, so no TLS error
    if ssl is None or not isinstance(error, ssl.SSLError):
        return None
    verify = getattr(error, "verify_message", None)
    if verify:
        return f"certificate verify failed: {verify}"
    reason = error.reason or str(error)
    return str(reason).lower().replace("_", " ")


def tls_refused(error: BaseException) -> bool:
    """Whether ``error`` is the other end refusing this end's TLS (a certificate it does not
    trust, or none), or this end refusing the other's: a setting to fix, not a lost network."""
    ssl = sys.modules.get("ssl")
    if ssl is None:
        return False
    if isinstance(error, ssl.SSLCertVerificationError):
        return True
    return isinstance(error, ssl.SSLError) and "ALERT" in str(error.reason or "")


def _connect(
    address: tuple[str, int],
    family: object = None,
    authkey: bytes | None = None,
    tls: ssl.SSLContext | None = None,
) -> Any:
    """``multiprocessing.connection.Client`` with the timeouts a real network needs, over
    ``tls`` if given.

    The stdlib client connects and waits for replies without limit, so a master that hangs or a
    host that vanishes without a reset would block a worker for good (and past its SIGTERM).
    """
    sock = socket.create_connection(address, timeout=CONNECT_TIMEOUT_SECONDS)
    try:
        sock.settimeout(None)  # blocking again, as Connection expects; reads time out below
        # Without it, Nagle's algorithm and delayed ACKs hold some messages back until the
        # peer's delayed ACK: connecting waited for one, and so did every message over 16 KiB
        # (sent in two writes).
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
    conn: Connection
    if tls is None:
        conn = _ClientConnection(sock.detach())
    else:
        # The handshake runs under the timeouts above; a failed one closes the socket.
        conn = _TLSClientConnection(tls.wrap_socket(sock, server_hostname=address[0]))
    if authkey is not None:
        answer_challenge(conn, authkey)
        deliver_challenge(conn, authkey)
    return conn


# Proxies find their connection factory by serializer name: this one pickles like "pickle".
# Stdlib internal: managers.listener_client, {serializer: (Listener, Client)}, where managers
# and proxies look up their connection factory, called as Client(address, authkey=...)
# (3.11 to 3.13).
SERIALIZER = "logdispatch"
listener_client[SERIALIZER] = (Listener, _connect)


def forget_connection(address: tuple[str, int]) -> None:
    """Drop the proxies' cached connections to ``address`` (they are cached per address and
    thread), so the next proxy connects afresh instead of reusing a broken one.

    Proxies that still exist keep their own reference, so other threads are not disturbed.

    Stdlib internal: BaseProxy._address_to_local, {address: (threading.local holding the
    connection, set of proxy ids)} guarded by BaseProxy._mutex; a proxy made after the entry
    is gone makes a new one (3.11 to 3.13).
    """
    with BaseProxy._mutex:
        BaseProxy._address_to_local.pop(address, None)


@functools.cache
def _serializer(tls: TLSFiles | None) -> str:
    """The name under which proxies find the connection factory for ``tls``."""
    if tls is None:
        return SERIALIZER
    name = f"{SERIALIZER}+tls{len(listener_client)}"
    listener_client[name] = (Listener, functools.partial(_connect, tls=client_context(tls)))
    return name


class DispatchManager(BaseManager):
    """Client side of the master's manager server.

    ``get_task_queue`` serves ``take(worker_id, max_items, max_bytes, timeout) -> list[Task]``,
    ``heartbeat(worker_id, leases, counting) -> list[int]`` (``leases`` are ``(task id,
    Task.lease)`` pairs; returns the ids no longer leased to the caller; ``counting`` is the id
    of the task being counted), ``release(worker_id, leases)`` (hand back untouched tasks) and
    ``describe() -> dict``
    (``root``: the master's root path as bytes, ``lease``: lease seconds);
    ``get_result_queue`` serves ``put(results: list[Result])``; ``get_status`` serves
    ``status() -> dict`` (the document of ``logdispatch status``).

    With ``tls``, every connection is TLS (the files are read once per process).
    """

    def __init__(
        self, address: tuple[str, int], authkey: bytes, tls: TLSFiles | None = None
    ) -> None:
        super().__init__(address, authkey, serializer=_serializer(tls))


DispatchManager.register("get_task_queue")
DispatchManager.register("get_result_queue")
DispatchManager.register("get_status")
