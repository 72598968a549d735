"""``logdispatch serve`` and ``logdispatch run``: a master, and for ``run`` its own workers."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

from dispatcher import defaults
from dispatcher.cli.options import (
    add_command,
    add_master_options,
    add_root_argument,
    counters_of,
    error_pattern,
)
from workers.common import (
    StopSignals,
    add_engine_argument,
    add_max_expanded_argument,
    format_address,
    load_authkey,
    parse_address,
    tls_files,
)
from workers.errors import ConfigError
from workers.matching import check_engine

# The master's and the workers' modules load only when these commands run.
if TYPE_CHECKING:
    from dispatcher.cli.options import Subparsers
    from dispatcher.master.config import MasterConfig

log = logging.getLogger(f"logdispatch.{__name__}")

# How long `run` gives its workers to finish their batch after SIGTERM before killing them.
WORKER_STOP_SECONDS = 10.0


def add_serve_parser(commands: Subparsers) -> None:
    serve = add_command(
        commands, "serve", "watch ROOT and hand its files to workers; their counts go in the ledger"
    )
    add_root_argument(serve, "the folder to watch")
    add_master_options(serve, listen=True)
    serve.set_defaults(func=cmd_serve)


def add_run_parser(commands: Subparsers) -> None:
    run = add_command(commands, "run", "a master and its own workers in one command, on this host")
    add_root_argument(run, "the folder to count")
    run.add_argument(
        "--workers", type=int, default=2, metavar="N", help="worker processes (default %(default)s)"
    )
    run.add_argument(
        "--once", action="store_true", help="count what is in ROOT now, print the summary, exit"
    )
    add_master_options(run, listen=False)
    add_engine_argument(run)
    add_max_expanded_argument(run)
    run.set_defaults(func=cmd_run)


def master_config(args: argparse.Namespace, authkey: bytes, **overrides: Any) -> MasterConfig:
    from dispatcher.master.config import MasterConfig
    from dispatcher.versions import OnDone

    options: dict[str, Any] = {
        "root": args.root,
        "authkey": authkey,
        "state_dir": args.state,
        "poll": args.poll,
        "rescan": args.rescan,
        "events": args.events,
        "settle": args.settle,
        "follow": args.follow,
        "include": args.include,
        "exclude": args.exclude,
        "error_pattern": error_pattern(args.error_pattern),
        "counters": counters_of(args),
        "recount": args.recount,
        "lease": args.lease,
        "max_lease_age": args.max_lease_age,
        "max_attempts": args.max_attempts,
        "on_done": OnDone.parse(args.on_done),
        "keep": args.keep,
    }
    if hasattr(args, "address"):
        options["address"] = parse_address(args.address)
        options["tls"] = tls_files(args)
    options.update(overrides)
    return MasterConfig(**options)


# The soft limit on open descriptors is raised up to this (or the hard limit, if lower).
DESCRIPTOR_LIMIT = 65536


def raise_descriptor_limit() -> None:
    """Raise the soft limit on open descriptors towards the hard one.

    A master holds one descriptor per connection (workers, status, the HTTP endpoints) and some
    for each scan; the usual soft limit of 1,024 is soon reached, while the hard limit is
    usually far higher. (That soft limit is kept for programs that wait with select(), which
    takes descriptors below 1,024 only; here only watchdog does, on its inotify descriptor,
    which is among the first opened.)
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = DESCRIPTOR_LIMIT if hard == resource.RLIM_INFINITY else min(hard, DESCRIPTOR_LIMIT)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (OSError, ValueError) as e:
            log.debug("cannot raise the open file limit from %d to %d: %s", soft, wanted, e)
            return
        log.debug("open file limit raised from %d to %d", soft, wanted)
    else:
        log.debug("open file limit: %d", soft)


def cmd_serve(args: argparse.Namespace) -> int:
    from dispatcher.cli.preflight import check_listening
    from dispatcher.master.loop import Master

    raise_descriptor_limit()
    metrics_address = None
    if args.metrics is not None:
        metrics_address = parse_address(args.metrics, option="--metrics")
    http_address = None if args.http is None else parse_address(args.http, option="--http")
    config = master_config(args, load_authkey(args.authkey_file))
    # Before the ledger is opened: a port in use or a missing extra leaves nothing written.
    check_listening(args)
    master = Master(config)
    StopSignals(master.stop)  # before start(): a signal during start-up is not lost
    try:
        with contextlib.ExitStack() as side_servers:  # they stop before the master closes
            master.start()
            if metrics_address is not None:
                from dispatcher.views.metrics import serve_metrics

                metrics = serve_metrics(metrics_address, master.status, master.activity.snapshot)
                side_servers.callback(metrics.stop)
                log.info("metrics at http://%s/metrics", format_address(metrics_address))
            if http_address is not None:
                from dispatcher.views.web import serve_http

                side_servers.callback(serve_http(http_address, args.state, master.status).stop)
                log.info("report at http://%s/", format_address(http_address))
            master.run()
    finally:
        master.close()
    log.info("stopped")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    import secrets

    from dispatcher.master.loop import Master
    from workers.local import LocalWorkers
    from workers.worker import WorkerConfig

    check_engine(args.engine)  # a missing engine is an error before anything starts
    raise_descriptor_limit()
    authkey = secrets.token_hex(32).encode()  # private to this process tree
    config = master_config(args, authkey, address=("127.0.0.1", 0), once=args.once)
    # Taken before the first fork: a Ctrl-C from here on is recorded, and stops the master once
    # it exists. As a KeyboardInterrupt it could land between two statements below, with
    # workers forked that nothing would stop, and the interpreter waiting for them at exit.
    signals = StopSignals()
    # Before the master: forked while nothing is open and no thread runs, waiting to be told
    # where it listens.
    workers = LocalWorkers(args.workers)
    try:
        master = Master(config)
    except BaseException:
        workers.stop()
        raise
    signals.then(master.stop)  # before start(): a stop during start-up is not lost

    progress = None
    if args.once and not args.quiet:
        from dispatcher.views.progress import RunProgress

        progress = RunProgress(master.activity)

    def workers_gone() -> bool:
        if progress is not None:
            progress.update(scanning=not master.scan_complete)
        if workers.all_exited():
            log.error("all workers exited; stopping")
            return True
        return False

    crashed = False
    try:
        master.start()
        workers.start(
            WorkerConfig(
                address=master.address,
                authkey=authkey,
                root=master.root,
                parent_pid=os.getpid(),
                engine=args.engine,
                max_expanded=args.max_expanded,
            )
        )
        if not args.once and not args.quiet:
            print(
                f"logdispatch run: counting {config.root} with {args.workers} "
                f"worker{'s' if args.workers > 1 else ''}, and whatever lands there until "
                f"stopped (Ctrl-C); the ledger is in {config.state_dir}: "
                f"logdispatch summary --state {config.state_dir}",
                file=sys.stderr,
            )
        crashed = master.run(until=workers_gone)
    finally:
        if progress is not None:
            progress.close()
        master.tasks.close()  # workers waiting in take() get their answer now, not in a second
        workers.stop()
        if not master.finished:
            # Interrupted: what they are counting reaches the ledger before it closes.
            workers.wait(WORKER_STOP_SECONDS)
        master.close()
    try:
        # A signal after run --once finished stopped nothing: its summary is the run's end.
        stopped = signals if not (config.once and master.finished) else None
        return _report_run(config, stopped, crashed)
    finally:
        workers.wait(WORKER_STOP_SECONDS)  # done, nothing in flight: they stop while we report


def _report_run(config: MasterConfig, signals: StopSignals | None, crashed: bool) -> int:
    """The exit status: a run that watches ends by a signal, as serve does, and exits 0; a
    run --once stopped before every file was done exits 128 + the signal. ``signals``: None
    for a run --once that finished (a signal after that stopped nothing)."""
    if signals is not None and signals.first is not None:
        done = "stopped" if not config.once else "interrupted"
        print(
            f"logdispatch run: {done}; what was counted is in the ledger: "
            f"logdispatch summary --state {config.state_dir}",
            file=sys.stderr,
        )
        # Workers in the terminal's process group stop on its Ctrl-C too: not a crash.
        return 0 if not config.once else 128 + signals.first
    from dispatcher.views import summary

    document = summary.build(config.state_dir, defaults.TABLE_ROWS)
    summary.render_table(document, sys.stdout)
    return 1 if document["totals"]["failed"] or crashed else 0
