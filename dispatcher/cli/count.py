"""``logdispatch count``: local files counted directly, with no master."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import TYPE_CHECKING, Any

from dispatcher.cli.options import (
    add_command,
    add_counters,
    add_error_pattern,
    add_verbosity,
    counters_of,
    error_pattern,
)
from workers.common import (
    add_engine_argument,
    add_max_expanded_argument,
    decode_path,
    error_text,
    printable,
)
from workers.counting import count_path
from workers.errors import ConfigError, CountError
from workers.expansion import Expansion
from workers.matching import ErrorMatcher

if TYPE_CHECKING:
    from dispatcher.cli.options import Subparsers


def add_count_parser(commands: Subparsers) -> None:
    count = add_command(commands, "count", "count local files directly, with no master or ledger")
    count.add_argument("files", nargs="+", metavar="FILE", help="the files to count")
    add_error_pattern(count)
    add_counters(count)
    count.add_argument("--json", action="store_true", help="print JSON")
    add_engine_argument(count)
    add_max_expanded_argument(count)
    add_verbosity(count)
    count.set_defaults(func=cmd_count)


def cmd_count(args: argparse.Namespace) -> int:
    counters = counters_of(args)
    names = [name for name, _ in counters]
    try:
        matcher = ErrorMatcher(
            error_pattern(args.error_pattern), counters=counters, engine=args.engine
        )
    except re.error as e:
        raise ConfigError(f"--error-pattern is not a valid regex: {e}") from None
    expansion = Expansion(args.max_expanded)
    entries: list[dict[str, Any]] = []
    columns = ["lines", "error_lines", *names]
    if not args.json:
        print(_row(columns, "path"))
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
                counts=dict(zip(names, counts.counts, strict=True)),
            )
            if not args.json:
                numbers = [counts.lines, counts.error_lines, *counts.counts]
                print(_row(numbers, printable(shown)))
        entries.append(entry)
    counted = [e for e in entries if "error" not in e]
    failed = len(entries) - len(counted)
    totals = {
        "files": len(counted),
        "failed": failed,
        "lines": sum(e["lines"] for e in counted),
        "error_lines": sum(e["error_lines"] for e in counted),
        "counts": {name: sum(e["counts"][name] for e in counted) for name in names},
    }
    if args.json:
        json.dump({"files": entries, "totals": totals}, sys.stdout, indent=2)
        print()
    elif len(entries) > 1:
        numbers = [totals["lines"], totals["error_lines"], *totals["counts"].values()]
        print(_row(numbers, "total"))
    return 1 if failed else 0


def _row(cells: list[Any], last: str) -> str:
    """One line of count's table: right-aligned columns, then the path."""
    return "".join(f"{cell:>12} " for cell in cells) + f" {last}"
