"""The ``logdispatch`` command: parse, build a config, call the library, return an exit code."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatcher import defaults
from dispatcher.cli.config import show
from workers.common import (
    StopSignals,
    add_connection_arguments,
    add_engine_argument,
    add_max_expanded_argument,
    decode_path,
    error_text,
    format_address,
    load_authkey,
    parse_address,
    printable,
    setup_logging,
    tls_files,
)
from workers.config import REQUIRED, add_config_option, resolve, subcommands, takes_config
from workers.counting import count_path
from workers.errors import ConfigError, CountError, LogDispatchError
from workers.expansion import Expansion
from workers.matching import DEFAULT_ERROR_PATTERN, ErrorMatcher, check_engine

# The master's, the ledger's and the workers' modules load only in the commands using them:
# `count` starts without them.
if TYPE_CHECKING:
    from dispatcher.master.config import MasterConfig

log = logging.getLogger(f"logdispatch.{__name__}")

# How long `run` gives its workers to finish their batch after SIGTERM before killing them.
WORKER_STOP_SECONDS = 10.0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["work"]:
        # The worker is its own program (workers/); this is only its second name. Not an exec
        # of `python -m workers`: that would start a second interpreter for every `work`.
        from workers.cli import main as work

        return work(argv[1:], all_commands)
    parser = build_parser()
    command = parser.parse_args(argv).command  # --help and usage errors end here
    try:
        args = resolve(command, subcommands(parser)[command], argv[1:], all_commands).args
        args.command = command
        quiet = command in ("run", "count", "status")  # their output is the point, not the log
        setup_logging(args.verbose - args.quiet, logging.WARNING if quiet else logging.INFO)
        result: int = args.func(args)
        return result
    except LogDispatchError as e:  # configuration, a busy ledger: one line, no traceback
        print(f"logdispatch {command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more, not even at exit's flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="logdispatch",
        description="Count lines and error lines of log files landing in a shared folder, "
        "with the work spread over many hosts.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="watch ROOT and hand its files to workers")
    _add_root_argument(serve, "the folder to watch")
    _add_master_options(serve, listen=True)
    serve.set_defaults(func=cmd_serve)

    # Listed for --help only: main() hands `work` to the worker program before parsing.
    commands.add_parser("work", help="count files for a master (see `logdispatch work --help`)")

    run = commands.add_parser("run", help="master and local workers in one command")
    _add_root_argument(run, "the folder to count")
    run.add_argument("--workers", type=int, default=2, metavar="N", help="worker processes")
    run.add_argument(
        "--once", action="store_true", help="count what is in ROOT now, print the summary, exit"
    )
    _add_master_options(run, listen=False)
    add_engine_argument(run)
    add_max_expanded_argument(run)
    run.set_defaults(func=cmd_run)

    stat = commands.add_parser("status", help="what the running master is doing now")
    add_connection_arguments(stat, "the master's address")
    view = stat.add_mutually_exclusive_group()
    view.add_argument("--json", action="store_true", help="print the status document as JSON")
    view.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    stat.add_argument(
        "--interval",
        type=float,
        default=defaults.STATUS_INTERVAL_SECONDS,
        metavar="SECONDS",
        help="refresh period of --watch (default %(default)g)",
    )
    _add_verbosity(stat)
    stat.set_defaults(func=cmd_status)

    summ = commands.add_parser("summary", help="per-file counts and totals from the ledger")
    _add_state_option(summ)
    summ.add_argument("--format", choices=defaults.SUMMARY_FORMATS, default="table")
    summ.add_argument(
        "--rows",
        type=int,
        default=defaults.TABLE_ROWS,
        metavar="N",
        help="rows shown in the table at most (default %(default)s; 0: all)",
    )
    summ.add_argument(
        "--by",
        choices=defaults.SUMMARY_GROUPS,
        default="file",
        help="one row per file (default), or totals per top-level folder, worker, worker host "
        "or day counted",
    )
    summ.add_argument(
        "--depth", type=int, metavar="N", help="with --by dir: the first N folders (default 1)"
    )
    summ.add_argument(
        "--sort",
        choices=defaults.SUMMARY_SORTS,
        help="most lines, error lines or highest error rate first",
    )
    summ.add_argument(
        "--top", type=int, metavar="N", help="the first N rows only (by error lines unless --sort)"
    )
    summ.add_argument(
        "--failed", action="store_true", help="only the failed and vanished files, and why"
    )
    summ.add_argument(
        "--errors", action="store_true", help="the most frequent error messages (sampled lines)"
    )
    _add_verbosity(summ)
    summ.set_defaults(func=cmd_summary)

    page = commands.add_parser("report", help="the ledger as one HTML page, with charts")
    _add_state_option(page)
    page.add_argument(
        "--out",
        type=Path,
        default=REQUIRED,
        metavar="FILE",
        help="the page to write (- for standard output)",
    )
    _add_verbosity(page)
    page.set_defaults(func=cmd_report)

    count = commands.add_parser("count", help="count local files directly, no master")
    count.add_argument("files", nargs="+", metavar="FILE")
    count.add_argument("--error-pattern", default=None, metavar="RE")
    count.add_argument("--json", action="store_true", help="print JSON")
    add_engine_argument(count)
    add_max_expanded_argument(count)
    _add_verbosity(count)
    count.set_defaults(func=cmd_count)

    configure = commands.add_parser(
        "config", help="each option's value for a command line, and where it comes from"
    )
    configure.add_argument("--json", action="store_true", help="print JSON")
    configure.add_argument(
        "line",
        nargs=argparse.REMAINDER,
        metavar="COMMAND [ARGS...]",
        help="the command line to show (default: serve)",
    )
    _add_verbosity(configure)
    configure.set_defaults(func=cmd_config)

    for name, command in commands.choices.items():
        if name != "config":  # its ARGS are a command line, --config included
            add_config_option(command)
    return parser


def all_commands() -> dict[str, argparse.ArgumentParser]:
    """Every command that takes a configuration file, by name."""
    from workers.cli import build_parser as work_parser

    found = {name: p for name, p in subcommands(build_parser()).items() if takes_config(p)}
    found["work"] = work_parser()  # build_parser() has a stub, for --help only
    return found


def _add_root_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "root",
        type=Path,
        nargs="?",
        default=REQUIRED,
        metavar="ROOT",
        help=f"{what} (or root in the configuration file)",
    )


def _add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")


def _add_state_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        type=Path,
        default=Path(defaults.STATE_DIR),
        metavar="DIR",
        help=f"ledger directory (default: {defaults.STATE_DIR} in the working directory)",
    )


def _add_master_options(parser: argparse.ArgumentParser, listen: bool) -> None:
    if listen:
        add_connection_arguments(parser, "where workers connect; 0.0.0.0:PORT: all interfaces")
        parser.add_argument(
            "--metrics",
            metavar="H:P",
            help="serve Prometheus metrics at http://H:P/metrics (the [metrics] extra); "
            ":PORT is loopback",
        )
        parser.add_argument(
            "--http",
            metavar="H:P",
            help="serve the report page, live, at http://H:P/ and the status document at "
            "/status.json; :PORT is loopback",
        )
    _add_state_option(parser)
    parser.add_argument(
        "--poll",
        type=float,
        metavar="SECONDS",
        help="poll the folder every SECONDS instead of inotify events (use on NFS)",
    )
    parser.add_argument(
        "--rescan",
        type=float,
        default=defaults.RESCAN_SECONDS,
        metavar="SECONDS",
        help="full rescan of ROOT this often, to find what events missed (default %(default)g)",
    )
    parser.add_argument(
        "--no-events",
        dest="events",
        action="store_false",
        help="no inotify or polling watcher: only the rescans find new files",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=defaults.SETTLE_SECONDS,
        metavar="SECONDS",
        help="a file is counted once its size and mtime held still this long (default %(default)s)",
    )
    parser.add_argument("--include", action="append", default=[], metavar="GLOB")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB")
    parser.add_argument(
        "--error-pattern",
        default=None,
        metavar="RE",
        help="bytes regex for error lines (default: \\b(?:ERROR|FATAL|CRITICAL)\\b)",
    )
    parser.add_argument("--lease", type=float, default=defaults.LEASE_SECONDS, metavar="SECONDS")
    parser.add_argument(
        "--max-lease-age",
        type=float,
        default=defaults.MAX_LEASE_AGE_SECONDS,
        metavar="SECONDS",
        help="a lease ends this long after it was taken, however often its worker heartbeats "
        "(default: %(default)g)",
    )
    parser.add_argument("--max-attempts", type=int, default=defaults.MAX_ATTEMPTS, metavar="N")
    parser.add_argument(
        "--on-done",
        default="keep",
        metavar="keep|move:DIR|delete",
        help="once a file's counts are safely in the ledger: keep it (default), move it to "
        "DIR/<its path under ROOT>, or delete it",
    )
    _add_verbosity(parser)


def _master_config(args: argparse.Namespace, authkey: bytes, **overrides: Any) -> MasterConfig:
    from dispatcher.master.config import MasterConfig
    from dispatcher.master.ondone import OnDone

    options: dict[str, Any] = {
        "root": args.root,
        "authkey": authkey,
        "state_dir": args.state,
        "poll": args.poll,
        "rescan": args.rescan,
        "events": args.events,
        "settle": args.settle,
        "include": args.include,
        "exclude": args.exclude,
        "error_pattern": _pattern(args.error_pattern),
        "lease": args.lease,
        "max_lease_age": args.max_lease_age,
        "max_attempts": args.max_attempts,
        "on_done": OnDone.parse(args.on_done),
    }
    if hasattr(args, "address"):
        options["address"] = parse_address(args.address)
        options["tls"] = tls_files(args)
    options.update(overrides)
    return MasterConfig(**options)


def _pattern(text: str | None) -> bytes:
    return DEFAULT_ERROR_PATTERN if text is None else os.fsencode(text)


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
    from dispatcher.master.loop import Master

    raise_descriptor_limit()
    metrics_address = None if args.metrics is None else parse_address(args.metrics)
    http_address = None if args.http is None else parse_address(args.http)
    master = Master(_master_config(args, load_authkey(args.authkey_file)))
    StopSignals(master.stop)  # before start(): a signal during start-up is not lost
    try:
        with contextlib.ExitStack() as side_servers:  # they stop before the master closes
            master.start()
            if metrics_address is not None:
                from dispatcher.views.metrics import serve_metrics

                side_servers.callback(
                    serve_metrics(metrics_address, master.status, master.activity.snapshot)
                )
                log.info("metrics at http://%s/metrics", format_address(metrics_address))
            if http_address is not None:
                from dispatcher.views.web import serve_http

                side_servers.callback(serve_http(http_address, args.state, master.status))
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
    config = _master_config(args, authkey, address=("127.0.0.1", 0), once=args.once)
    # Before the master: forked while nothing is open and no thread runs, waiting to be told
    # where it listens.
    workers = LocalWorkers(args.workers)
    try:
        master = Master(config)
    except BaseException:
        workers.stop()
        raise
    signals = StopSignals(master.stop)  # before start(): a signal during start-up is not lost

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
        return _report_run(config, signals, crashed)
    finally:
        workers.wait(WORKER_STOP_SECONDS)  # done, nothing in flight: they stop while we report


def _report_run(config: MasterConfig, signals: StopSignals, crashed: bool) -> int:
    if signals.first is not None:
        print(
            f"logdispatch run: interrupted; what was counted is in the ledger: "
            f"logdispatch summary --state {config.state_dir}",
            file=sys.stderr,
        )
        return 128 + signals.first
    from dispatcher.views import summary

    document = summary.build(config.state_dir, defaults.TABLE_ROWS)
    summary.render_table(document, sys.stdout)
    return 1 if document["totals"]["failed"] or crashed else 0


def cmd_status(args: argparse.Namespace) -> int:
    from dispatcher.views import status

    if args.interval <= 0:
        raise ConfigError("--interval must be positive")
    address = parse_address(args.address)
    authkey = load_authkey(args.authkey_file)
    tls = tls_files(args)
    if tls is not None:
        from workers.protocol import client_context

        client_context(tls)  # unreadable files are an error now, not a lost master
    if args.watch:
        with contextlib.suppress(KeyboardInterrupt):  # the way out of --watch
            status.watch(address, authkey, args.interval, sys.stdout, tls)
        return 0
    document = status.fetch(address, authkey, tls)
    if args.json:
        json.dump(document, sys.stdout, indent=2)
        print()
    else:
        status.show(document, sys.stdout)
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from dispatcher.views import groups

    view = groups.View(args.by, args.depth, args.sort, args.top, args.failed, args.errors)
    groups.show(args.state, view, args.format, sys.stdout, args.rows)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dispatcher.views import report

    report.write(args.state, args.out)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    command, *line = args.line or ["serve"]
    commands = all_commands()
    if command not in commands:
        raise ConfigError(f"{command!r} is not a command with options: {', '.join(commands)}")
    resolution = resolve(command, commands[command], line, lambda: commands, allow_missing=True)
    show(resolution, sys.stdout, args.json)
    return 0


def cmd_count(args: argparse.Namespace) -> int:
    try:
        matcher = ErrorMatcher(_pattern(args.error_pattern), engine=args.engine)
    except re.error as e:
        raise ConfigError(f"--error-pattern is not a valid regex: {e}") from None
    expansion = Expansion(args.max_expanded)
    entries: list[dict[str, Any]] = []
    for name in args.files:
        shown = decode_path(os.fsencode(name))
        entry: dict[str, Any] = {"path": shown}
        try:
            counts = count_path(name, matcher, expansion=expansion)
        except (CountError, OSError) as e:
            entry["error"] = error_text(e)
            if not args.json:
                print(f"logdispatch count: {printable(shown)}: {entry['error']}", file=sys.stderr)
        else:
            entry.update(
                lines=counts.lines,
                error_lines=counts.error_lines,
                bytes=counts.bytes_read,
                compression=counts.compression,
                long_lines=counts.long_lines,
            )
            if not args.json:
                print(f"{counts.lines:>12} {counts.error_lines:>12}  {printable(shown)}")
        entries.append(entry)
    counted = [e for e in entries if "error" not in e]
    failed = len(entries) - len(counted)
    totals = {
        "files": len(counted),
        "failed": failed,
        "lines": sum(e["lines"] for e in counted),
        "error_lines": sum(e["error_lines"] for e in counted),
    }
    if args.json:
        json.dump({"files": entries, "totals": totals}, sys.stdout, indent=2)
        print()
    elif len(entries) > 1:
        print(f"{totals['lines']:>12} {totals['error_lines']:>12}  total")
    return 1 if failed else 0
