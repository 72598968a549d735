"""``serve --http HOST:PORT``: the report page, built from the ledger at most once per its refresh
interval, and the status document, over plain HTTP from a thread of the master.

The page reads the ledger through its own read-only connection, never the master's writer.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dispatcher import defaults
from dispatcher.views import report
from dispatcher.views.httpguard import GuardedHandlerMixIn, GuardedHTTPServer, Serving
from workers.common import format_address
from workers.errors import ConfigError, LogDispatchError

log = logging.getLogger(f"logdispatch.{__name__}")

HTML = "text/html; charset=utf-8"
JSON = "application/json"
# The page holds no script and loads nothing: the browser is told so twice.
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
}


@dataclass(frozen=True)
class _Built:
    """A page as it was sent, and when it stops being news."""

    body: bytes
    at: float  # time.monotonic() when it was ready
    refresh: int  # seconds the page waits before reloading itself


class ReportServer(GuardedHTTPServer):
    def __init__(
        self,
        address: tuple[str, int],
        state_dir: Path,
        status: Callable[[], dict[str, Any]],
        refresh_floor: int = defaults.REPORT_REFRESH_SECONDS,
    ) -> None:
        super().__init__(address, _Handler, log, "the report server")
        self.state_dir = state_dir
        self.status = status
        self.refresh_floor = refresh_floor
        # One page is built at a time, and then served to every viewer until it is as old as
        # its own refresh interval: it is built in the master's process, and open tabs must not
        # each take a share of it. A request that waited for a build gets the page just built.
        self._building = threading.Lock()
        self._last: _Built | None = None

    def page(self) -> bytes:
        """The page built last while it is younger than its refresh interval, else a new one."""
        with self._building:
            last = self._last
            if last is None or time.monotonic() - last.at >= last.refresh:
                last = self._last = self._build()
            return last.body

    def _build(self) -> _Built:
        """The report, to reload after a few seconds, or three times its building time."""
        started = time.perf_counter()
        found = report.read(self.state_dir)
        spent = time.perf_counter() - started
        refresh = max(self.refresh_floor, math.ceil(3 * spent))
        body = report.render(found, time.time(), refresh).encode()
        return _Built(body, time.monotonic(), refresh)


def serve_http(
    address: tuple[str, int], state_dir: Path, status: Callable[[], dict[str, Any]]
) -> Serving:
    """Serve ``/`` and ``/status.json`` on ``address`` in a thread, until its ``stop()``."""
    try:
        server = ReportServer(address, state_dir, status)
    except OSError as e:
        raise ConfigError(
            f"cannot serve the report on {format_address(address)}: {e.strerror}"
        ) from None
    serving = Serving(server, "logdispatch-http")
    serving.start()
    return serving


class _Handler(GuardedHandlerMixIn):
    server: ReportServer
    server_version = "logdispatch"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _not_allowed(self) -> None:
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"GET or HEAD only\n", True)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _answer(self, send_body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/":
            try:
                body = self.server.page()
            except (LogDispatchError, sqlite3.Error) as e:
                log.warning("cannot build the report: %s", e)
                text = f"cannot read the ledger: {e}\n".encode()
                self._send(HTTPStatus.SERVICE_UNAVAILABLE, "text/plain", text, send_body)
                return
            self._send(HTTPStatus.OK, HTML, body, send_body)
        elif path == "/status.json":
            body = (json.dumps(self.server.status(), indent=2) + "\n").encode()
            self._send(HTTPStatus.OK, JSON, body, send_body)
        else:
            self._send(
                HTTPStatus.NOT_FOUND, "text/plain", b"not found: / or /status.json\n", send_body
            )

    def _send(self, code: HTTPStatus, kind: str, body: bytes, send_body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        for name, value in _HEADERS.items():
            self.send_header(name, value)
        if code == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if send_body:
            self.wfile.write(body)
