"""Worker processes on this host: those of ``logdispatch run`` and of ``logdispatch work
--processes N``.

``run`` forks them (on Linux) before the master exists, while the process has no threads and no
open ledger to copy, so they start counting at once instead of importing everything again.
Each waits on a pipe for its configuration; closing the pipe unsent makes it exit quietly.
``work --processes`` starts them the same way, sends the configuration at once, and has
``replace()`` start another in place of one that died.

SIGINT and SIGTERM stay blocked from the fork until the child's worker has its handlers: a stop
sent meanwhile waits for them and ends the worker cleanly, instead of killing it or reaching the
parent's handler in the child.
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

from workers.common import PER_FILE_LOG, StopSignals, setup_logging
from workers.worker import Worker, WorkerConfig

log = logging.getLogger(f"logdispatch.{__name__}")


def process_context() -> ForkContext | SpawnContext:
    """fork where it is safe and cheap (Linux), spawn elsewhere (it imports everything again)."""
    if sys.platform == "linux":
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _child(
    config_from: Connection, inherited: tuple[Connection, ...], level: int, per_file: bool
) -> None:
    # A forked child has the parent's ends of the pipes, its own included: closed here, the
    # parent closing its own is an end of file for the child waiting below.
    for sender in inherited:
        sender.close()
    # SIGINT and SIGTERM are blocked since the fork (see _fork): a stop waits for the worker's
    # handlers instead of reaching the parent's, which a forked child still has.
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
    worker = Worker(config)
    StopSignals(worker.stop)
    # A stop sent since the fork reaches the worker's handler now: it exits 0 without counting.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    sys.exit(worker.run(install_signals=False))


class LocalWorkers:
    """``count`` worker processes on this host, waiting for ``start()``: ``run``'s, or those of
    ``work --processes``, which ``replace()`` one that died.

    Its owner takes SIGINT and SIGTERM first, with handlers that only record them: a
    KeyboardInterrupt between the fork and the owner's ``try`` would leave processes that
    nothing stops, waiting for a configuration while the interpreter waits for them at exit.
    """

    def __init__(self, count: int) -> None:
        self._context = process_context()
        self._level = logging.getLogger().getEffectiveLevel()
        self._per_file = logging.getLogger(PER_FILE_LOG).isEnabledFor(logging.INFO)
        self._senders: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        try:
            for i in range(count):
                process, sender = self._fork(f"worker-{i}")
                self._senders.append(sender)
                self.processes.append(process)
        except BaseException:
            # A fork that failed: no caller holds those forked already. Left alone, their
            # pipes would stay open in multiprocessing's record of its children, which the
            # interpreter joins at exit: each waiting for the other.
            self.stop()
            raise

    def _fork(self, name: str) -> tuple[multiprocessing.process.BaseProcess, Connection]:
        receiver, sender = self._context.Pipe(duplex=False)
        forked = self._context.get_start_method() == "fork"
        inherited = (*self._senders, sender) if forked else ()
        process = self._context.Process(
            target=_child, args=(receiver, inherited, self._level, self._per_file), name=name
        )
        # Blocked across the fork, for the child to unblock once its worker has handlers; a
        # signal for this process meanwhile reaches its handler as the mask is restored.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            process.start()
        except BaseException:
            sender.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
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
        """Ask for a warm stop (SIGTERM); processes never started exit as their pipe closes,
        with status 0."""
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
