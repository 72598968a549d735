"""Decompression bombs: refused past --max-expanded, and never holding back other files' results."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    AUTHKEY,
    COUNT_HEADER,
    LOGDISPATCH,
    Cluster,
    logdispatch,
    open_versions,
    wait_for,
    write_bomb,
    write_log,
)

from dispatcher.cli.main import all_commands
from dispatcher.transport.taskqueue import TaskQueue
from dispatcher.versions import Rules, Version
from workers.config import resolve
from workers.errors import ConfigError
from workers.worker import Worker, WorkerConfig

MiB = 1024 * 1024
GiB = 1024 * MiB
REFUSED = "data expands past {} (--max-expanded): refused as a decompression bomb"


def _old(path: Path) -> None:
    """An mtime far enough in the past that the file counts as settled at once."""
    past = time.time() - 3600
    os.utime(path, (past, past))


def _ledger(state: Path) -> dict[str, tuple[str, str | None, int]]:
    """(status, error, attempts) of every version the ledger holds, by path."""
    db = state / "ledger.sqlite3"
    if not db.exists():
        return {}
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        try:
            rows = conn.execute("SELECT path, status, error, attempts FROM versions").fetchall()
        except sqlite3.OperationalError:  # created, not yet given its tables
            return {}
    return {
        bytes(path).decode(): (status, error, attempts) for path, status, error, attempts in rows
    }


def test_count_refuses_a_bomb_with_its_reason_and_counts_the_other_files(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.bz2"
    write_bomb(bomb, "bzip2", 1 * GiB)  # 6 kB
    small = tmp_path / "small.log.gz"
    small.write_bytes(gzip.compress(b"ERROR one\nfine\n"))
    reason = "bzip2 " + REFUSED.format("64 MiB")

    text = logdispatch("count", "--max-expanded", "64M", str(bomb), str(small))
    assert text.returncode == 1
    assert text.stderr == f"logdispatch count: {bomb}: {reason}\n"
    assert text.stdout.split() == [*COUNT_HEADER, "2", "1", str(small), "2", "1", "total"]

    # The same bound from a variable and from a configuration file.
    config = tmp_path / "logdispatch.toml"
    config.write_text("[count]\nmax-expanded = '64M'\n")
    for env in ({"LOGDISPATCH_MAX_EXPANDED": "64M"}, {"LOGDISPATCH_CONFIG": str(config)}):
        shown = logdispatch("count", "--json", str(bomb), str(small), env=env)
        assert shown.returncode == 1, env
        document = json.loads(shown.stdout)
        assert document["files"][0] == {"path": str(bomb), "error": reason}
        assert document["totals"] == {
            "files": 1,
            "failed": 1,
            "lines": 2,
            "error_lines": 1,
            "counts": {},
        }


def test_a_bomb_among_small_files_holds_back_none_of_their_results(tmp_path: Path) -> None:
    """One worker takes the small files and the bomb in one batch, the bomb last: the small
    files' results are in the ledger while the bomb is still being decompressed, and the bomb
    ends failed with its reason."""
    root = tmp_path / "root"
    (root / "z").mkdir(parents=True)
    small = [root / f"app-{i:02d}.log" for i in range(39)]
    for path in small:
        path.write_bytes(b"ERROR one\nfine\n")
        _old(path)
    # Scanned after the files of the root (a folder's files come before its subfolders'); a
    # name without a suffix: only its first bytes say it is compressed.
    bomb = root / "z" / "bomb"
    write_bomb(bomb, "bzip2", 4 * GiB)
    _old(bomb)
    state = tmp_path / "state"
    args = ["run", str(root), "--once", "--workers", "1", "--state", str(state)]
    args += ["--max-attempts", "1", "--max-expanded", "1G", "-q"]
    with open(tmp_path / "run.log", "wb") as output:
        run = subprocess.Popen([*LOGDISPATCH, *args], stdout=output, stderr=subprocess.STDOUT)
    try:

        def small_done() -> dict[str, tuple[str, str | None, int]] | None:
            versions = _ledger(state)
            done = [versions.get(p.name, ("",))[0] == "done" for p in small]
            return versions if all(done) else None

        versions = wait_for(small_done, timeout=60, interval=0.02)
        assert versions.get("z/bomb", ("leased",))[0] == "leased", versions.get("z/bomb")
        assert run.wait(120) == 1, (tmp_path / "run.log").read_text()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    status, error, attempts = _ledger(state)["z/bomb"]
    assert (status, error, attempts) == ("failed", "bzip2 " + REFUSED.format("1 GiB"), 1)


def test_results_go_before_a_big_plain_file_of_the_same_batch(cluster: Cluster) -> None:
    """A batch budget large enough for a big file after small ones (a worker of this library
    with its own budget): their results do not wait for it either."""
    small = [cluster.root / f"app-{i}.log" for i in range(5)]
    for path in small:
        path.write_bytes(b"ERROR 1 one\nfine\n")
        _old(path)
    (cluster.root / "z").mkdir()
    write_log(cluster.root / "z" / "big.log", 40)
    _old(cluster.root / "z" / "big.log")
    cluster.serve("--error-pattern", r".*ERROR\s+\d+")  # a general regex: slow on purpose
    root = os.fsencode(cluster.root)
    config = WorkerConfig(("127.0.0.1", cluster.port), AUTHKEY.encode(), root, batch_bytes=GiB)
    worker = Worker(config)
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    thread.start()
    try:

        def small_done() -> dict[str, tuple[str, str | None, int]] | None:
            versions = _ledger(cluster.state)
            done = [versions.get(p.name, ("",))[0] == "done" for p in small]
            return versions if all(done) else None

        versions = wait_for(small_done, timeout=30, interval=0.02)
        assert versions["z/big.log"][0] == "leased"
        wait_for(lambda: _ledger(cluster.state)["z/big.log"][0] == "done", timeout=60)
    finally:
        worker.stop()
        thread.join(30)


def test_workers_retry_a_bomb_then_fail_it_and_count_the_rest_exactly(cluster: Cluster) -> None:
    log = b"2026-11-27 10:00:00 INFO served\n" * 999 + b"2026-11-27 10:00:01 ERROR upstream\n"
    (cluster.root / "app.log.gz").write_bytes(gzip.compress(log * 300))
    write_bomb(cluster.root / "bomb.log.gz", "gzip", 1 * GiB)
    cluster.serve("--max-attempts", "2")
    cluster.work("--max-expanded", "256M")
    wait_for(lambda: cluster.files().get("bomb.log.gz", {}).get("status") == "failed", timeout=60)
    files = cluster.files()
    assert (files["app.log.gz"]["lines"], files["app.log.gz"]["error_lines"]) == (300_000, 300)
    assert files["bomb.log.gz"]["error"] == "gzip " + REFUSED.format("256 MiB")
    assert files["bomb.log.gz"]["attempts"] == 2


def test_max_expanded_comes_from_flags_variables_and_files_like_its_siblings(
    tmp_path: Path,
) -> None:
    commands = all_commands()
    config = tmp_path / "logdispatch.toml"
    config.write_text("max-expanded = '10G'\n[run]\nmax-expanded = 500_000_000\n")
    for command, argv in (("count", ["a.log"]), ("run", [str(tmp_path)]), ("work", [])):
        parser = commands[command]
        default = resolve(command, parser, argv, lambda: commands, {}).args.max_expanded
        assert default == 64 * GiB
        env = {"LOGDISPATCH_MAX_EXPANDED": "1.5G"}
        from_env = resolve(command, parser, argv, lambda: commands, env).args.max_expanded
        assert from_env == 1536 * MiB
        with_file = [*argv, "--config", str(config)]
        from_file = resolve(command, parser, with_file, lambda: commands, {}).args.max_expanded
        assert from_file == (500_000_000 if command == "run" else 10 * GiB)
        flag = [*with_file, "--max-expanded", "2M"]
        assert resolve(command, parser, flag, lambda: commands, env).args.max_expanded == 2 * MiB
    config.write_text("max-expanded = 'lots'\n")
    with pytest.raises(ConfigError, match=r"max-expanded: invalid size value: 'lots'"):
        resolve("work", commands["work"], ["--config", str(config)], lambda: commands, {})


def test_a_compressed_file_weighs_more_than_its_size_in_a_batch() -> None:
    versions = open_versions(
        *[Version(i, f"{i}.log".encode(), size=100_000, mtime_ns=1) for i in range(10)],
        *[Version(i, f"{i}.log.GZ".encode(), size=100_000, mtime_ns=1) for i in range(10, 20)],
        Version(20, b"last.log.bz2", size=100, mtime_ns=1),
    )
    queue = TaskQueue(b"/r", Rules(b"ERROR"), versions.get, secret=b"k" * 32)
    queue.put_many(list(versions))
    assert len(queue.take("w", 100, 2 * MiB, 0)) == 10  # the plain files: 1 MB in all
    assert [t.id for t in queue.take("w", 100, 2 * MiB, 0)] == [10]  # 3.2 MB of work alone
    assert [t.id for t in queue.take("w", 100, 2 * MiB, 0)] == [11]
