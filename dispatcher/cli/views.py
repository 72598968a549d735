"""The views of a master's work: ``logdispatch status``, ``summary`` and ``report``."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dispatcher import defaults
from dispatcher.cli.options import add_command, add_state_option, add_verbosity, since
from workers.common import add_connection_arguments, load_authkey, parse_address, tls_files
from workers.config import REQUIRED
from workers.errors import ConfigError

# The views' modules (and the ledger's) load only when their command runs.
if TYPE_CHECKING:
    from dispatcher.cli.options import Subparsers


def add_status_parser(commands: Subparsers) -> None:
    stat = add_command(commands, "status", "what the running master is doing now")
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
    add_verbosity(stat)
    stat.set_defaults(func=cmd_status)


def add_summary_parser(commands: Subparsers) -> None:
    summ = add_command(
        commands,
        "summary",
        "per-file counts and totals from the ledger, or groups, failures, error messages",
    )
    add_state_option(summ)
    summ.add_argument(
        "--format",
        choices=defaults.SUMMARY_FORMATS,
        default="table",
        help="a table for people, or CSV or JSON for programs (default: %(default)s)",
    )
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
        metavar="lines|errors|rate|COUNTER",
        help="most lines, error lines, highest error rate or most lines of a named counter first",
    )
    summ.add_argument(
        "--top", type=int, metavar="N", help="the first N rows only (by error lines unless --sort)"
    )
    summ.add_argument(
        "--failed",
        action="store_true",
        help="only the failed and vanished files, and why; exit status 1 if there is any, "
        "0 if none (for cron and alerting)",
    )
    summ.add_argument(
        "--errors", action="store_true", help="the most frequent error messages (sampled lines)"
    )
    summ.add_argument(
        "--path",
        metavar="GLOB",
        help="only the files whose path (as shown) matches GLOB, in every view and its totals; "
        "* and ? match / too, as in --include's globs with / (default: every file)",
    )
    summ.add_argument(
        "--since",
        type=since,
        metavar="WHEN",
        help="only the files finished since WHEN, and those not finished yet, in every view "
        "and its totals: a duration ago (30m, 2h, 7d) or an ISO date or time (2026-12-01, "
        "2026-12-01T08:00, local time unless it gives its offset) (default: all)",
    )
    summ.add_argument(
        "--history",
        metavar="PATH",
        help="every version of one path (as summaries show it), oldest first: its id, status, "
        "size, mtime, counts, what it added to the totals (own lines), same_as and when it "
        "was finished",
    )
    add_verbosity(summ)
    summ.set_defaults(func=cmd_summary)


def add_report_parser(commands: Subparsers) -> None:
    page = add_command(commands, "report", "the ledger as one HTML page, with charts")
    add_state_option(page)
    page.add_argument(
        "--out",
        type=Path,
        default=REQUIRED,
        metavar="FILE",
        help="the page to write (- for standard output)",
    )
    add_verbosity(page)
    page.set_defaults(func=cmd_report)


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

    view = groups.View(
        args.by,
        args.depth,
        args.sort,
        args.top,
        args.failed,
        args.errors,
        args.path,
        args.history,
        args.since,
    )
    if args.rows < 0:
        raise ConfigError("--rows must be 0 (all) or more")
    problems = groups.show(args.state, view, args.format, sys.stdout, args.rows)
    return 1 if problems else 0  # only --failed finds any


def cmd_report(args: argparse.Namespace) -> int:
    from dispatcher.views import report

    report.write(args.state, args.out)
    return 0
