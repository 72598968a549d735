"""Option values from flags, LOGDISPATCH_* variables, a TOML file and defaults, in that order,
and `logdispatch config`, which shows them."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest
from conftest import AUTHKEY, Cluster, Proc, logdispatch, wait_for

from dispatcher.cli.main import all_commands
from workers.cli import build_parser as work_parser
from workers.config import (
    Resolution,
    Source,
    add_config_option,
    resolve,
    subcommands,
)
from workers.errors import ConfigError

SAMPLES = Path(__file__).parent.parent / "sample_logs"
DEPLOY = Path(__file__).parent.parent / "deploy"


def resolved(command: str, *argv: str, env: dict[str, str] | None = None) -> Resolution:
    """``command ARGV`` resolved by the real parsers, in the environment ``env`` only."""
    commands = all_commands()
    return resolve(command, commands[command], list(argv), lambda: commands, env or {})


def toml_file(tmp_path: Path, text: str, name: str = "logdispatch.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# --- precedence -----------------------------------------------------------------------------


def test_each_level_beats_the_next(tmp_path: Path) -> None:
    config = toml_file(tmp_path, "poll = 2\n")
    serve = ("serve", str(tmp_path), "--config", config)

    default = resolved("serve", str(tmp_path))
    assert (default.args.poll, default.sources["poll"]) == (None, Source("default"))

    from_file = resolved(*serve)
    assert (from_file.args.poll, from_file.sources["poll"]) == (2.0, Source("file", config))

    from_env = resolved(*serve, env={"LOGDISPATCH_POLL": "3"})
    assert (from_env.args.poll, from_env.sources["poll"]) == (
        3.0,
        Source("env", "LOGDISPATCH_POLL"),
    )

    from_flag = resolved(*serve, "--poll", "4", env={"LOGDISPATCH_POLL": "3"})
    assert (from_flag.args.poll, from_flag.sources["poll"]) == (4.0, Source("flag"))


def test_the_file_may_come_from_the_environment(tmp_path: Path) -> None:
    config = toml_file(tmp_path, "settle = 7\n")
    other = toml_file(tmp_path, "settle = 9\n", "other.toml")
    by_env = resolved("serve", str(tmp_path), env={"LOGDISPATCH_CONFIG": config})
    assert by_env.args.settle == 7.0
    assert by_env.sources["config"] == Source("env", "LOGDISPATCH_CONFIG")
    by_flag = resolved(
        "serve", str(tmp_path), "--config", other, env={"LOGDISPATCH_CONFIG": config}
    )
    assert by_flag.args.settle == 9.0


def test_a_command_table_beats_the_top_level_for_that_command_only(tmp_path: Path) -> None:
    config = toml_file(tmp_path, "lease = 10\nstate = 'top'\n[serve]\nlease = 20\n")
    serve = resolved("serve", str(tmp_path), "--config", config)
    assert serve.args.lease == 20.0
    assert serve.sources["lease"] == Source("file", config, "serve")
    assert str(serve.sources["lease"]) == f"{config} [serve]"
    run = resolved("run", str(tmp_path), "--config", config)
    assert run.args.lease == 10.0
    assert run.sources["lease"] == Source("file", config)
    assert serve.args.state == run.args.state == Path("top")


def test_list_options_are_replaced_not_merged(tmp_path: Path) -> None:
    config = toml_file(tmp_path, "include = ['*.log', '*.gz']\n")
    serve = ("serve", str(tmp_path), "--config", config)
    assert resolved(*serve).args.include == ["*.log", "*.gz"]
    flags = resolved(*serve, "--include", "*.txt", "--include", "*.csv")
    assert flags.args.include == ["*.txt", "*.csv"]
    env = resolved(*serve, env={"LOGDISPATCH_INCLUDE": "a/*, b/*"})
    assert env.args.include == ["a/*", "b/*"]
    # Nothing anywhere: argparse's default list, not one grown by an earlier parse.
    assert resolved("serve", str(tmp_path)).args.include == []
    assert resolved("serve", str(tmp_path)).args.include == []


def test_booleans_from_the_file_and_the_environment(tmp_path: Path) -> None:
    config = toml_file(tmp_path, "no-events = true\nonce = true\n")
    run = resolved("run", str(tmp_path), "--config", config)
    assert (run.args.events, run.args.once) == (False, True)
    env = resolved(
        "run",
        str(tmp_path),
        "--config",
        config,
        env={"LOGDISPATCH_NO_EVENTS": "no", "LOGDISPATCH_ONCE": "0"},
    )
    assert (env.args.events, env.args.once) == (True, False)
    assert resolved("run", str(tmp_path), env={"LOGDISPATCH_ONCE": "Yes"}).args.once is True


def test_underscores_stand_for_dashes(tmp_path: Path) -> None:
    config = toml_file(tmp_path, "error_pattern = 'WARN'\n[serve]\nmax_attempts = 5\n")
    serve = resolved("serve", str(tmp_path), "--config", config)
    assert (serve.args.error_pattern, serve.args.max_attempts) == ("WARN", 5)
    twice = toml_file(tmp_path, "error_pattern = 'a'\nerror-pattern = 'b'\n", "twice.toml")
    with pytest.raises(ConfigError, match="error-pattern is given twice"):
        resolved("serve", str(tmp_path), "--config", twice)


def test_keys_of_other_commands_are_ignored(tmp_path: Path) -> None:
    config = toml_file(tmp_path, "workers = 3\nprocesses = 4\nformat = 'csv'\npoll = 2\n")
    serve = resolved("serve", str(tmp_path), "--config", config)
    assert not hasattr(serve.args, "workers") and not hasattr(serve.args, "processes")
    assert resolved("run", str(tmp_path), "--config", config).args.workers == 3
    assert resolved("work", "--config", config).args.processes == 4
    assert resolved("summary", "--config", config).args.format == "csv"


def test_the_workers_own_program_checks_only_its_own_table(tmp_path: Path) -> None:
    """``python -m workers`` knows no other command: the rest of the file is theirs."""
    parser = work_parser()
    shared = toml_file(tmp_path, "poll = 2\nprocesses = 4\n[serve]\nsettle = 3\n")
    assert resolve("work", parser, ["--config", shared], None, {}).args.processes == 4
    typo = toml_file(tmp_path, "[work]\nprocesess = 4\n", "typo.toml")
    with pytest.raises(ConfigError, match=r"\[work\] procesess: no such option of work"):
        resolve("work", parser, ["--config", typo], None, {})


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pol = 2\n", r": pol: no such option of any command"),
        ("[serve]\nworkers = 2\n", r": \[serve\] workers: no such option of serve"),
        ("[nosuch]\npoll = 2\n", r": \[nosuch\] is not a command with options"),
        ("config = 'x.toml'\n", r": config: no such option of any command"),
        ("poll = 'fast'\n", r": poll: invalid float value: 'fast'"),
        ("[run]\nmax-attempts = 2.5\n", r": \[run\] max-attempts: invalid int value: 2.5"),
        ("engine = 'grep'\n", r": engine: invalid choice: 'grep' \(choose from 'auto', "),
        ("no-events = 'yes'\n", r": no-events: expected true or false, not 'yes'"),
        ("include = '*.log'\n", r": include: expected a list"),
        ("include = [['*.log']]\n", r": include: expected a single value"),
        ("poll = true\n", r": poll: expected a single value, not True"),
        ("verbose = -1\n", r": verbose: expected a count"),
        ("poll = \n", r": not valid TOML"),
    ],
)
def test_a_bad_file_is_an_error_naming_the_file_the_key_and_the_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    config = toml_file(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(config) + message):
        resolved("run", str(tmp_path), "--config", config)


@pytest.mark.parametrize(
    ("variable", "text", "message"),
    [
        ("LOGDISPATCH_POLL", "fast", "invalid float value: 'fast'"),
        ("LOGDISPATCH_ENGINE", "grep", "invalid choice: 'grep'"),
        ("LOGDISPATCH_NO_EVENTS", "maybe", "expected one of 1/true/yes/0/false/no"),
        ("LOGDISPATCH_VERBOSE", "lots", "expected a count"),
    ],
)
def test_a_bad_variable_is_an_error_naming_it(
    tmp_path: Path, variable: str, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"${variable}: {message}")):
        resolved("run", str(tmp_path), env={variable: text})


def test_the_command_line_reports_a_bad_file_in_one_line(tmp_path: Path) -> None:
    config = toml_file(tmp_path, "[serve]\npol = 2\n")
    result = logdispatch("serve", str(tmp_path), "--config", config)
    assert result.returncode == 2
    assert result.stderr == (
        f"logdispatch serve: error: {config}: [serve] pol: no such option of serve\n"
    )
    missing = logdispatch("count", "x.log", "--config", str(tmp_path / "missing.toml"))
    assert missing.returncode == 2
    assert missing.stderr == (
        f"logdispatch count: error: cannot read configuration file "
        f"{tmp_path / 'missing.toml'}: No such file or directory\n"
    )
    work = logdispatch("work", env={"LOGDISPATCH_CONFIG": config})
    assert work.returncode == 2
    assert work.stderr.startswith(f"logdispatch work: error: {config}: [serve] pol")


def test_root_from_the_file_or_a_clear_error(tmp_path: Path) -> None:
    config = toml_file(tmp_path, f"[serve]\nroot = '{tmp_path}'\n")
    serve = resolved("serve", "--config", config)
    assert serve.args.root == tmp_path
    assert serve.sources["root"] == Source("file", config, "serve")
    assert resolved("serve", env={"LOGDISPATCH_ROOT": "/elsewhere"}).args.root == Path("/elsewhere")
    with pytest.raises(ConfigError, match=r"^ROOT is required: .* as \$LOGDISPATCH_ROOT$"):
        resolved("run", "--config", config)  # the [serve] table is not run's
    result = logdispatch("run", "--once")
    assert result.returncode == 2
    assert result.stderr.startswith("logdispatch run: error: ROOT is required")


# --- the authkey ----------------------------------------------------------------------------


def test_the_key_in_the_environment_beats_a_key_file_from_the_file(tmp_path: Path) -> None:
    config = toml_file(tmp_path, "authkey-file = '/nowhere/key'\n")
    with_env = resolved(
        "serve", str(tmp_path), "--config", config, env={"LOGDISPATCH_AUTHKEY": "k"}
    )
    assert with_env.args.authkey_file is None  # so load_authkey reads the variable
    assert with_env.sources["authkey_file"] == Source("env", "LOGDISPATCH_AUTHKEY")
    without = resolved("serve", str(tmp_path), "--config", config)
    assert without.args.authkey_file == "/nowhere/key"
    flag = resolved("serve", str(tmp_path), "--authkey-file", "k", env={"LOGDISPATCH_AUTHKEY": "k"})
    assert (flag.args.authkey_file, flag.sources["authkey_file"]) == ("k", Source("flag"))


def test_config_shows_where_the_key_is_but_never_the_key(tmp_path: Path) -> None:
    secret = "s3cret-" + AUTHKEY
    by_env = logdispatch("config", "serve", str(tmp_path), env={"LOGDISPATCH_AUTHKEY": secret})
    assert by_env.returncode == 0, by_env.stderr
    assert re.search(r"authkey +set +env LOGDISPATCH_AUTHKEY", by_env.stdout)

    key_file = tmp_path / "key"
    key_file.write_text(secret + "\n")
    key_file.chmod(0o600)
    config = toml_file(tmp_path, f"authkey-file = '{key_file}'\n")
    shown = logdispatch("config", "--json", "work", "--config", config)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["authkey"] == {"set": True, "source": "file", "file": str(key_file)}
    assert document["options"]["authkey-file"]["value"] == str(key_file)
    for output in (by_env, shown):
        assert secret not in output.stdout + output.stderr

    unset = logdispatch("config", "--json", "work", env={"LOGDISPATCH_AUTHKEY": ""})
    assert json.loads(unset.stdout)["authkey"]["set"] is False


# --- logdispatch config ---------------------------------------------------------------------


def test_config_prints_each_value_and_its_source(tmp_path: Path) -> None:
    config = toml_file(
        tmp_path,
        f"root = '{tmp_path}'\npoll = 2\ninclude = ['*.log']\n[serve]\nsettle = 4\n",
    )
    args = ("serve", "--config", config, "--lease", "12")
    env = {"LOGDISPATCH_POLL": "3", "LOGDISPATCH_NO_EVENTS": "1"}
    # A key and a port of its own, for a command line that would start.
    env |= {"LOGDISPATCH_AUTHKEY": AUTHKEY, "LOGDISPATCH_ADDRESS": "127.0.0.1:0"}
    shown = logdispatch("config", "--json", *args, env=env)
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    assert document["command"] == "serve"
    options = document["options"]
    assert options["config"] == {"value": config, "source": "flag"}
    assert options["root"] == {"value": str(tmp_path), "source": "file", "file": config}
    assert options["poll"] == {"value": 3.0, "source": "env", "variable": "LOGDISPATCH_POLL"}
    assert options["no-events"] == {
        "value": True,
        "source": "env",
        "variable": "LOGDISPATCH_NO_EVENTS",
    }
    assert options["settle"] == {"value": 4.0, "source": "file", "file": config, "table": "serve"}
    assert options["include"] == {"value": ["*.log"], "source": "file", "file": config}
    assert options["lease"] == {"value": 12.0, "source": "flag"}
    assert options["max-attempts"] == {"value": 3, "source": "default"}
    assert "parent-pid" not in options and "help" not in options

    table = logdispatch("config", *args, env={**env, "COLUMNS": "300"})  # no folded cells
    assert table.returncode == 0, table.stderr
    rows = {line.split()[0]: line.split()[1:] for line in table.stdout.splitlines() if line.strip()}
    assert rows["poll"] == ["3.0", "env", "LOGDISPATCH_POLL"]
    assert rows["settle"] == ["4.0", config, "[serve]"]
    assert rows["root"] == [str(tmp_path), config]
    assert rows["lease"] == ["12.0", "flag"]
    assert rows["max-attempts"] == ["3", "default"]


def test_config_defaults_to_serve_and_shows_a_missing_root() -> None:
    shown = logdispatch("config", "--json")
    assert shown.returncode == 1, shown.stderr  # serve would not start
    document = json.loads(shown.stdout)
    assert document["command"] == "serve"
    assert document["options"]["root"] == {"value": None, "source": "missing"}
    required = "ROOT is required: give it on the command line or as root in --config"
    assert required in document["problems"]
    table = logdispatch("config")
    assert re.search(r"root +required, not given +missing", table.stdout)


def test_config_of_an_unknown_command_is_an_error() -> None:
    result = logdispatch("config", "serv")
    assert result.returncode == 2
    assert result.stderr.startswith("logdispatch config: error: 'serv' is not a command")


def test_a_new_command_is_configurable_without_changes(tmp_path: Path) -> None:
    """What a command added later gets: its flags as keys, whatever their kind."""
    parser = argparse.ArgumentParser(prog="logdispatch")
    commands = parser.add_subparsers(dest="command")
    status = commands.add_parser("status")
    status.add_argument("--interval", type=float, default=1.0)
    status.add_argument("--color", action=argparse.BooleanOptionalAction, default=True)
    status.add_argument("--host", action="extend", nargs="+", default=[])
    status.add_argument("--json", action="store_true")
    add_config_option(status)
    config = toml_file(tmp_path, "[status]\ninterval = 5\ncolor = false\nhost = ['a', 'b']\n")
    result = resolve(
        "status",
        subcommands(parser)["status"],
        ["--config", config, "--json"],
        lambda: subcommands(parser),
        {"LOGDISPATCH_INTERVAL": "2.5"},
    )
    args = result.args
    assert (args.interval, args.color, args.host, args.json) == (2.5, False, ["a", "b"], True)
    assert result.sources["color"] == Source("file", config, "status")


# --- the same counts whatever the values come from ------------------------------------------


def test_work_reads_the_same_file(cluster: Cluster) -> None:
    """A master and a worker from one file: the shared keys at the top, a table for each."""
    config = toml_file(
        cluster.tmp,
        f"address = '{cluster.address}'\n"
        f"authkey-file = '{cluster.key_file}'\n"
        "poll = 0.2\n"  # the master's only: ignored by the worker
        f"[work]\nroot = '{cluster.root}'\nprocesses = 2\n",
    )
    worker = resolved("work", "--config", config)
    assert worker.args.address == cluster.address
    assert (worker.args.root, worker.args.processes) == (str(cluster.root), 2)

    (cluster.root / "a.log").write_bytes(b"ERROR one\nfine\n")
    cluster.serve("--config", config)
    proc = Proc(["workers", "--config", config], cluster.tmp / "worker.log")
    cluster.procs.append(proc)
    wait_for(lambda: cluster.files().get("a.log", {}).get("status") == "done")
    entry = cluster.files()["a.log"]
    assert (entry["lines"], entry["error_lines"]) == (2, 1)
    assert proc.popen.poll() is None  # still working: not stopped by a configuration error


def test_run_once_from_a_file_alone_gives_the_summary_of_the_flags(tmp_path: Path) -> None:
    flags = ["--workers", "1", "--error-pattern", r"\bWARN", "--include", "*.log"]
    by_flags = logdispatch(
        "run", str(SAMPLES), "--once", "--state", str(tmp_path / "flags"), *flags
    )
    assert by_flags.returncode == 0, by_flags.stderr
    config = toml_file(
        tmp_path,
        f"[run]\nroot = '{SAMPLES}'\nonce = true\nstate = '{tmp_path / 'file'}'\nworkers = 1\n"
        "error-pattern = '\\bWARN'\ninclude = ['*.log']\n",
    )
    by_file = logdispatch("run", "--config", config)
    assert by_file.returncode == 0, by_file.stderr
    assert by_file.stdout == by_flags.stdout

    def summary(state: str) -> list[tuple[Any, ...]]:
        shown = logdispatch("summary", "--state", str(tmp_path / state), "--format", "json")
        files = json.loads(shown.stdout)["files"]
        return sorted((f["path"], f["status"], f["lines"], f["error_lines"]) for f in files)

    counted = summary("file")
    assert counted == summary("flags")
    assert {path for path, *_ in counted} == {p for p in _sample_paths() if p.endswith(".log")}
    assert sum(errors for *_, errors in counted) > 0  # the pattern matched some lines


def _sample_paths() -> set[str]:
    return set(json.loads((SAMPLES / "EXPECTED.json").read_text())["files"])


def test_every_log_line_names_its_component(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.log").write_bytes(b"ERROR x\n")
    result = logdispatch("run", str(root), "--once", "-vv", "--state", str(tmp_path / "s"))
    assert result.returncode == 0, result.stderr
    # run's own progress lines are its output, not log lines.
    lines = [line for line in result.stderr.splitlines() if not line.startswith("logdispatch run:")]
    pattern = re.compile(r"\S+ \S+ (logdispatch\.[a-z_.]+|watchdog\.[a-z.]+) [A-Z]+ ")
    assert [line for line in lines if not pattern.match(line)] == []
    named = {line.split()[2] for line in lines}
    assert {"logdispatch.dispatcher.transport.server", "logdispatch.workers.worker"} <= named
