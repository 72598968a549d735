"""What the master's plain HTTP endpoints (``--http``, ``--metrics``) need on a real network.

The stdlib servers give each connection a thread and wait on it forever: idle or dripping
connections pile up until the master runs out of file descriptors, and then its workers, its
``status`` and its scans fail with it. Here a connection has a deadline for its request, the
connections open at once are capped (over the cap a new one is closed at once), and the
refusals are logged in summary, not one line each.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import TCPServer, ThreadingMixIn
from typing import Any

from dispatcher import defaults
from workers.common import format_peer

# A refusal is logged at once, then at most this often, with the count since the last line.
REFUSALS_LOG_SECONDS = 60.0

# Out of descriptors, accept() fails at once while the listening socket stays readable: the
# server waits this long before trying again instead of spinning.
ACCEPT_BACKOFF_SECONDS = 0.1


class _Refusals:
    """Counts the connections refused, and says so in one log line now and then."""

    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self._lock = threading.Lock()
        self._unreported = 0
        self._logged_at: float | None = None

    def note(self, peer: str, reason: str) -> None:
        with self._lock:
            self._unreported += 1
            now = time.monotonic()
            if self._logged_at is not None and now - self._logged_at < REFUSALS_LOG_SECONDS:
                return
            count, self._unreported, self._logged_at = self._unreported, 0, now
        self._log.warning(
            "%s refused %d connection%s (the latest from %s: %s); the next such line comes "
            "in %g s at the earliest",
            self._what,
            count,
            "" if count == 1 else "s",
            peer,
            reason,
            REFUSALS_LOG_SECONDS,
        )


class GuardedServerMixIn(ThreadingMixIn, TCPServer):
    """A thread per connection, at most ``max_connections`` of them; each must send its request
    within ``request_timeout`` seconds of being accepted, however it spends them."""

    daemon_threads = True  # a viewer's slow connection never holds up the master's stop
    request_queue_size = 128  # the listen backlog: a burst waits to be accepted or refused
    log: logging.Logger
    what = "the HTTP server"
    max_connections = defaults.HTTP_MAX_CONNECTIONS
    request_timeout = defaults.HTTP_REQUEST_TIMEOUT_SECONDS

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        log: logging.Logger,
        what: str,
    ) -> None:
        self.log = log
        self.what = what
        self._refusals = _Refusals(log, what)
        self._open_lock = threading.Lock()
        # Every connection served now, with the monotonic time it must have sent its request
        # by (None once it has).
        self._open: dict[socket.socket, float | None] = {}
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        try:
            request = super().get_request()
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                self._refusals.note("?", f"cannot accept: {e.strerror}")
                time.sleep(ACCEPT_BACKOFF_SECONDS)
            raise
        return request

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            full = len(self._open) >= self.max_connections
            if not full:
                self._open[request] = time.monotonic() + self.request_timeout
        if full:
            self._refusals.note(
                format_peer(client_address), f"{self.max_connections} connections open, the most"
            )
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._forget(request)
            raise

    def request_read(self, request: socket.socket) -> None:
        """The request has arrived: from here on only the socket timeout bounds the reply."""
        with self._open_lock:
            if request in self._open:
                self._open[request] = None

    def service_actions(self) -> None:
        """Called by ``serve_forever`` between its polls: hang up on connections past their
        deadline (closing the socket would not wake the thread reading it; a shutdown does)."""
        super().service_actions()
        now = time.monotonic()
        with self._open_lock:
            late = [s for s, due in self._open.items() if due is not None and now >= due]
            peers = [_peer_of(sock) for sock in late]
            for sock in late:
                self._open[sock] = None  # hung up once
                _hang_up(sock)
        for peer in peers:
            self.log.debug("hung up on %s: no request within %g s", peer, self.request_timeout)

    def shutdown_request(self, request: Any) -> None:
        # Forgotten before it is closed: a hang-up never reaches a descriptor number reused.
        self._forget(request)
        super().shutdown_request(request)

    def _forget(self, request: socket.socket) -> None:
        with self._open_lock:
            self._open.pop(request, None)

    def server_close(self) -> None:
        super().server_close()
        # The threads still serving end now, not at their own pace.
        with self._open_lock:
            for sock in self._open:
                _hang_up(sock)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away or stalled is no news; anything else is logged, not printed."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            self.log.debug("%s: %s", format_peer(client_address), error or type(error).__name__)
        else:
            self.log.warning("request from %s failed", format_peer(client_address), exc_info=True)


class Serving:
    """A guarded server on a thread of its own, with the master's start/stop shape (see
    dispatcher.master.services.Service)."""

    def __init__(self, server: GuardedServerMixIn, name: str) -> None:
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


class GuardedHTTPServer(GuardedServerMixIn, HTTPServer):
    pass


class GuardedHandlerMixIn(BaseHTTPRequestHandler):
    """Tells the server when the request has arrived; a reply blocked on a client that does not
    read ends after the socket timeout."""

    server: GuardedServerMixIn
    timeout = defaults.HTTP_REQUEST_TIMEOUT_SECONDS

    def parse_request(self) -> bool:
        parsed = super().parse_request()
        self.server.request_read(self.request)
        return parsed

    def log_message(self, format: str, *args: Any) -> None:
        self.server.log.debug("%s %s", self.address_string(), format % args)


def _hang_up(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _peer_of(sock: socket.socket) -> str:
    try:
        return format_peer(sock.getpeername())
    except OSError:
        return "?"
