"""`make demo`: what it installs, and the next steps it prints, typed as printed."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, wait_for

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make_dry_run(*args: str) -> list[str]:
    done = subprocess.run(
        ["make", "--no-print-directory", "-n", "-C", str(REPO), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.splitlines()


@needs_make
def test_the_demo_installs_what_running_needs_and_no_test_tools() -> None:
    recipe = "\n".join(make_dry_run("-B", "demo"))
    assert "pip install --quiet -e .\n" in recipe + "\n"  # the accelerators come with it
    assert "[test]" not in recipe
    assert "pytest" not in recipe


@needs_make
def test_the_tests_install_their_tools_on_top_of_the_demo() -> None:
    recipe = "\n".join(make_dry_run("-B", "test"))
    assert recipe.index("pip install --quiet -e .\n") < recipe.index("-e '.[test]'")


@needs_make
@pytest.mark.skipif(not (BIN / "logdispatch").exists(), reason="no logdispatch script here")
def test_the_next_steps_work_as_printed(tmp_path: Path) -> None:
    """The demo's own commands run in a copy of its folder, then each next step as printed."""
    shutil.copytree(REPO / "sample_logs", tmp_path / "sample_logs")
    (tmp_path / "scripts").symlink_to(REPO / "scripts")
    (tmp_path / ".venv").symlink_to(BIN.parent)
    # The recipe without the install it depends on (-o: taken as up to date).
    recipe = make_dry_run("-o", ".venv/.installed", "demo")
    assert recipe[0].startswith("rm -rf ")
    demo = subprocess.run(
        ["sh", "-ec", "\n".join(recipe)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    steps = [line.strip() for line in demo.stdout.splitlines() if line.startswith("  .venv/bin/")]
    key, serve, work, status = [line for line in demo.stdout.splitlines() if "demo.key" in line]
    assert steps[:2] == [
        ".venv/bin/logdispatch summary --state .logdispatch-demo",
        ".venv/bin/logdispatch report --state .logdispatch-demo --out report.html",
    ]
    assert "Next (or first . .venv/bin/activate, then each command without .venv/bin/):" in (
        demo.stdout
    )

    def typed(line: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", "-ec", line + "".join(f" {shlex.quote(a)}" for a in extra)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    summary = typed(steps[0])
    assert summary.returncode == 0, summary.stderr
    assert "10 done" in summary.stdout
    assert typed(steps[1]).returncode == 0
    assert "<html" in (tmp_path / "report.html").read_text()

    assert typed(key.strip()).returncode == 0
    assert (tmp_path / "demo.key").stat().st_mode & 0o077 == 0
    # Other ports than the printed ones: another test run on this machine may hold those.
    address, http = f"127.0.0.1:{free_port()}", free_port()
    serve_line = serve.strip().replace("--http :8080", f"--http :{http}")
    assert serve_line != serve.strip()
    processes = []
    try:
        for line in (f"{serve_line} --address {address}", f"{work.strip()} --address {address}"):
            processes.append(
                subprocess.Popen(
                    shlex.split(line),
                    cwd=tmp_path,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )

        def all_counted() -> bool:
            done = typed(".venv/bin/logdispatch summary --state .logdispatch-serve --format csv")
            return done.returncode == 0 and done.stdout.count(",done,") == 10

        wait_for(all_counted, timeout=60, interval=0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{http}/", timeout=10) as page:
            assert page.status == 200
        shown = typed(status.strip(), "--address", address)
        assert shown.returncode == 0, shown.stderr
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGINT)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert os.path.exists(tmp_path / ".logdispatch-serve")
