"""Shared fixtures: real master and worker processes on loopback, and a guard against leaks."""

from __future__ import annotations

import bz2
import contextlib
import gzip
import lzma
import os
import pickle
import queue
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

from dispatcher.transport.server import ManagerServer, ResultSink
from dispatcher.transport.taskqueue import TaskQueue
from dispatcher.versions import OpenVersion, Rules, Version
from dispatcher.views import summary
from workers.protocol import DispatchManager

AUTHKEY = secrets.token_hex(16)
# `logdispatch` as the console script runs it, whichever environment the tests run in.
LOGDISPATCH = [
    sys.executable,
    "-c",
    "import sys; from dispatcher.cli.main import main; sys.exit(main())",
]
# The header row of `logdispatch count`'s table, as split into words.
COUNT_HEADER = ["lines", "error_lines", "path"]


def logdispatch(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `logdispatch ARGS` to its end; ``env`` is added to this process's environment."""
    return subprocess.run(
        [*LOGDISPATCH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, **(env or {})},
    )


def write_log(path: Path, megabytes: int, lines_per_error: int = 1000) -> tuple[int, int]:
    """Write a log of about ``megabytes`` MB; returns its (lines, error lines) by construction.

    The error lines (``ERROR 500 upstream``) match the default pattern and ``ERROR\\s+\\d+``.
    """
    block = b"2026-11-27 10:00:00 INFO request served in 12ms\n" * (lines_per_error - 1)
    block += b"ERROR 500 upstream\n"
    repeats = megabytes * 1024 * 1024 // len(block)
    with open(path, "wb") as f:
        for _ in range(repeats):
            f.write(block)
    return repeats * lines_per_error, repeats


BOMB_PIECE = 8 * 1024 * 1024
_COMPRESS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
    "zstd": zstd.compress,
}


def write_bomb(path: Path, compression: str, expands_to: int) -> int:
    """A decompression bomb: ``expands_to`` bytes of zeros (a multiple of 8 MiB) as concatenated
    ``compression`` streams, which every decompressor reads on as one; returns its size."""
    piece = _COMPRESS[compression](bytes(BOMB_PIECE))
    with open(path, "wb") as f:
        for _ in range(expands_to // BOMB_PIECE):
            f.write(piece)
    return path.stat().st_size


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {predicate}")
        time.sleep(interval)


def as_unprivileged(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child that dropped root, so file permissions apply; return its value.

    Tests run as root in CI, where mode 000 would not stop a read.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery from here on
        os.close(read_end)
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            payload = pickle.dumps(("ok", fn()))
        except BaseException as e:
            payload = pickle.dumps(("raised", repr(e)))
        os.write(write_end, payload)
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        kind, value = pickle.loads(f.read())
    os.waitpid(pid, 0)
    assert kind == "ok", value
    return value


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A folder any user can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="logdispatch-test-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def port_in_use() -> Iterator[int]:
    """A loopback port held by a listening socket for the duration of the block."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def child_pids(parent: int | None = None, cmdline_has: bytes = b"") -> set[int]:
    """Live (not zombie) children of ``parent`` (default: this process)."""
    parent_text = str(os.getpid() if parent is None else parent)
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # gone meanwhile
        if fields[1] == parent_text and fields[0] != "Z" and cmdline_has in cmdline:
            pids.add(int(entry))
    return pids


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """No child process or thread started by a test outlives it."""
    threads_before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 10
    while True:
        children = child_pids()
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        if not children and not threads:
            return
        if time.monotonic() > deadline:
            for pid in children:
                os.kill(pid, signal.SIGKILL)
            pytest.fail(f"leaked children {children} or threads {[t.name for t in threads]}")
        time.sleep(0.05)


class Proc:
    """A logdispatch process whose output goes to a file the test can read."""

    def __init__(
        self,
        args: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        launcher: Sequence[str] = (),
    ) -> None:
        """Run ``python -m ARGS``, behind ``launcher`` (say, a command entering a namespace)."""
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            [*launcher, sys.executable, "-m", *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = 20) -> int:
        try:
            return self.popen.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> int | None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._log.close()
        return self.popen.returncode


class Cluster:
    """Starts `serve` and `work` processes for one test and stops them all afterwards."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.root = tmp_path / "root"
        self.root.mkdir()
        self.state = tmp_path / "state"
        self.key_file = tmp_path / "key"
        self.key_file.write_text(AUTHKEY + "\n")
        self.key_file.chmod(0o600)
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[Proc] = []
        self.master: Proc | None = None

    def serve(self, *extra: str) -> Proc:
        args = ["dispatcher", str(self.root), "--address", self.address]
        args += ["--authkey-file", str(self.key_file), "--state", str(self.state)]
        args += ["--settle", "0.5", *extra]
        self.master = self._start(args, "master")
        wait_for(lambda: "serving on" in self.master.output if self.master else False)
        return self.master

    def serve_refused(self, *extra: str) -> subprocess.CompletedProcess[str]:
        """``serve`` with ``extra`` to its end, for a start that is refused: nothing written."""
        done = logdispatch(
            "serve", str(self.root), "--address", self.address,
            "--authkey-file", str(self.key_file), "--state", str(self.state), *extra,
        )  # fmt: skip
        assert not (self.state / "ledger.sqlite3").exists()
        return done

    def work(self, *extra: str, key_file: Path | None = None) -> Proc:
        args = ["workers", "--address", self.address]
        args += ["--authkey-file", str(key_file or self.key_file), *extra]
        return self._start(args, f"worker{len(self.procs)}")

    def _start(self, args: list[str], name: str) -> Proc:
        proc = Proc(args, self.tmp / f"{name}.log")
        self.procs.append(proc)
        return proc

    def summary(self) -> dict[str, Any]:
        if not (self.state / "ledger.sqlite3").exists():
            return {"totals": {}, "files": []}
        return summary.build(self.state)

    def versions(self) -> dict[bytes, list[str]]:
        """Every version the ledger holds, as statuses per path, oldest first."""
        found: dict[bytes, list[str]] = {}
        if not (self.state / "ledger.sqlite3").exists():
            return found
        with sqlite3.connect(self.state / "ledger.sqlite3") as db:
            for path, status in db.execute("SELECT path, status FROM versions ORDER BY id"):
                found.setdefault(bytes(path), []).append(status)
        return found

    def files(self) -> dict[str, dict[str, Any]]:
        return {entry["path"]: entry for entry in self.summary()["files"]}

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


@contextlib.contextmanager
def manager_server(key: bytes, login_timeout: float, *queued: Version) -> Iterator[ManagerServer]:
    """A real manager server on loopback, serving a task queue that holds ``queued``."""
    versions = open_versions(*queued)
    tasks = TaskQueue(b"/srv/logs", Rules(b"ERROR"), versions.get, secret=b"k" * 32)
    tasks.put_many(list(versions))
    srv = ManagerServer(
        ("127.0.0.1", 0), key, tasks, ResultSink(queue.SimpleQueue()), login_timeout
    )
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


def open_versions(*versions: Version) -> dict[int, OpenVersion]:
    """Versions as the master's registry holds them, for a task queue without a master."""
    return {v.id: OpenVersion(v) for v in versions}


def task_queue_of(srv: ManagerServer, key: bytes) -> Any:
    """A client's proxy of the task queue ``srv`` serves."""
    manager = DispatchManager(address=srv.address, authkey=key)
    manager.connect()
    return manager.get_task_queue()  # type: ignore[attr-defined]
