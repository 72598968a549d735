"""The ``logdispatch`` command: parse, build a config, call the library, return an exit code.

Each command's parser and function are in its own module (``serve`` and ``run``, the views,
``count``; ``config`` is here, beside the parser it reads). They are all imported to build the
parser, so their imports are light: each command loads the master's, the ledger's and the
views' modules only when it runs, and ``count`` starts without them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import version

from dispatcher.cli.config import show
from dispatcher.cli.count import add_count_parser
from dispatcher.cli.options import add_command, add_verbosity
from dispatcher.cli.prune import add_prune_parser
from dispatcher.cli.serve import add_run_parser, add_serve_parser
from dispatcher.cli.views import add_report_parser, add_status_parser, add_summary_parser
from workers.common import UNRECOGNIZED, WORK_ABOUT, Parser, setup_logging
from workers.config import add_config_option, resolve, subcommands, takes_config
from workers.errors import ConfigError, LogDispatchError


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["work"]:
        # The worker is its own program (workers/); this is only its second name. Not an exec
        # of `python -m workers`: that would start a second interpreter for every `work`.
        from workers.cli import main as work

        return work(argv[1:], all_commands)
    parser = build_parser()
    # --help and usage errors end here; an argument no option of the command took is the
    # command's error, with its usage, not the program's.
    parsed, unknown = parser.parse_known_args(argv)
    command = parsed.command
    if unknown:
        subcommands(parser)[command].error(UNRECOGNIZED + " ".join(unknown))
    try:
        args = resolve(command, subcommands(parser)[command], argv[1:], all_commands).args
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
    parser = Parser(
        prog="logdispatch",
        description="Count lines and error lines of log files landing in a shared folder, "
        "with the work spread over many hosts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('logdispatch')}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    add_serve_parser(commands)

    # Listed for --help only: main() hands `work` to the worker program before parsing.
    add_command(commands, "work", f"{WORK_ABOUT} (see `logdispatch work -h`)")

    add_run_parser(commands)
    add_status_parser(commands)
    add_summary_parser(commands)
    add_report_parser(commands)
    add_count_parser(commands)
    add_prune_parser(commands)

    configure = add_command(
        commands,
        "config",
        "each option's value for a command line, and where it comes from; for serve, run "
        "and work, what would stop it at start (exit 1 if anything would)",
    )
    configure.add_argument("--json", action="store_true", help="print JSON")
    configure.add_argument(
        "line",
        nargs=argparse.REMAINDER,
        metavar="COMMAND [ARGS...]",
        help="the command line to show (default: serve)",
    )
    add_verbosity(configure)
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


def cmd_config(args: argparse.Namespace) -> int:
    command, *line = args.line or ["serve"]
    commands = all_commands()
    if command not in commands:
        raise ConfigError(f"{command!r} is not a command with options: {', '.join(commands)}")
    resolution = resolve(command, commands[command], line, lambda: commands, allow_missing=True)
    from dispatcher.cli import preflight

    found = None
    if command in preflight.CHECKED:
        found = preflight.problems(command, resolution.args)
    show(resolution, sys.stdout, args.json, found)
    return 1 if found else 0
