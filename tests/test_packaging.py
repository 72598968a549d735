"""The wheel a user builds from the tracked files: its packages, its templates, no warnings."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = {"bars.svg.j2", "report.css", "report.html.j2", "series.svg.j2"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel built from a copy of the tracked files, and the build's output."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    source = tmp_path_factory.mktemp("source")
    for name in filter(None, tracked.split("\0")):
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    out = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", ".", "--no-deps", "-w", out],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    [built] = out.glob("logdispatch-*.whl")
    return built, build.stdout + build.stderr


def test_the_build_warns_of_nothing_left_out(wheel: tuple[Path, str]) -> None:
    _, output = wheel
    assert "absent from the `packages` configuration" not in output
    assert "SetuptoolsDeprecationWarning" not in output


def test_the_wheel_holds_every_package_and_the_templates(wheel: tuple[Path, str]) -> None:
    built, _ = wheel
    names = set(zipfile.ZipFile(built).namelist())
    shipped = {n.rpartition("/")[2] for n in names if n.startswith("dispatcher/views/templates/")}
    assert shipped == TEMPLATES
    for package in REPO.glob("*/**/__init__.py"):
        relative = package.relative_to(REPO).as_posix()
        if relative.startswith(("dispatcher/", "workers/")):
            assert relative in names
    assert not any(n.startswith(("tests/", "benchmarks/", "scripts/")) for n in names)


def test_the_installed_wheel_renders_the_report(wheel: tuple[Path, str], tmp_path: Path) -> None:
    """Unpacked as pip installs it, away from the checkout: the templates load from there."""
    built, _ = wheel
    site = tmp_path / "site"
    zipfile.ZipFile(built).extractall(site)
    script = (
        "import dispatcher, sys\n"
        "from dispatcher.views import charts\n"
        "print(dispatcher.__file__)\n"
        "for name in sys.argv[1:]:\n"
        "    charts.environment().get_template(name)\n"
    )
    # -I: neither the working directory nor PYTHONPATH; the unpacked wheel comes first.
    run = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(site)!r})\n{script}",
            *sorted(TEMPLATES - {"report.css"}),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == str(site / "dispatcher" / "__init__.py")


def test_a_plain_install_brings_the_accelerators_where_they_have_wheels(
    wheel: tuple[Path, str],
) -> None:
    """`pip install .` is the fast install on the platforms the accelerators have wheels for,
    and the standard library's engine elsewhere: no extra to know of."""
    from packaging.requirements import Requirement

    built, _ = wheel
    with zipfile.ZipFile(built) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        lines = archive.read(metadata).decode().splitlines()
    required = [
        Requirement(line.split(":", 1)[1]) for line in lines if line.startswith("Requires-Dist:")
    ]
    plain = {r.name: r.marker for r in required if r.marker is None or "extra" not in str(r.marker)}
    for name in ("hyperscan", "stringzilla"):
        marker = plain[name]
        assert marker is not None
        for machine in ("x86_64", "AMD64", "arm64"):
            for version in ("3.11", "3.14"):
                assert marker.evaluate({"platform_machine": machine, "python_version": version})
        for machine in ("x86", "armv7l", "ppc64le", "s390x"):
            assert not marker.evaluate({"platform_machine": machine, "python_version": "3.12"})
    aarch64 = {"platform_machine": "aarch64"}
    assert plain["hyperscan"].evaluate({**aarch64, "python_version": "3.13"})  # type: ignore[union-attr]
    assert not plain["hyperscan"].evaluate({**aarch64, "python_version": "3.14"})  # type: ignore[union-attr]
