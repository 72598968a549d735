"""What the command line tells someone finding their way: the version, help for every option,
the usage of the command they typed, and messages that say what to type instead."""

from __future__ import annotations

import argparse
import gzip
import importlib.metadata
import json
import re
import tomllib
from pathlib import Path

import pytest
from conftest import COUNT_HEADER, Cluster, logdispatch, wait_for

from dispatcher.cli.main import all_commands, build_parser
from workers.config import REQUIRED, subcommands

PYPROJECT = Path(__file__).parent.parent / "pyproject.toml"
SAMPLES = Path(__file__).parent.parent / "sample_logs"


def test_version_is_the_installed_distributions() -> None:
    shown = logdispatch("--version")
    assert shown.returncode == 0, shown.stderr
    declared = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert declared == importlib.metadata.version("logdispatch")
    assert shown.stdout == f"logdispatch {declared}\n"


@pytest.mark.parametrize(
    ("argv", "meant"),
    [
        (["serve", "--setle", "3"], "--settle"),
        (["run", "--wrokers", "2"], "--workers"),
        (["summary", "--faild"], "--failed"),
        (["status", "--wach"], "--watch"),
        (["report", "--otu", "x.html"], "--out"),
        (["count", "--jsn", "a.log"], "--json"),
        (["count", "--error-patern=x", "a.log"], "--error-pattern"),
        (["config", "--jsno"], "--json"),
        (["work", "--proceses", "2"], "--processes"),
    ],
)
def test_a_mistyped_flag_gets_its_commands_usage_and_the_closest_flag(
    argv: list[str], meant: str
) -> None:
    shown = logdispatch(*argv)
    assert shown.returncode == 2
    assert shown.stdout == ""
    assert shown.stderr.startswith(f"usage: logdispatch {argv[0]} ")
    last = shown.stderr.splitlines()[-1]
    assert last.startswith(f"logdispatch {argv[0]}: error: unrecognized arguments: {argv[1]}")
    assert last.endswith(f"; did you mean {meant}?")


def test_a_flag_close_to_none_gets_no_suggestion() -> None:
    shown = logdispatch("summary", "--zzzzzzzz")
    assert shown.returncode == 2
    assert shown.stderr.startswith("usage: logdispatch summary ")
    assert shown.stderr.endswith("logdispatch summary: error: unrecognized arguments: --zzzzzzzz\n")


def _shows_a_default(action: argparse.Action) -> bool:
    """Whether ``action`` has a default worth showing: not a flag's off, not nothing."""
    if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
        return False
    if isinstance(action, argparse._CountAction):
        return False
    return action.default not in (None, REQUIRED, [], argparse.SUPPRESS)


def test_every_option_of_every_command_has_help_and_shows_its_default() -> None:
    commands = {**subcommands(build_parser()), **all_commands()}  # work's real parser
    assert set(commands) == {
        "serve", "work", "run", "status", "summary", "report", "count", "prune", "config",
    }  # fmt: skip
    checked = 0
    for name, parser in commands.items():
        assert parser.description, name
        for action in parser._actions:
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{what} has no help"
            if _shows_a_default(action):
                assert "default" in action.help, f"{what} does not show its default"
            checked += 1
    assert checked > 80


def test_each_command_has_a_one_line_description_in_the_list_and_atop_its_help() -> None:
    listing = logdispatch("-h")
    assert listing.returncode == 0
    parsers = {**subcommands(build_parser()), **all_commands()}  # work's real parser
    for name, parser in parsers.items():
        description = parser.description
        assert description is not None and "\n" not in description, name
        own = logdispatch(name, "-h")
        assert own.returncode == 0, name
        assert own.stdout.startswith(f"usage: logdispatch {name} ")
        # After the usage, before the arguments: the description, however it is wrapped.
        between = own.stdout.split("\n\n")[1]
        assert " ".join(between.split()) == description, name
        # In the program's list: the same line, lower case first, without its full stop.
        listed = re.search(rf"^    {name}\s+(\S.*(?:\n {{10,}}\S.*)*)", listing.stdout, re.M)
        assert listed is not None, name
        assert " ".join(listed[1].split()).startswith(description[0].lower() + description[1:-1])


@pytest.mark.parametrize("option", ["--address", "--metrics", "--http"])
def test_a_url_for_an_address_says_it_wants_host_port(tmp_path: Path, option: str) -> None:
    key = tmp_path / "key"
    key.write_text("secret\n")
    key.chmod(0o600)
    url = "http://127.0.0.1:5000"
    argv = ["serve", str(tmp_path), "--state", str(tmp_path / "state"), option, url]
    shown = logdispatch(*argv, "--authkey-file", str(key))
    assert shown.returncode == 2
    assert shown.stderr == (
        f"logdispatch serve: error: {option} wants HOST:PORT, not a URL: '{url}'\n"
    )
    # And for the commands that connect to a master.
    if option == "--address":
        for command in ("status", "work"):
            shown = logdispatch(command, "--address", url, "--authkey-file", str(key))
            assert shown.returncode == 2, command
            assert f"--address wants HOST:PORT, not a URL: '{url}'" in shown.stderr, command


def test_the_worker_logs_its_error_pattern_as_typed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.log").write_bytes(b"ERROR x\nfine\n")
    state = str(tmp_path / "state")
    shown = logdispatch(
        "run", str(root), "--once", "--workers", "1", "--state", state, "-v",
        "--error-pattern", r"\bERROR\b",
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert r"error pattern \bERROR\b: " in shown.stderr
    assert r"\\b" not in shown.stderr


def test_count_prints_a_header_row_and_json_has_none(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"ERROR x\nfine\n")
    table = logdispatch("count", str(log))
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == COUNT_HEADER
    assert row.split() == ["2", "1", str(log)]
    # The columns line up under their names, right-aligned as the numbers are.
    assert header.index("lines") + len("lines") == row.index("2") + 1
    assert header.index("error_lines") + len("error_lines") == row.index("1") + 1
    document = json.loads(logdispatch("count", "--json", str(log)).stdout)
    assert document["files"][0]["lines"] == 2


def test_summary_failed_exits_1_when_a_file_failed_and_every_other_view_0(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "good.log").write_bytes(b"ERROR x\nfine\n")
    state = str(tmp_path / "state")
    run = logdispatch("run", str(root), "--once", "--workers", "1", "--state", state)
    assert run.returncode == 0, run.stderr
    for fmt in ("table", "json", "csv"):
        shown = logdispatch("summary", "--state", state, "--failed", "--format", fmt)
        assert shown.returncode == 0, (fmt, shown.stderr)

    # A gzip file cut short fails on every attempt.
    (root / "cut.log.gz").write_bytes(gzip.compress(b"ERROR y\n" * 10_000)[:-40])
    run = logdispatch(
        "run", str(root), "--once", "--workers", "1", "--state", state, "--max-attempts", "1"
    )
    assert run.returncode == 1
    for fmt in ("table", "json", "csv"):
        shown = logdispatch("summary", "--state", state, "--failed", "--format", fmt)
        assert shown.returncode == 1, (fmt, shown.stderr)
        assert "cut.log.gz" in shown.stdout
    document = json.loads(
        logdispatch("summary", "--state", state, "--failed", "--format", "json").stdout
    )
    assert document["totals"]["failed"] == 1
    for view in ([], ["--by", "dir"], ["--errors"], ["--format", "json"], ["--sort", "errors"]):
        shown = logdispatch("summary", "--state", state, *view)
        assert shown.returncode == 0, (view, shown.stderr)
    assert "exit status 1" in " ".join(logdispatch("summary", "-h").stdout.split())


def test_verbose_logs_a_line_per_file_counted(tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    quiet = logdispatch("run", str(SAMPLES), "--once", "--workers", "1", "--state", state)
    assert quiet.returncode == 0, quiet.stderr
    assert "logdispatch.files" not in quiet.stderr

    state = str(tmp_path / "again")
    shown = logdispatch("run", str(SAMPLES), "--once", "--workers", "1", "--state", state, "-v")
    assert shown.returncode == 0, shown.stderr
    expected = json.loads((SAMPLES / "EXPECTED.json").read_text())["files"]["db-01/syslog"]
    counts = f"db-01/syslog: {expected['lines']} lines, {expected['error_lines']} error lines, "
    [master] = [line for line in shown.stderr.splitlines() if "files.master INFO " + counts in line]
    assert " by " in master  # the worker that counted it
    assert [line for line in shown.stderr.splitlines() if "files.worker INFO " + counts in line]


def test_serve_at_its_default_level_logs_no_line_per_file(cluster: Cluster) -> None:
    # serve logs INFO by default: the per-file lines must still wait for -v.
    master = cluster.serve()
    worker = cluster.work("-v")
    (cluster.root / "a.log").write_bytes(b"ERROR x\nfine\n")
    wait_for(lambda: "files.worker INFO a.log: 2 lines, 1 error lines" in worker.output)
    wait_for(lambda: cluster.files().get("a.log", {}).get("status") == "done")
    assert "logdispatch.files" not in master.output
    assert "INFO" in master.output
