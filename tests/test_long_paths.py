"""Files whose path is longer than PATH_MAX (4096 bytes) are counted, moved and deleted.

Such a path cannot be named whole to the kernel: the scan, the master's stat, the worker's open
and --on-done all go folder by folder. A real tree, `run --once`, a real ledger.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_on_done import _run_once, _summary

from dispatcher.watch.walk import lstat_under

FOLDERS = [b"%02d-" % i + b"d" * 197 for i in range(30)]  # 30 names of 200 bytes
DEEP = b"/".join([*FOLDERS, b"deep.log"])
DATA = b"ERROR one\nfine\nFATAL two\nno newline at the end"
MTIME_NS = 1_600_000_000_123_456_789


@contextmanager
def _folder(top: Path, parts: list[bytes], create: bool = False) -> Iterator[int]:
    """A descriptor of top/parts..., opened name by name (the whole path is too long)."""
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts:
            if create:
                os.mkdir(part, dir_fd=fd)
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _read_deep(top: Path) -> bytes | None:
    try:
        with _folder(top, FOLDERS) as fd:
            file = os.open(b"deep.log", os.O_RDONLY, dir_fd=fd)
    except FileNotFoundError:
        return None
    with open(file, "rb") as f:
        return f.read()


@pytest.fixture
def deep_root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    with _folder(root, FOLDERS, create=True) as fd:
        file = os.open(b"deep.log", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        with open(file, "wb") as f:
            f.write(DATA)
        os.utime(b"deep.log", ns=(MTIME_NS, MTIME_NS), dir_fd=fd)
    (root / "short.log").write_bytes(b"ERROR short\n")
    os.utime(root / "short.log", ns=(MTIME_NS, MTIME_NS))
    assert len(os.path.join(os.fsencode(root), DEEP)) > 4096 + 2000
    return root


@pytest.mark.parametrize("on_done", ["keep", "delete", "move"])
def test_a_path_longer_than_path_max_is_counted_and_disposed_of(
    deep_root: Path, tmp_path: Path, on_done: str
) -> None:
    state, archive = tmp_path / "state", tmp_path / "archive"
    setting = f"move:{archive}" if on_done == "move" else on_done
    run = _run_once(deep_root, state, "--on-done", setting)
    assert run.returncode == 0, run.stderr
    files = _summary(state)
    assert len(files) == 2, "the file deep down was not counted"
    deep = files[DEEP.decode()]
    assert (deep["status"], deep["lines"], deep["error_lines"], deep["bytes"]) == (
        "done",
        4,
        2,
        len(DATA),
    )
    assert (files["short.log"]["lines"], files["short.log"]["error_lines"]) == (1, 1)
    if on_done == "keep":
        assert deep["on_done"] is None
        assert _read_deep(deep_root) == DATA
    elif on_done == "delete":
        assert deep["on_done"] == "deleted"
        assert _read_deep(deep_root) is None
        assert not (deep_root / "short.log").exists()
    else:
        assert deep["on_done"] == f"moved to {archive}/{DEEP.decode()}"
        assert _read_deep(deep_root) is None
        assert _read_deep(archive) == DATA
        assert (archive / "short.log").read_bytes() == b"ERROR short\n"

    again = _run_once(deep_root, state)  # known now (or gone): nothing new is recorded
    assert again.returncode == 0, again.stderr
    assert _summary(state) == files


def test_the_master_stats_a_path_longer_than_path_max(deep_root: Path) -> None:
    """What the master uses to look at a file an event or a worker named."""
    with _folder(deep_root, FOLDERS) as fd:
        expected = os.lstat(b"deep.log", dir_fd=fd)
    with pytest.raises(OSError, match="File name too long"):
        os.lstat(os.path.join(os.fsencode(deep_root), DEEP))
    found = lstat_under(os.fsencode(deep_root), DEEP)
    assert (found.st_ino, found.st_size, found.st_mtime_ns) == (
        expected.st_ino,
        len(DATA),
        MTIME_NS,
    )
