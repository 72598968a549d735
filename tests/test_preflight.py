"""`logdispatch config COMMAND ...` lists what would stop the command at start, and `serve`
refuses its ports and extras before it writes anything."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import AUTHKEY, free_port, logdispatch, port_in_use

from dispatcher import defaults


def key_file(folder: Path, mode: int = 0o600, text: str = AUTHKEY) -> str:
    path = folder / "key"
    path.write_text(text + "\n")
    path.chmod(mode)
    return str(path)


def without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`logdispatch ARGS` in an interpreter where ``module`` cannot be imported."""
    script = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from dispatcher.cli.main import main; sys.exit(main())"
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def serve_line(tmp_path: Path, *extra: str) -> list[str]:
    """A `serve` command line that would start, before ``extra``."""
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    return [
        "serve", str(root), "--authkey-file", key_file(tmp_path),
        "--address", f"127.0.0.1:{free_port()}", "--state", str(tmp_path / "state"), *extra,
    ]  # fmt: skip


def problems(*line: str) -> list[str]:
    shown = logdispatch("config", "--json", *line)
    document = json.loads(shown.stdout)
    assert document["ready"] is (shown.returncode == 0), shown.stderr
    assert shown.returncode in (0, 1), shown.stderr
    found: list[str] = document["problems"]
    return found


def test_a_command_that_would_start_is_ready(tmp_path: Path) -> None:
    line = serve_line(tmp_path, "--http", f":{free_port()}", "--metrics", f":{free_port()}")
    shown = logdispatch("config", *line, "--on-done", f"move:{tmp_path / 'archive'}")
    assert shown.returncode == 0, shown.stdout
    assert shown.stdout.splitlines()[-1] == "ready"
    assert not (tmp_path / "state").exists()  # looked at, not made
    assert not (tmp_path / "archive").exists()
    assert problems("run", str(tmp_path / "root"), "--state", str(tmp_path / "s")) == []
    assert problems("work", "--authkey-file", key_file(tmp_path), "--root", str(tmp_path)) == []


def test_every_problem_is_listed_not_only_the_first(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with port_in_use() as taken:
        shown = logdispatch(
            "config", "serve", str(tmp_path / "missing"),
            "--authkey-file", key_file(tmp_path, mode=0o644),
            "--address", f"127.0.0.1:{taken}", "--state", str(tmp_path / "file" / "state"),
        )  # fmt: skip
    assert shown.returncode == 1
    lines = shown.stdout.splitlines()
    start = lines.index("logdispatch serve would not start:")
    assert lines[start + 1 :] == [
        f"  - ROOT {tmp_path / 'missing'} does not exist",
        f"  - --state {tmp_path / 'file' / 'state'}: cannot create it: {tmp_path / 'file'} is "
        "not a directory",
        f"  - cannot listen on 127.0.0.1:{taken}: Address already in use",
    ]
    # A key others can read is used all the same, as serve does, with a warning.
    assert f"authkey file {tmp_path / 'key'} is readable by group or others" in shown.stderr
    assert shown.stderr.count("readable by group or others") == 1


def test_the_settings_the_command_would_refuse(tmp_path: Path) -> None:
    """What serve, run and work check of their settings at start, config finds too."""
    root = str(tmp_path)
    state = ("--state", str(tmp_path / "state"))
    key = key_file(tmp_path)
    serve = ("serve", root, *state, "--authkey-file", key, "--address", f":{free_port()}")
    assert problems(*serve, "--max-attempts", "0") == ["--max-attempts must be at least 1"]
    assert problems(*serve, "--error-pattern", "(")[0].startswith(
        "--error-pattern is not a valid regex: missing )"
    )
    assert problems(*serve, "--tls-cert", key) == [
        "--tls-cert, --tls-key and --tls-ca go together: give all three"
    ]
    assert problems("run", root, *state, "--workers", "0") == ["--workers must be at least 1"]
    assert problems("run", root, *state, "--on-done", "remove") == [
        "--on-done must be keep, delete or move:DIR, not 'remove'"
    ]  # said once, though two checks find it
    work = ("work", "--authkey-file", key)
    assert problems(*work, "--processes", "0") == ["--processes must be at least 1"]
    assert problems(*work, "--address", "nonsense") == ["--address 'nonsense' is not HOST:PORT"]
    assert problems(*work, "--root", "x" * 300) == [f"--root {'x' * 300} does not exist"]


def test_the_root_and_the_state(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    file = str(tmp_path / "file")
    assert problems("run", file, "--state", str(tmp_path / "s")) == [
        f"ROOT {file} is not a directory"
    ]
    assert problems("run", str(tmp_path), "--state", file) == [f"--state {file} is not a directory"]
    assert problems("run", "--state", str(tmp_path / "s")) == [
        "ROOT is required: give it on the command line or as root in --config"
    ]
    assert problems("work", "--authkey-file", key_file(tmp_path), "--root", file) == [
        f"--root {file} is not a directory"
    ]


def test_the_key(tmp_path: Path) -> None:
    root = str(tmp_path)
    state = ("--state", str(tmp_path / "state"), "--address", f":{free_port()}")
    missing = str(tmp_path / "nokey")
    assert problems("serve", root, *state, "--authkey-file", missing) == [
        f"cannot read authkey file {missing}: No such file or directory"
    ]
    empty = key_file(tmp_path, text="")
    assert problems("work", "--authkey-file", empty) == [f"authkey file {empty} is empty"]
    unset = logdispatch("config", "--json", "work", env={"LOGDISPATCH_AUTHKEY": ""})
    assert json.loads(unset.stdout)["problems"] == [  # an empty variable is as good as unset
        "an authkey is required: pass --authkey-file FILE or set $LOGDISPATCH_AUTHKEY"
    ]


def test_the_archive_of_on_done(tmp_path: Path) -> None:
    root = tmp_path / "root"
    inside = f"move:{root / 'done'}"
    line = serve_line(tmp_path)
    assert problems(*line, "--on-done", inside) == [
        f"--on-done move:{root / 'done'}: the folder is inside the watched root {root}, where "
        "what is moved would be counted again"
    ]
    (tmp_path / "file").write_text("")
    under_a_file = tmp_path / "file" / "done"
    assert problems(*line, "--on-done", f"move:{under_a_file}") == [
        f"--on-done move:{under_a_file}: cannot create it: {tmp_path / 'file'} is not a directory"
    ]
    assert problems(*line, "--on-done", "later") == [
        "--on-done must be keep, delete or move:DIR, not 'later'"
    ]


def test_the_ports_of_serve(tmp_path: Path) -> None:
    line = serve_line(tmp_path)
    with port_in_use() as taken:
        assert problems(*line, "--http", f":{taken}") == [
            f"cannot serve the report on 127.0.0.1:{taken}: Address already in use"
        ]
        assert problems(*line, "--metrics", f"127.0.0.1:{taken}") == [
            f"cannot serve metrics on 127.0.0.1:{taken}: Address already in use"
        ]
    port = free_port()
    assert problems(*line, "--http", f":{port}", "--metrics", f":{port}") == [
        f"cannot serve metrics on 127.0.0.1:{port}: Address already in use"
    ]
    assert problems(*line, "--http", "8080") == ["--http '8080' is not HOST:PORT"]


def test_the_extras_the_options_need(tmp_path: Path) -> None:
    line = serve_line(tmp_path, "--metrics", f":{free_port()}")
    shown = without("prometheus_client", "config", *line)
    assert shown.returncode == 1
    assert (
        "  - --metrics needs prometheus_client: pip install '.[metrics]' in a checkout, "
        "or 'FILE.whl[metrics]' for a wheel"
    ) in shown.stdout.splitlines()
    for command in ("run", str(tmp_path)), ("work", "--authkey-file", key_file(tmp_path)):
        shown = without("hyperscan", "config", *command, "--engine", "hyperscan")
        assert shown.returncode == 1
        assert "  - the hyperscan engine is not installed: pip install '.[fast]' in a " in (
            shown.stdout
        )


def test_a_command_that_only_reads_is_not_checked(tmp_path: Path) -> None:
    shown = logdispatch("config", "--json", "summary", "--state", str(tmp_path / "none"))
    assert shown.returncode == 0
    assert "problems" not in json.loads(shown.stdout)


# --- serve: refused before anything is written ----------------------------------------------


def refused_before_the_ledger(tmp_path: Path, shown: subprocess.CompletedProcess[str]) -> str:
    assert shown.returncode == 2, shown.stderr
    assert not (tmp_path / "state" / defaults.LEDGER_FILE).exists()
    return shown.stderr


def test_serve_with_its_report_port_in_use_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    for i in range(70):
        (tmp_path / "root" / f"{i}.log").write_text("a line\n")
    with port_in_use() as taken:
        shown = logdispatch(*serve_line(tmp_path, "--http", f":{taken}", "--settle", "0"))
    assert refused_before_the_ledger(tmp_path, shown) == (
        f"logdispatch serve: error: cannot serve the report on 127.0.0.1:{taken}: "
        "Address already in use\n"
    )


def test_serve_with_its_metrics_port_in_use_writes_nothing(tmp_path: Path) -> None:
    with port_in_use() as taken:
        shown = logdispatch(*serve_line(tmp_path, "--metrics", f":{taken}"))
    assert f"cannot serve metrics on 127.0.0.1:{taken}: Address already in use" in (
        refused_before_the_ledger(tmp_path, shown)
    )


def test_serve_metrics_without_prometheus_client_writes_nothing(tmp_path: Path) -> None:
    shown = without("prometheus_client", *serve_line(tmp_path, "--metrics", f":{free_port()}"))
    assert "--metrics needs prometheus_client: pip install '.[metrics]'" in (
        refused_before_the_ledger(tmp_path, shown)
    )


def test_a_root_that_cannot_be_looked_at_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    long = str(tmp_path / ("x" * 300))  # ENAMETOOLONG, which pathlib raises
    key = key_file(tmp_path)
    served = logdispatch(
        "serve", long, "--authkey-file", key, "--state", str(tmp_path / "s"),
        "--address", f":{free_port()}",
    )  # fmt: skip
    assert served.returncode == 2, served.stderr
    assert served.stderr == f"logdispatch serve: error: root {long} is not a directory\n"
    assert problems("serve", long, "--authkey-file", key, "--state", str(tmp_path / "s")) == [
        f"ROOT {long} does not exist"
    ]
