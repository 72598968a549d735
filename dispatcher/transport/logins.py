"""The connections still logging in to the manager server: their limits, deadlines and log.

A connection waits at the door for a place among those logging in (in all and per host), then
has until its deadline to log in; refused connections are logged once per host and reason
now and then, not once each. ``LoginGuard`` wraps each connection for the stdlib server and
checks its requests before they run; what the stdlib's requests and replies mean is the
server's to say (``Gate``, ``dispatcher.transport.server``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import socket
import ssl
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Protocol

from dispatcher.transport.requests import REQUEST_TYPES
from workers.common import error_text, format_peer, printable
from workers.errors import MessageRefused
from workers.protocol import TLSConnection, tls_error_text
from workers.wirechecks import load_message

log = logging.getLogger(f"logdispatch.{__name__}")

# Each connection gets a thread before it logs in; past this many waiting at once, new ones are
# refused at the door, so a flood cannot exhaust threads while real workers keep theirs...
MAX_WAITING_LOGINS = 256
# ...and past this many from one host, so that one host cannot take all the places. A host
# whose workers all connect at once may see a few refused: they try again.
MAX_WAITING_LOGINS_PER_HOST = 32
# Refused connections are logged once per host and reason per this many seconds, with their
# number.
REFUSALS_LOGGED_EVERY = 10.0
# The largest request accepted: a full batch of results with their samples is a few MB.
MAX_REQUEST_BYTES = 32 * 1024 * 1024


class Gate(Protocol):
    """What a guard asks its server, the one that reads the stdlib's requests and replies."""

    def refusal(self, request: Any, serving: bool) -> str | None:
        """Why ``request`` is not served (None: it is)."""

    def failed_login(self, reply: Any) -> str | None:
        """Why the login failed, when ``reply`` is the answer to a failed login (else None)."""

    def bad_request(self, reply: Any) -> bool:
        """Whether ``reply`` answers a call that raised BadRequest."""


class Logins:
    """The connections still logging in: counted per host, and hung up at their deadline.

    One thread keeps all the deadlines, so a connection costs one thread while it logs in.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._waiting = 0
        self._per_host: dict[str, int] = {}
        self._deadlines: list[tuple[float, int, LoginGuard]] = []  # a heap
        self._order = itertools.count()  # ties in the heap never compare guards
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="login-deadlines", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=5)

    def enter(self, host: str) -> str | None:
        """Take a place for a connection from ``host``; why not, if there is none."""
        with self._lock:
            if self._waiting >= MAX_WAITING_LOGINS:
                return f"{self._waiting} connections still logging in"
            here = self._per_host.get(host, 0)
            if here >= MAX_WAITING_LOGINS_PER_HOST:
                return f"{here} connections from there still logging in"
            self._waiting += 1
            self._per_host[host] = here + 1
            return None

    def leave(self, host: str) -> None:
        with self._lock:
            self._waiting -= 1
            here = self._per_host.pop(host) - 1
            if here:
                self._per_host[host] = here

    def watch(self, guard: LoginGuard) -> None:
        """Hang ``guard`` up if it has not logged in within the timeout."""
        with self._lock:
            entry = (time.monotonic() + self.timeout, next(self._order), guard)
            heapq.heappush(self._deadlines, entry)
            if self._deadlines[0] is entry:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopping and (
                    not self._deadlines or self._deadlines[0][0] > time.monotonic()
                ):
                    wait = self._deadlines[0][0] - time.monotonic() if self._deadlines else None
                    self._wake.wait(wait)
                if self._stopping:
                    return
                _, _, guard = heapq.heappop(self._deadlines)
            guard.login_deadline()


class DoorLog:
    """Logs refused connections, one line per host and reason per ``REFUSALS_LOGGED_EVERY``
    seconds with the number since: a flood of connections would flood the log too."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._unlogged: dict[tuple[str, str], int] = {}
        self._logged_at: dict[tuple[str, str], float] = {}

    def refused(self, host: str, peer: object, reason: str) -> None:
        now = time.monotonic()
        key = (host, reason)
        with self._lock:
            if now - self._logged_at.get(key, -REFUSALS_LOGGED_EVERY) < REFUSALS_LOGGED_EVERY:
                self._unlogged[key] = self._unlogged.get(key, 0) + 1
                return
            if len(self._logged_at) > 1000:  # forget what was not refused lately
                for old in [
                    k for k, t in self._logged_at.items() if now - t > REFUSALS_LOGGED_EVERY
                ]:
                    del self._logged_at[old]
                    self._unlogged.pop(old, None)
            self._logged_at[key] = now
            others = self._unlogged.pop(key, 0)
        more = f" (and {others} more from {host} since the last such line)" if others else ""
        log.warning("refused connection from %s: %s%s", format_peer(peer), reason, more)


class LoginGuard:
    """A new connection until its first request: bounded in time, quiet when refused.

    Its deadline hangs up a connection that has not logged in by then, however it spends the
    time (silent, or dripping a byte at a time).
    """

    def __init__(
        self,
        conn: Connection,
        session: int,
        peer: str,
        host: str,
        logins: Logins,
        door: DoorLog,
        gate: Gate,
    ) -> None:
        self._conn = conn
        self.session = session  # the connection's id for the served methods
        self._peer = peer
        self._host = host
        self._logins = logins
        self._door = door
        self._gate = gate
        self.serving = False  # a proxy's connection: its requests are calls on a served object
        self._refused = False
        self.logged_in = False
        self.closed = False
        self._waiting = True  # holds a place among the connections logging in
        # Closing and hanging up exclude each other: the descriptor of a closed connection may
        # be another's by the time a late hang-up comes.
        self._lock = threading.Lock()
        self._timed_out = False
        self._hung_up = False  # by the server: a refusal is then no news
        logins.watch(self)

    def _stop_waiting(self) -> None:
        with self._lock:
            if not self._waiting:
                return
            self._waiting = False
        self._logins.leave(self._host)

    def handshake(self) -> bool:
        """The TLS handshake, if the connection is TLS; False (logged) if it failed."""
        if not isinstance(self._conn, TLSConnection):
            return True
        try:
            self._conn.tls_socket.do_handshake()
        except ssl.SSLError as e:
            self._refused_login(f"TLS handshake failed: {tls_error_text(e)}")
            return False
        except OSError as e:
            self._refused_login(f"TLS handshake failed: {e.strerror or e}")
            return False
        return True

    def _refused_login(self, reason: str) -> None:
        if self._timed_out:
            reason = f"no login within {self._logins.timeout:g} s"
        if self._hung_up and not self._timed_out:
            log.debug("refused connection from %s: %s", self._peer, reason)
        else:
            self._door.refused(self._host, self._peer, reason)

    def login_deadline(self) -> None:
        if not self.logged_in:
            self._timed_out = True
            self.hang_up()

    def recv_bytes(self, maxlength: int | None = None) -> bytes:
        return self._conn.recv_bytes(maxlength)

    def recv(self) -> Any:
        try:
            # Bounded before anything is read into memory: the stdlib reads whatever length a
            # message announces.
            data = self._conn.recv_bytes(MAX_REQUEST_BYTES)
        except OSError as e:
            # Stdlib internal: Connection.recv_bytes(maxlength) tells a longer message by this
            # OSError's text alone (3.11 to 3.13).
            if e.args != ("bad message length",):
                # The connection failed (reset, or closed mid-message): as lost as at its end.
                raise EOFError(error_text(e)) from None
            raise self._refuse(f"longer than {MAX_REQUEST_BYTES} bytes") from None
        # The handshake is done in bytes messages; the first pickled message is a request.
        if not self.logged_in:
            self.logged_in = True
            self._stop_waiting()
        try:
            request = load_message(data, REQUEST_TYPES)
            reason = self._gate.refusal(request, self.serving)
        except MessageRefused as e:
            reason = str(e)
        if reason is not None:
            # Stdlib internal: Server.serve_client() takes MessageRefused (an EOFError) for a
            # lost connection and hangs up without an answer.
            raise self._refuse(reason)
        return request

    def _refuse(self, reason: str) -> MessageRefused:
        """Log a request no client of ours sends; the connection gets no answer any more."""
        self._refused = True
        log.warning("refused request from %s: %s; connection dropped", self._peer, reason)
        return MessageRefused(reason)

    def send(self, obj: Any) -> None:
        if self._refused:
            return  # logged when refused
        if self.serving and self._gate.bad_request(obj):
            # A call whose arguments no client of ours sends (out of range, of the wrong type):
            # whoever sent it holds the key but is not to be trusted with this connection.
            self._refuse(printable(str(obj[1])))
            self.hang_up()
            return
        if not self.logged_in:
            failure = self._gate.failed_login(obj)
            if failure is not None:
                self._refused_login(failure)
                return  # a stranger gets no traceback
        self._conn.send(obj)

    def send_bytes(self, buf: bytes, offset: int = 0, size: int | None = None) -> None:
        self._conn.send_bytes(buf, offset, size)

    def poll(self, timeout: float = 0.0) -> bool:
        return self._conn.poll(timeout)

    def fileno(self) -> int:
        return self._conn.fileno()

    def close(self) -> None:
        with self._lock:
            self.closed = True
            self._conn.close()
        self._stop_waiting()

    def hang_up(self) -> None:
        """End the connection under a thread blocked reading it (closing the fd would not)."""
        with self._lock:
            if self.closed:
                return
            self._hung_up = True
            # On the connection's own descriptor, not a dup: out of descriptors, a dup fails
            # and the connection would keep its place for good.
            sock = socket.socket(fileno=self._conn.fileno())
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # gone meanwhile
            finally:
                sock.detach()  # the connection still owns and closes it
