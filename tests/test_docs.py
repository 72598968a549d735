"""The README and docs/ against the program: their runnable examples run, their links resolve.

A fenced block whose info string is `sh runnable` is one a reader would copy and can run on one
machine without root, network or systemd. Lines starting with `$ ` are commands (a trailing
backslash continues one) and the other lines the output the page shows; a block without any
`$ ` line is all commands. The runnable blocks of one page run in order, as one shell script,
in a temporary folder holding a copy of sample_logs/ and the files the page writes in blocks
marked `file=NAME` (```` ```toml file=logdispatch.toml ````); `logdispatch` is this
environment's console script, and the example port 50000 a free one.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import free_port

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 300
EXAMPLE_ADDRESS = "127.0.0.1:50000"
# The pages that must keep runnable examples: losing the marker would silently test nothing.
PAGES_WITH_EXAMPLES = {"README.md", "commands.md"}
PAGE_TIMEOUT = 60

FENCE = re.compile(r"^(\s*)```(.*)$")
# `logdispatch` as a command word, not in `logdispatch.toml`, `.logdispatch-demo` or a path.
COMMAND_WORD = re.compile(r"(?<![\w./-])logdispatch(?![\w.-])")
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Lines of a table's frame: not text a reader compares.
FRAME = set("─━┏┳┓┃┡╇┩│└┴┘┌┬┐├┼┤ ")


@dataclass
class Block:
    info: str
    lines: list[str]
    commands: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)


def fenced_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    current: Block | None = None
    indent = ""
    for line in text.splitlines():
        fence = FENCE.match(line)
        if current is None:
            if fence:
                indent, current = fence.group(1), Block(fence.group(2).strip(), [])
        elif fence and not fence.group(2).strip():
            blocks.append(current)
            current = None
        else:
            current.lines.append(line.removeprefix(indent))
    return blocks


def runnable(block: Block) -> Block:
    if not any(line.startswith("$ ") for line in block.lines):
        block.commands = list(block.lines)
        return block
    continued = False
    for line in block.lines:
        if line.startswith("$ ") or continued:
            block.commands.append(line.removeprefix("$ "))
            continued = line.endswith("\\")
        else:
            block.shown.append(line)
    return block


def normal(line: str) -> str:
    return " ".join(line.split())


def compared(line: str) -> bool:
    return normal(line) not in ("", "...") and not set(line) <= FRAME


def examples(page: Path) -> tuple[list[Block], dict[str, str]]:
    blocks = fenced_blocks(page.read_text())
    files = {}
    for block in blocks:
        for word in block.info.split()[1:]:
            if word.startswith("file="):
                files[word.removeprefix("file=")] = "\n".join(block.lines) + "\n"
    return [runnable(b) for b in blocks if b.info.split()[1:2] == ["runnable"]], files


def pages_with_examples() -> list[Path]:
    return [page for page in PAGES if examples(page)[0]]


def test_the_pages_that_should_have_runnable_examples_have_them() -> None:
    assert {page.name for page in pages_with_examples()} >= PAGES_WITH_EXAMPLES


@pytest.mark.parametrize("page", pages_with_examples(), ids=lambda page: page.name)
def test_runnable_examples_run_and_print_what_the_page_shows(page: Path, tmp_path: Path) -> None:
    entry = Path(sys.executable).parent / "logdispatch"
    assert entry.exists(), f"{entry} is missing: install the project (make demo) first"
    blocks, files = examples(page)
    shutil.copytree(REPO / "sample_logs", tmp_path / "sample_logs")
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    address = f"127.0.0.1:{free_port()}"
    script = ["set -e"]
    for number, block in enumerate(blocks):
        script.append(f"echo '@@block {number}@@'")
        for command in block.commands:
            command = command.replace(".venv/bin/logdispatch", str(entry))
            command = command.replace(".venv/bin/python", sys.executable)
            command = COMMAND_WORD.sub(str(entry), command)
            script.append(command.replace(EXAMPLE_ADDRESS, address))
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    env.pop("LOGDISPATCH_CONFIG", None)
    process = subprocess.Popen(
        ["bash", "-c", "\n".join(script)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the page's background commands go with it
    )
    try:
        out, err = process.communicate(timeout=PAGE_TIMEOUT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, f"{page.name}: exit {process.returncode}\n{out}\n{err}"
    printed = re.split(r"^@@block \d+@@$", out, flags=re.M)[1:]
    assert len(printed) == len(blocks), out
    for block, output in zip(blocks, printed, strict=True):
        lines = {normal(line) for line in output.splitlines()}
        missing = [line for line in block.shown if compared(line) and normal(line) not in lines]
        assert not missing, f"{page.name}: shown but not printed: {missing}\nprinted:\n{output}"


def test_the_readme_reads_in_five_minutes() -> None:
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines, at most {README_MAX_LINES}"


def anchors(page: Path) -> set[str]:
    """GitHub's ids of a page's headings."""
    text = page.read_text()
    for block in fenced_blocks(text):  # a `#` comment in a block is no heading
        text = text.replace("\n".join(block.lines), "")
    found = set()
    for line in text.splitlines():
        if heading := re.match(r"^#{1,6}\s+(.*)$", line):
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            found.add(slug.replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_relative_link_points_to_what_exists(page: Path) -> None:
    text = page.read_text()
    for block in fenced_blocks(text):
        text = text.replace("\n".join(block.lines), "")
    broken = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{page.name}: {broken}"
