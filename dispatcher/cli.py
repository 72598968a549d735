"""The ``logdispatch`` command: parse, build a config, call the library, return an exit code."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import secrets
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dispatcher import defaults
from dispatcher.common import (
    ConfigError,
    LogDispatchError,
    StopSignals,
    add_connection_arguments,
    add_engine_argument,
    decode_path,
    error_text,
    load_authkey,
    parse_address,
    printable,
    setup_logging,
)
from workers.counting import (
    DEFAULT_ERROR_PATTERN,
    CountError,
    ErrorMatcher,
    check_engine,
    count_path,
)

# The master's, the ledger's and the workers' modules load only in the commands using them:
# `count` starts without them.
if TYPE_CHECKING:
    from dispatcher.master import MasterConfig

log = logging.getLogger("logdispatch.cli")

# How long `run` gives its workers to finish their batch after SIGTERM before killing them.
WORKER_STOP_SECONDS = 10.0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["work"]:
        # The worker is its own program (workers/); this is only its second name. Not an exec
        # of `python -m workers`: a second interpreter start cost about 0.1 s.
        from workers.cli import main as work

        return work(argv[1:])
    args = build_parser().parse_args(argv)
    quiet = args.command in ("run", "count")  # their output is the point, not the log
    setup_logging(args.verbose - args.quiet, logging.WARNING if quiet else logging.INFO)
    try:
        result: int = args.func(args)
        return result
    except LogDispatchError as e:  # configuration, a busy ledger: one line, no traceback
        print(f"logdispatch {args.command}: error: {e}", file=sys.stderr)
        return 2
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
    serve.add_argument("root", type=Path, metavar="ROOT")
    _add_master_options(serve, listen=True)
    serve.set_defaults(func=cmd_serve)

    # Listed for --help only: main() hands `work` to the worker program before parsing.
    commands.add_parser("work", help="count files for a master (see `logdispatch work --help`)")

    run = commands.add_parser("run", help="master and local workers in one command")
    run.add_argument("root", type=Path, metavar="ROOT")
    run.add_argument("--workers", type=int, default=2, metavar="N", help="worker processes")
    run.add_argument(
        "--once", action="store_true", help="count what is in ROOT now, print the summary, exit"
    )
    _add_master_options(run, listen=False)
    add_engine_argument(run)
    run.set_defaults(func=cmd_run)

    summ = commands.add_parser("summary", help="per-file counts and totals from the ledger")
    _add_state_option(summ)
    summ.add_argument("--format", choices=defaults.SUMMARY_FORMATS, default="table")
    summ.add_argument(
        "--rows",
        type=int,
        default=defaults.TABLE_ROWS,
        metavar="N",
        help="files shown in the table at most (default %(default)s; 0: all)",
    )
    _add_verbosity(summ)
    summ.set_defaults(func=cmd_summary)

    count = commands.add_parser("count", help="count local files directly, no master")
    count.add_argument("files", nargs="+", metavar="FILE")
    count.add_argument("--error-pattern", default=None, metavar="RE")
    count.add_argument("--json", action="store_true", help="print JSON")
    add_engine_argument(count)
    _add_verbosity(count)
    count.set_defaults(func=cmd_count)
    return parser


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
    from dispatcher.master import MasterConfig
    from dispatcher.ondone import OnDone

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
        "max_attempts": args.max_attempts,
        "on_done": OnDone.parse(args.on_done),
    }
    if hasattr(args, "address"):
        options["address"] = parse_address(args.address)
    options.update(overrides)
    return MasterConfig(**options)


def _pattern(text: str | None) -> bytes:
    return DEFAULT_ERROR_PATTERN if text is None else os.fsencode(text)


def cmd_serve(args: argparse.Namespace) -> int:
    from dispatcher.master import Master

    master = Master(_master_config(args, load_authkey(args.authkey_file)))
    StopSignals(master.stop)  # before start(): a signal during start-up is not lost
    try:
        master.start()
        master.run()
    finally:
        master.close()
    log.info("stopped")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ConfigError("--workers must be at least 1")
    from dispatcher.master import Master
    from workers.local import LocalWorkers
    from workers.worker import WorkerConfig

    check_engine(args.engine)  # a missing engine is an error before anything starts
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

    def workers_gone() -> bool:
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
            )
        )
        crashed = master.run(until=workers_gone)
    finally:
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
    from dispatcher import summary

    document = summary.build(config.state_dir, defaults.TABLE_ROWS)
    summary.render_table(document, sys.stdout)
    return 1 if document["totals"]["failed"] or crashed else 0


def cmd_summary(args: argparse.Namespace) -> int:
    from dispatcher import summary

    if args.format == "table":
        summary.render_table(summary.build(args.state, args.rows), sys.stdout, args.rows)
    else:
        summary.write(args.state, args.format, sys.stdout)
    return 0


def cmd_count(args: argparse.Namespace) -> int:
    try:
        matcher = ErrorMatcher(_pattern(args.error_pattern), engine=args.engine)
    except re.error as e:
        raise ConfigError(f"--error-pattern is not a valid regex: {e}") from None
    entries: list[dict[str, Any]] = []
    for name in args.files:
        shown = decode_path(os.fsencode(name))
        entry: dict[str, Any] = {"path": shown}
        try:
            counts = count_path(name, matcher)
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
