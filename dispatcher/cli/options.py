"""Options that several commands take, and the values they share."""

from __future__ import annotations

import argparse
import datetime
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from dispatcher import defaults
from workers.common import add_connection_arguments
from workers.config import REQUIRED
from workers.matching import DEFAULT_ERROR_PATTERN, Counters, check_counters

if TYPE_CHECKING:
    # What add_subparsers() gives: each command's module adds its parser to it.
    from workers.common import Parser

    Subparsers: TypeAlias = argparse._SubParsersAction[Parser]


def add_command(commands: Subparsers, name: str, about: str) -> argparse.ArgumentParser:
    """A command's parser: ``about``, one line, in ``logdispatch -h``'s list and atop its own
    help."""
    return commands.add_parser(name, help=about, description=f"{about[0].upper()}{about[1:]}.")


def add_root_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "root",
        type=Path,
        nargs="?",
        default=REQUIRED,
        metavar="ROOT",
        help=f"{what} (or root in the configuration file)",
    )


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")


def add_state_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state",
        type=Path,
        default=Path(defaults.STATE_DIR),
        metavar="DIR",
        help=f"ledger directory (default: {defaults.STATE_DIR} in the working directory)",
    )


def add_master_options(parser: argparse.ArgumentParser, listen: bool) -> None:
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
    add_state_option(parser)
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
    parser.add_argument(
        "--follow",
        type=float,
        default=None,
        metavar="SECONDS",
        help="count a log that keeps growing up to its last complete line every SECONDS, "
        "without waiting for it to settle (default: off)",
    )
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="count only the files that match a GLOB: one without / matches the file name, "
        "one with / the path under ROOT; repeat for more (default: every file)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip the files that match a GLOB, as --include's; repeat for more (default: none)",
    )
    add_error_pattern(parser)
    add_counters(parser)
    parser.add_argument(
        "--recount",
        choices=("all", "missing"),
        metavar="all|missing",
        help="at start, count again the files still in ROOT, unchanged, that were counted with "
        "other rules (error pattern or counters): all of them, or only those missing one of "
        "the counters given now; as new versions, each piece of content once (default: none)",
    )
    parser.add_argument(
        "--lease",
        type=float,
        default=defaults.LEASE_SECONDS,
        metavar="SECONDS",
        help="a file handed to a worker that has not heard from it this long is handed out "
        "again (default: %(default)g)",
    )
    parser.add_argument(
        "--max-lease-age",
        type=float,
        default=defaults.MAX_LEASE_AGE_SECONDS,
        metavar="SECONDS",
        help="a lease ends this long after it was taken, however often its worker heartbeats "
        "(default: %(default)g)",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=defaults.MAX_ATTEMPTS,
        metavar="N",
        help="a file whose counting failed or whose lease ran out this many times is failed "
        "for good (default: %(default)s)",
    )
    parser.add_argument(
        "--on-done",
        default="keep",
        metavar="keep|move:DIR|delete",
        help="once a file's counts are safely in the ledger: keep it (default), move it to "
        "DIR/<its path under ROOT>, or delete it",
    )
    parser.add_argument(
        "--keep",
        type=duration,
        default=None,
        metavar="DURATION",
        help="prune the ledger of what was finished longer ago than this (30d, 12h), as "
        "logdispatch prune does; the totals keep it (default: keep everything)",
    )
    add_verbosity(parser)


def add_error_pattern(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--error-pattern",
        default=None,
        metavar="RE",
        help=f"bytes regex for error lines (default: {DEFAULT_ERROR_PATTERN.decode()})",
    )


def add_counters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--count",
        action="append",
        default=[],
        type=counter,
        metavar="NAME=PATTERN",
        help="count the lines that match PATTERN (a bytes regex, as --error-pattern) as NAME, "
        "beside the error lines; repeat for more, up to 32; in the configuration file a "
        '[count] table of NAME = "PATTERN" (default: none)',
    )
    parser.add_argument(
        "--levels",
        action="store_true",
        help="count the lines of each log level too, as counters trace, debug, info, warn, "
        'error and fatal (plain words, level=, JSON "level", syslog severities; see '
        "docs/counting.md)",
    )


def counters_of(args: argparse.Namespace) -> Counters:
    """The named counters the options give: --levels' first, then each --count's; checked."""
    from workers.levels import LEVELS

    return check_counters((*(LEVELS if args.levels else ()), *args.count))


def counter(text: str) -> tuple[str, bytes]:
    """A named counter from ``NAME=PATTERN`` (argparse type); the name and the pattern are
    checked with all the counters (MasterConfig, ErrorMatcher)."""
    name, equals, pattern = text.partition("=")
    if not equals or not name.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=PATTERN (warn=\\bWARN\\b)")
    return name.strip(), os.fsencode(pattern)


def error_pattern(text: str | None) -> bytes:
    return DEFAULT_ERROR_PATTERN if text is None else os.fsencode(text)


# What a duration's unit stands for, in seconds: 90s, 15m, 2h, 7d, 2w.
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def duration(text: str) -> float:
    """Seconds in a duration such as ``90s``, ``15m``, ``2h``, ``7d`` or ``2w`` (argparse type)."""
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    try:
        seconds = float(number) * _UNITS[unit]
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration: a number and s, m, h, d or w (90s, 2h, 7d)"
        ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: it must be 0 or more")
    return seconds


def since(text: str) -> float:
    """The wall clock time (seconds) that ``text`` names: that long ago (``2h``, ``7d``), or
    an ISO date or date and time (``2026-12-01``, ``2026-12-01T08:00``, local time unless it
    says its offset). An argparse type."""
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return time.time() - duration(text)
        except argparse.ArgumentTypeError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is neither a duration (2h, 7d) nor an ISO date or time "
                "(2026-12-01, 2026-12-01T08:00)"
            ) from None
    return when.timestamp()  # a naive time is taken as local, as the summaries show times
