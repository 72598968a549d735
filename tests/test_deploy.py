"""deploy/: the systemd units run valid command lines on their example configuration files,
and systemd accepts them."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dispatcher.cli.main import all_commands
from workers.config import REQUIRED, Source, resolve

DEPLOY = Path(__file__).parent.parent / "deploy"


def unit(name: str) -> dict[str, list[str]]:
    """The ``key=value`` lines of a unit file, values by key, in order."""
    found: dict[str, list[str]] = {}
    for line in (DEPLOY / name).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@pytest.mark.parametrize(
    ("unit_name", "command", "example"),
    [
        ("logdispatch-master.service", "serve", "master.toml"),
        ("logdispatch-worker@.service", "work", "worker.toml"),
    ],
)
def test_the_units_run_valid_command_lines_on_their_example_files(
    unit_name: str, command: str, example: str
) -> None:
    """Each ExecStart is a command line the real parser takes, with its example file in place
    of /etc/logdispatch/, and every value of that file reaches the command as written."""
    (exec_start,) = unit(unit_name)["ExecStart"]
    program, name, *argv = shlex.split(exec_start)
    assert (Path(program).name, name) == ("logdispatch", command)
    assert argv == ["--config", f"/etc/logdispatch/{example}"]
    example_path = str(DEPLOY / example)
    commands = all_commands()
    result = resolve(command, commands[command], ["--config", example_path], lambda: commands, {})

    written = tomllib.loads((DEPLOY / example).read_text())
    assert written, "the example sets nothing"
    by_key = {option.key: option for option in result.options}
    for key, value in written.items():
        option = by_key[key]
        assert result.sources[option.dest] == Source("file", example_path), key
        got = getattr(result.args, option.dest)
        assert got == (value if not isinstance(got, Path) else Path(value)), key
    assert result.args.authkey_file == "/etc/logdispatch/key"
    assert result.args.root not in (None, REQUIRED)


def test_the_master_keeps_its_ledger_in_the_units_state_directory() -> None:
    master = unit("logdispatch-master.service")
    state = tomllib.loads((DEPLOY / "master.toml").read_text())["state"]
    assert state == "/var/lib/" + master["StateDirectory"][0]


@pytest.mark.parametrize("name", ["logdispatch-master.service", "logdispatch-worker@.service"])
def test_the_units_stop_warmly_and_restart_on_failure(name: str) -> None:
    settings = unit(name)
    for key, value in {
        "KillSignal": "SIGTERM",
        # SIGTERM to the main process only: a worker passes it on to its processes, and a
        # second SIGTERM would be a cold stop for them.
        "KillMode": "mixed",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "User": "logdispatch",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
    }.items():
        assert settings[key] == [value], key
    assert "network-online.target" in settings["After"][0]
    assert "remote-fs.target" in settings["After"][0]
    assert int(settings["TimeoutStopSec"][0]) >= 30


@pytest.mark.parametrize("name", ["logdispatch-master.service", "logdispatch-worker@.service"])
def test_the_units_allow_enough_open_files(name: str) -> None:
    """The usual soft limit (1,024) is far too few for a master serving many connections."""
    (limit,) = unit(name)["LimitNOFILE"]
    assert int(limit) >= 65536


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    """systemd-analyze verify, with the program path pointed at a real executable (it checks)."""
    program = tmp_path / "logdispatch"
    program.write_text(f"#!{sys.executable}\n")
    program.chmod(0o755)
    for source in DEPLOY.glob("*.service"):
        text = source.read_text().replace("/opt/logdispatch/bin/logdispatch", str(program))
        assert str(program) in text
        (tmp_path / source.name).write_text(text)
        (tmp_path / source.name.replace("@.", "@1.")).write_text(text)
    units = sorted(str(p) for p in tmp_path.glob("*.service"))
    assert len(units) == 3  # the master, the worker template, one worker instance
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
