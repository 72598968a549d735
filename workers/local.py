"""Worker processes of ``logdispatch run``: started before the master, told where it listens.

They are forked (on Linux) before the master exists, while the process has no threads and no
open ledger to copy, so they start counting at once instead of importing everything again.
Each waits on a pipe for its configuration; closing the pipe unsent makes it exit quietly.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext, SpawnContext

from workers.common import PER_FILE_LOG, setup_logging
from workers.worker import Worker, WorkerConfig

log = logging.getLogger(f"logdispatch.{__name__}")


def process_context() -> ForkContext | SpawnContext:
    """fork where it is safe and cheap (Linux), spawn elsewhere (it imports everything again)."""
    if sys.platform == "linux":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


def _child(config_from: Connection, level: int, per_file: bool) -> None:
    # A forked child has its parent's handlers until the worker sets its own.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # Own process group: a terminal's Ctrl-C reaches the parent, which stops the workers in order.
    os.setpgid(0, 0)
    # Spawned: configure; forked: the parent's handlers are kept. Either way the parent's
    # levels, the per-file lines' too.
    setup_logging(0, base=level, per_file=per_file)
    try:
        config = config_from.recv()
    except EOFError:
        sys.exit(0)  # the parent gave up before its master started
    finally:
        config_from.close()
    sys.exit(Worker(config).run())


class LocalWorkers:
    """``count`` worker processes, waiting for ``start()``."""

    def __init__(self, count: int) -> None:
        self._context = process_context()
        self._level = logging.getLogger().getEffectiveLevel()
        self._per_file = logging.getLogger(PER_FILE_LOG).isEnabledFor(logging.INFO)
        self._senders: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        for i in range(count):
            process, sender = self._fork(f"worker-{i}")
            self._senders.append(sender)
            self.processes.append(process)

    def _fork(self, name: str) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        receiver, sender = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_child, args=(receiver, self._level, self._per_file), name=name
        )
        process.start()
        receiver.close()
        return process, sender

    def replace(self, index: int, config: WorkerConfig) -> None:
        """A new process, started with ``config``, in place of ``processes[index]``, which has
        exited."""
        old = self.processes[index]
        old.join()
        process, sender = self._fork(old.name)
        with sender:
            sender.send(config)
        self.processes[index] = process

    def start(self, config: WorkerConfig) -> None:
        """Send every process its configuration: they connect and count."""
        for sender in self._senders:
            sender.send(config)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for sender in self._senders:
            sender.close()
        self._senders = []

    def all_exited(self) -> bool:
        return not any(p.is_alive() for p in self.processes)

    def stop(self) -> None:
        """Ask for a warm stop (SIGTERM); processes never started exit as their pipe closes."""
        self._close_pipes()
        for process in self.processes:
            if process.is_alive():
                process.terminate()

    def wait(self, timeout: float) -> None:
        """Wait for stopping processes, killing any still there after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for process in self.processes:
            process.join(max(deadline - time.monotonic(), 0))
            if process.is_alive():
                log.warning("worker %s did not stop in %g s: killed", process.pid, timeout)
                process.kill()
                process.join()
