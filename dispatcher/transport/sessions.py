"""Which worker connection a served call came in on.

Each connection the manager server accepts gets a session id of its own, never reused in the
master's life (a thread id, the other candidate, is reused once its thread ends, so a late
hang-up could have expired a newer connection's leases). The server thread serving the
connection sets it; served methods read it with ``current_session()``.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Iterator

_ids = itertools.count(1)
_current = threading.local()


def new_session() -> int:
    """A fresh session id (thread-safe: ``next`` on a count holds the GIL throughout)."""
    return next(_ids)


@contextlib.contextmanager
def serving(session: int) -> Iterator[None]:
    """Calls on this thread come from the connection ``session`` until the block ends."""
    _current.id = session
    try:
        yield
    finally:
        del _current.id


def current_session() -> int:
    """The session of the connection this call came in on.

    A thread that serves no connection (the master loop, a test calling the queue directly)
    is a session of its own.
    """
    session: int | None = getattr(_current, "id", None)
    if session is None:
        session = _current.id = new_session()
    return session
