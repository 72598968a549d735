"""``logdispatch work`` (also ``python -m workers``): run one or more worker processes."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType
from typing import TYPE_CHECKING

from workers.common import (
    WORK_ABOUT,
    Parser,
    add_connection_arguments,
    add_engine_argument,
    add_max_expanded_argument,
    load_authkey,
    parse_address,
    setup_logging,
    tls_files,
)
from workers.config import Commands, add_config_option, resolve
from workers.errors import LogDispatchError
from workers.matching import check_engine

# The worker loop loads when a worker runs: `logdispatch` reads this parser for `work`'s
# options whenever it checks a configuration file.
if TYPE_CHECKING:
    from workers.local import LocalWorkers
    from workers.worker import WorkerConfig

log = logging.getLogger(f"logdispatch.{__name__}")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="logdispatch work", description=f"{WORK_ABOUT[0].upper()}{WORK_ABOUT[1:]}."
    )
    add_connection_arguments(parser, "the master's address")
    parser.add_argument(
        "--root",
        metavar="DIR",
        help="where this host mounts the master's root (default: the master's own path)",
    )
    parser.add_argument(
        "--processes", type=int, default=1, metavar="N", help="counting processes (default 1)"
    )
    add_engine_argument(parser)
    add_max_expanded_argument(parser)
    parser.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")
    add_config_option(parser)
    return parser


def main(argv: Sequence[str], commands: Commands | None = None) -> int:
    """Run ``logdispatch work ARGV``; ``commands`` are all the program's, for --config to
    tell another command's key from a typo (None: only this command's are known)."""
    from workers.worker import Worker, WorkerConfig

    try:
        args = resolve("work", build_parser(), argv, commands).args
        setup_logging(args.verbose - args.quiet)
        if args.processes < 1:
            raise LogDispatchError("--processes must be at least 1")
        root = None
        if args.root is not None:
            root = os.fsencode(os.path.abspath(args.root))
            if not os.path.isdir(root):
                raise LogDispatchError(f"--root {args.root} is not a directory")
        config = WorkerConfig(
            address=parse_address(args.address),
            authkey=load_authkey(args.authkey_file),
            root=root,
            parent_pid=args.parent_pid,
            engine=args.engine,
            max_expanded=args.max_expanded,
            tls=tls_files(args),
        )
        check_engine(args.engine)  # a missing engine is an error now, not per file
        if config.tls is not None:
            from workers.protocol import client_context

            client_context(config.tls)  # unreadable files are an error now, not a lost master
    except LogDispatchError as e:
        print(f"logdispatch work: error: {e}", file=sys.stderr)
        return 2
    if args.processes == 1:
        return Worker(config).run()
    return _run_many(config, args.processes)


# A counting process that dies is started again after this long, doubled for each one that died
# soon after it started, up to the cap: a process that cannot live is not restarted in a loop.
RESTART_SECONDS = 0.5
RESTART_MAX_SECONDS = 60.0
# A process that lived this long died of something else than its start: back to the shortest wait.
RESTART_RESET_SECONDS = 60.0


# A signal's handler only records it, and a wait is not cut short by one: the longest a stop
# waits to be passed on.
SIGNAL_CHECK_SECONDS = 0.1
# How long stopping children get, after an error in the parent, before they are killed.
STOP_SECONDS = 10.0


def _run_many(config: WorkerConfig, processes: int) -> int:
    from workers.local import LocalWorkers

    received: list[int] = []  # signals not yet passed on; the handler only records them

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    signal.signal(signal.SIGTERM, record)
    signal.signal(signal.SIGINT, record)
    # The children stop by themselves once this process is gone, however it ended.
    config = dataclasses.replace(config, parent_pid=os.getpid())
    workers = LocalWorkers(processes)
    try:
        workers.start(config)
        return _supervise(workers, config, received)
    except BaseException:
        workers.stop()
        workers.wait(STOP_SECONDS)
        raise


def _supervise(workers: LocalWorkers, config: WorkerConfig, received: list[int]) -> int:
    """Restart the processes that die, pass ``received`` signals on; the exit status once all
    have ended."""
    from multiprocessing.connection import wait

    processes = len(workers.processes)
    started = [time.monotonic()] * processes
    waits = [RESTART_SECONDS] * processes
    restart_at: dict[int, float] = {}  # slot -> when its next process starts
    # Each slot's status: its last process's, once it exited and is not started again.
    statuses: dict[int, int] = {}
    forwarded: set[int] = set()  # the signals passed on: a child they killed stopped as asked
    while True:
        while received:
            signum = received.pop(0)
            forwarded.add(signum)
            # A stop is no time to start more; a slot waiting for its next process has nothing
            # left to stop, and its process's end was logged.
            statuses.update(dict.fromkeys(restart_at, 0))
            restart_at.clear()
            for process in workers.processes:
                if process.pid is not None and process.is_alive():
                    os.kill(process.pid, signum)
        now = time.monotonic()
        for slot, process in enumerate(workers.processes):
            if slot in statuses or slot in restart_at or process.exitcode is None:
                continue
            status = _status(process.exitcode)
            if forwarded:
                statuses[slot] = 0 if -process.exitcode in forwarded else status
                continue
            # 0: it stopped as asked (or its parent's master is gone); 2: starting it again
            # would only fail again (workers.errors).
            if status in (0, 2):
                statuses[slot] = status
                continue
            if now - started[slot] >= RESTART_RESET_SECONDS:
                waits[slot] = RESTART_SECONDS
            log.warning(
                "counting process %d %s; another starts in %g s",
                process.pid,
                _ending(process.exitcode),
                waits[slot],
            )
            restart_at[slot] = now + waits[slot]
            waits[slot] = min(waits[slot] * 2, RESTART_MAX_SECONDS)
        for slot, when in list(restart_at.items()):
            if when <= now:
                del restart_at[slot]
                workers.replace(slot, config)
                started[slot] = time.monotonic()
        if len(statuses) == processes:
            return max(statuses.values())
        # Until a live process ends, the next restart is due, or it is time to look for signals.
        now = time.monotonic()
        timeout = max(min([SIGNAL_CHECK_SECONDS, *(at - now for at in restart_at.values())]), 0)
        live = [
            process.sentinel
            for slot, process in enumerate(workers.processes)
            if slot not in statuses and slot not in restart_at
        ]
        if live:
            wait(live, timeout)
        else:
            time.sleep(timeout)


def _ending(exitcode: int) -> str:
    """How a process ended, in words: its exit status or the signal that killed it."""
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        return f"was killed by {name}"
    return f"exited with status {exitcode}"


def _status(exitcode: int | None) -> int:
    """A child's exit code as a shell reports it: killed by signal N is 128 + N."""
    if exitcode is None:
        return 1
    return 128 - exitcode if exitcode < 0 else exitcode
