"""The project's own exceptions, master's and worker's, in one place.

Each says what went wrong in words meant for the operator; ``exit_code`` is the command's exit
status when one ends a command (2: starting again would only fail again, 1: it may work later).
"""

from __future__ import annotations

import errno


class LogDispatchError(Exception):
    """Base of the project's own errors."""

    # The command's exit status: 2 says starting again would only fail again (systemd units
    # do not restart on it), 1 that it may work later.
    exit_code = 2


class ConfigError(LogDispatchError):
    """Bad command-line or configuration input; the message is meant for the operator."""


class CountError(LogDispatchError):
    """A file that cannot be counted (corrupt archive, not a regular file...)."""


class PathRefused(LogDispatchError):
    """A task path that would leave the worker's root."""


class MasterRefused(LogDispatchError):
    """The master rejected this worker's authkey."""


class MasterUnreachable(LogDispatchError):
    """No status from the master: not running, not reachable, or another key."""


class MessageRefused(EOFError):
    """A message refused before it is served (too long, malformed, naming a type outside its
    allowed ones, or a call no client makes): the connection is dropped.

    An ``EOFError``, so that whoever reads it treats the connection as lost.
    """


class BadRequest(ValueError):
    """A request a correct worker never sends: refused, logged, and its connection dropped."""


class LedgerBusy(LogDispatchError):
    """Another master holds this state directory."""


class LedgerError(LogDispatchError):
    """The ledger cannot be read or written: damaged, not a ledger, unreadable, disk full.

    ``exit_code`` 2 when starting again cannot help (a damaged ledger), 1 when it may (a full
    disk, once space is freed).
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SymlinkOnPath(OSError):
    """A folder on the way is a symbolic link; ``filename`` is its path."""

    def __init__(self, path: bytes) -> None:
        super().__init__(errno.ELOOP, "a symbolic link on the path: not followed", path)
