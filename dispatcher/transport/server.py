"""The manager server, run on threads inside the master process.

It serves the master's own ``TaskQueue`` and a ``ResultSink`` that hands results to the master
loop. On top of the stdlib ``multiprocessing.managers.Server`` it adds what a server on a real
network needs: a deadline for the authkey handshake, limits on the connections still logging
in (in all and per host), log lines for refused connections (instead of a traceback sent back
to the stranger, and not one per connection in a flood), requests checked before they run
(only the protocol's types, only the calls its clients make), optional TLS, and a clean stop.
The connections still logging in, their limits, deadlines and refusals, are
``dispatcher.transport.logins``'s; what the stdlib's requests and replies mean is said here.

It and ``dispatcher.transport.logins`` are the master's only users of the stdlib server's
private parts (each marked "stdlib internal" with what it relies on; checked on Python 3.11 to
3.13): no other module of the master touches them. Each connection is known by its session id
(``dispatcher.transport.sessions``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection, Listener
from multiprocessing.managers import BaseManager, Server
from typing import Any

from dispatcher import defaults
from dispatcher.inbox import Inbox, ResultsIn
from dispatcher.transport.logins import DoorLog, LoginGuard, Logins
from dispatcher.transport.requests import check_results, server_context
from dispatcher.transport.sessions import new_session, serving
from dispatcher.transport.taskqueue import TaskQueue
from workers.common import TLSFiles, format_address, format_peer, printable
from workers.errors import BadRequest
from workers.protocol import SERIALIZER, Result, TLSConnection

log = logging.getLogger(f"logdispatch.{__name__}")

# What a connection may ask before it is a proxy's (``accept_connection``): the calls the
# stdlib's clients make, each with the arguments it takes (stdlib internal: the names of
# Server.public, and the (ident, method, args, kwds) request of BaseManager._create,
# BaseProxy._incref/_decref and Server.handle_request, the same in 3.11 to 3.13). ``create``
# is further limited to the registered names, which take no arguments.
_ENTRY_POINTS = {"create": 1, "accept_connection": 1, "incref": 1, "decref": 1, "dummy": 0}

# The stdlib listens with a backlog of 16: a burst of connections overflowed it, and a client
# left out waited for its connection attempt to be retried (seconds). The kernel caps this at
# net.core.somaxconn.
LISTEN_BACKLOG = 4096


class ResultSink:
    """Served as ``get_result_queue``: accepts results and hands them to the master loop."""

    def __init__(self, inbox: Inbox) -> None:
        self._inbox = inbox

    def put(self, results: list[Result]) -> None:
        # Checked here, on the sender's own thread: a bad batch costs its sender the connection
        # (BadRequest, see LoginGuard.send), and nothing of it reaches the master loop.
        self._inbox.put(ResultsIn(check_results(results)))


class StatusService:
    """Served as ``get_status``: the master's status document on request."""

    def __init__(self, build: Callable[[], dict[str, Any]]) -> None:
        self._build = build

    def status(self) -> dict[str, Any]:
        return self._build()


class ManagerServer:
    """Listens on ``address`` and serves the task queue and result sink until ``stop()``."""

    def __init__(
        self,
        address: tuple[str, int],
        authkey: bytes,
        task_queue: TaskQueue,
        result_sink: ResultSink,
        login_timeout: float = defaults.LOGIN_TIMEOUT_SECONDS,
        status: StatusService | None = None,
        on_disconnect: Callable[[int], None] | None = None,
        tls: TLSFiles | None = None,
    ) -> None:
        """``on_disconnect`` gets the session id of each connection that ends."""

        # Registered per server (not on the shared client class) so that several servers can
        # live in one process; the callables are never pickled because the server is not forked.
        class _Served(BaseManager):
            pass

        def get_task_queue() -> TaskQueue:
            return task_queue

        def get_result_queue() -> ResultSink:
            return result_sink

        _Served.register(
            "get_task_queue", get_task_queue, exposed=("take", "heartbeat", "release", "describe")
        )
        _Served.register("get_result_queue", get_result_queue, exposed=("put",))
        if status is not None:

            def get_status() -> StatusService:
                return status

            _Served.register("get_status", get_status, exposed=("status",))
        # Stdlib internal: BaseManager._registry, the {typeid: (callable, exposed, ...)} that
        # register() fills and Server() takes as its first argument (3.11 to 3.13).
        registry = _Served._registry  # type: ignore[attr-defined]

        def disconnected(session: int) -> None:
            task_queue.session_closed(session)
            if on_disconnect is not None:
                on_disconnect(session)

        self._server = _GuardedServer(
            registry,
            address,
            authkey,
            SERIALIZER,
            login_timeout,
            disconnected,
            None if tls is None else server_context(tls),
        )
        self._thread = threading.Thread(
            target=self._server.accepter, name="manager-accept", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.address
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()
        log.info("serving on %s", format_address(self.address))

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.stop_serving()  # the accepting thread closes the socket as it ends
            self._thread.join(timeout=5)
        else:
            self._server.listener.close()


class _GuardedServer(Server):
    # A worker has no business stopping the master: drop the stdlib's remote "shutdown".
    # Stdlib internal: Server.public, the names handle_request() serves (3.11 to 3.13).
    public = [name for name in Server.public if name != "shutdown"]  # noqa: RUF012

    # The served objects live as long as the server: no client's decref may unregister them
    # (one decref with the right ident would cut every worker off), so counting is pointless.
    # Stdlib internal: Server.incref/decref(c, ident), called by handle_request() for the
    # proxies' requests of those names (3.11 to 3.13).
    def incref(self, c: Any, ident: str) -> None:
        pass

    def decref(self, c: Any, ident: str) -> None:
        pass

    registry: dict[str, Any]
    stop_event: threading.Event
    listener: Listener
    address: tuple[str, int]

    def __init__(
        self,
        registry: dict[str, Any],
        address: tuple[str, int],
        authkey: bytes,
        serializer: str,
        login_timeout: float,
        on_disconnect: Callable[[int], None],
        tls: ssl.SSLContext | None,
    ) -> None:
        super().__init__(registry, address, authkey, serializer)
        self._tls = tls
        # Stdlib internal: Listener._listener (a SocketListener) and its _socket, the bound
        # and listening socket (3.11 to 3.13).
        self._socket: socket.socket = self.listener._listener._socket  # type: ignore[attr-defined]
        self._socket.listen(LISTEN_BACKLOG)  # listening again only changes the backlog
        self._on_disconnect = on_disconnect
        self.stop_event = threading.Event()  # the stdlib makes it in serve_forever(), unused here
        self._logins = Logins(login_timeout)
        self._door = DoorLog()
        self._clients: weakref.WeakSet[LoginGuard] = weakref.WeakSet()

    def refusal(self, request: Any, serving: bool) -> str | None:
        """Why ``request`` is not served (None: it is), before the stdlib looks at it.

        The stdlib would answer a few more calls than the clients make (``debug_info``, the
        ``__repr__`` of a served object...); only what the clients make is served.
        """
        if not (isinstance(request, tuple) and len(request) == 4):
            return "not a request"
        ident, method, args, kwds = request
        if not (isinstance(method, str) and isinstance(args, tuple) and isinstance(kwds, dict)):
            return "not a request"
        if serving:
            # Stdlib internal: Server.id_to_obj, {ident: (obj, exposed names, method_to_typeid)}
            # for the served objects (3.11 to 3.13).
            entry = self.id_to_obj.get(ident) if isinstance(ident, str) else None
            if entry is None or method not in entry[1]:
                return f"{_shown(method)} is not served"
            return None
        if ident is not None or _ENTRY_POINTS.get(method) != len(args) or kwds:
            return f"{_shown(method)} is not served"
        if not all(isinstance(a, str) for a in args):
            return f"{_shown(method)} takes a name"
        if method == "create" and args[0] not in self.registry:
            return f"{_shown(args[0])} is not served"
        return None

    @staticmethod
    def failed_login(reply: Any) -> str | None:
        """Why the login failed, when ``reply`` is the answer to a failed login (else None).

        Stdlib internal: the server answers a failed login or request with a ("#TRACEBACK",
        text) reply (3.11 to 3.13).
        """
        if isinstance(reply, tuple) and reply[:1] == ("#TRACEBACK",):
            return str(reply[1]).strip().splitlines()[-1]
        return None

    @staticmethod
    def bad_request(reply: Any) -> bool:
        """Whether a reply of the stdlib server answers a call that raised BadRequest.

        Stdlib internal: serve_client() answers a served method's exception with ("#ERROR",
        exception) (3.11 to 3.13).
        """
        return (
            isinstance(reply, tuple)
            and len(reply) == 2
            and reply[0] == "#ERROR"
            and isinstance(reply[1], BadRequest)
        )

    def accepter(self) -> None:
        """Accept connections and give each a thread; the handshake happens on that thread.

        A connection refused at the door costs an accept and a close, no thread, no object.
        """
        self._logins.start()
        try:
            while not self.stop_event.is_set():
                try:
                    # The bare descriptor: a refused connection needs no socket object.
                    # Stdlib internal: socket._accept() of the C socket type, returning
                    # (fd, address), what socket.accept() wraps (3.11 to 3.13).
                    fd, address = self._socket._accept()  # type: ignore[attr-defined]
                except OSError as e:
                    if self.stop_event.is_set():
                        break
                    log.warning("accept failed: %s", e)
                    time.sleep(0.1)  # e.g. out of file descriptors: do not spin
                    continue
                if self.stop_event.is_set():
                    os.close(fd)
                    break
                self._admit(fd, address)
        finally:
            self._logins.stop()
            self.listener.close()

    def _admit(self, fd: int, address: Any) -> None:
        host = address[0]
        refusal = self._logins.enter(host)
        if refusal is not None:
            os.close(fd)
            self._door.refused(host, address, refusal)
            return
        sock = socket.socket(fileno=fd)
        conn: Connection
        try:
            # A connection that waited in a full backlog may be closed already: a thread for
            # each of those is how a flood outruns the accepting.
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                raise ConnectionResetError("closed before logging in")
        except BlockingIOError:
            pass  # open, and silent as a client is until it has the challenge
        except OSError as e:
            sock.close()
            self._logins.leave(host)
            self._door.refused(host, address, e.strerror or str(e))
            return
        try:
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # see protocol._connect
            if self._tls is None:
                conn = Connection(sock.detach())
            else:
                # The TLS handshake runs on the connection's own thread, under its deadline.
                conn = TLSConnection(
                    self._tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                )
        except OSError:  # gone already
            sock.close()
            self._logins.leave(host)
            return
        peer = format_peer(address)
        guard = LoginGuard(conn, new_session(), peer, host, self._logins, self._door, self)
        self._clients.add(guard)
        try:
            threading.Thread(
                target=self.handle_request, args=(guard,), name=f"client {peer}", daemon=True
            ).start()
        except RuntimeError as e:  # no thread to be had: this connection goes, the door stays
            guard.close()
            self._door.refused(host, address, str(e))

    def handle_request(self, conn: Any) -> None:
        """Serve one new connection: its TLS handshake if any, its login, its requests.

        Stdlib internal: Server.handle_request(conn) runs the authkey handshake, then one
        request, and calls accept_connection() on this thread for a proxy's connection
        (3.11 to 3.13).
        """
        if conn.handshake():
            super().handle_request(conn)
        else:
            conn.close()

    def accept_connection(self, c: Any, name: str) -> None:
        """Serve one client connection on this thread until it ends, as its session.

        Stdlib internal: Server.accept_connection(c, name) answers the proxy's request, then
        runs serve_client(c) until the connection ends or stop_event is set (3.11 to 3.13).
        """
        c.serving = True
        try:
            with serving(c.session):
                super().accept_connection(c, name)
        finally:
            # A worker killed mid-file closes its connection at once: no need to wait out
            # the lease term to give its files to another worker.
            self._on_disconnect(c.session)
        # serve_client() returned because the server is stopping. The stdlib would now send a
        # stray reply that the client takes as the answer to its call in flight: hang up.
        raise SystemExit

    def stop_serving(self) -> None:
        self.stop_event.set()
        # A thread blocked in accept() does not wake when the socket is closed: connect once.
        host, port = self.address
        wake_host = "127.0.0.1" if host == "0.0.0.0" else host
        with contextlib.suppress(OSError):
            socket.create_connection((wake_host, port), timeout=1).close()
        for guard in list(self._clients):
            guard.hang_up()


def _shown(name: str) -> str:
    """A name from a request, for a log line: quoted, escaped, and cut short."""
    return repr(printable(name[:80]) + ("..." if len(name) > 80 else ""))
