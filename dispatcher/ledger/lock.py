"""The state directory's lock: one master at a time uses a state directory and its ledger."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path

from dispatcher import defaults
from workers.errors import ConfigError, LedgerBusy

log = logging.getLogger(f"logdispatch.{__name__}")


class StateDirLock:
    """Held by the master's Ledger from its start until it closes."""

    def __init__(self, state_dir: Path) -> None:
        """Take the state directory for this master, or raise LedgerBusy.

        The lock file alone can be deleted under a running master, and a second master would
        then take a new one; the directory itself cannot go while the ledger is in it. The lock
        file stays for masters of earlier versions.
        """
        self._dir_fd: int | None = None
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            self._file = open(state_dir / defaults.LOCK_FILE, "a+b")  # noqa: SIM115 - held until close
            self._dir_fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            with contextlib.suppress(AttributeError):
                self._file.close()
            raise ConfigError(
                f"cannot use {state_dir} as the state directory: {e.strerror}"
            ) from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                fcntl.flock(self._dir_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    # Some network file systems lock no directory: the lock file still holds.
                    log.debug("cannot lock the folder %s: %s", state_dir, e.strerror)
                    os.close(self._dir_fd)
                    self._dir_fd = None
                else:
                    raise
        except BlockingIOError:
            self.release()
            raise LedgerBusy(f"another master is using the state directory {state_dir}") from None

    def release(self) -> None:
        self._file.close()
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None
