"""The ledger as the operator meets it: read by another user or from a read-only mount, while
the master runs and after it stopped; damaged, on a full disk, or taken by a second master.

Every ledger here is written by a real master run; every command runs as a subprocess.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import AUTHKEY, LOGDISPATCH, Cluster, Proc, free_port, logdispatch, wait_for

NOBODY = 65534
LINES = 3  # of every file written here, one of them an error line
CONTENT = b"INFO a\nERROR b\nINFO c\n"


def write_files(root: Path, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        (root / f"f{i:04d}.log").write_bytes(CONTENT)


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """`logdispatch ARGS` run by an unprivileged user."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("running a command as another user needs root and setpriv")
    setpriv = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    return subprocess.run(
        [*setpriv, *LOGDISPATCH, *args], capture_output=True, text=True, timeout=60, check=False
    )


def done_files(
    state: Path, run: Callable[..., subprocess.CompletedProcess[str]] = logdispatch
) -> dict[str, dict[str, object]]:
    """The files `summary --format json` reports done, by path; fails on any error."""
    shown = run("summary", "--state", str(state), "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    return {f["path"]: f for f in json.loads(shown.stdout)["files"] if f["status"] == "done"}


def one_error_line(stderr: str, command: str) -> str:
    """The single line a failing command printed, checked to be the project's own."""
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"logdispatch {command}: error: "), stderr
    return lines[0]


def readable_by_all(state: Path) -> None:
    """The state directory readable by anyone, writable by its owner only."""
    state.chmod(0o755)
    for entry in state.iterdir():
        entry.chmod(0o644)


def check_readers(
    state: Path, out_dir: Path, count: int, run: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    """`summary` and `report --out` work through ``run`` and show ``count`` files done."""
    files = done_files(state, run)
    assert len(files) == count
    assert all(f["lines"] == LINES and f["error_lines"] == 1 for f in files.values())
    page = out_dir / "report.html"
    page.unlink(missing_ok=True)
    made = run("report", "--state", str(state), "--out", str(page))
    assert made.returncode == 0, made.stderr
    assert made.stderr == ""
    assert f"{count}" in page.read_text()


# --- readers without write access -------------------------------------------------------------


@pytest.fixture
def public_cluster(public_dir: Path) -> Iterator[Cluster]:
    """A cluster whose state directory another user can reach."""
    c = Cluster(public_dir)
    try:
        yield c
    finally:
        c.stop()


def test_another_user_reads_the_ledger_while_the_master_runs_and_after_it_stopped(
    public_cluster: Cluster, public_dir: Path
) -> None:
    c = public_cluster
    out = public_dir / "out"
    out.mkdir()
    os.chown(out, NOBODY, NOBODY)
    write_files(c.root, 5)
    master = c.serve()
    c.work()
    wait_for(lambda: len(done_files(c.state)) == 5)
    readable_by_all(c.state)
    check_readers(c.state, out, 5, as_nobody)

    master.signal(signal.SIGTERM)
    assert master.wait() == 0
    readable_by_all(c.state)
    assert sorted(p.name for p in c.state.iterdir()) == ["ledger.sqlite3", "master.lock"]
    check_readers(c.state, out, 5, as_nobody)
    # The master's own user reads it as before, and a master starts on it again.
    check_readers(c.state, out, 5, logdispatch)
    again = c.serve()
    write_files(c.root, 1, start=5)
    wait_for(lambda: len(done_files(c.state)) == 6)
    readable_by_all(c.state)
    check_readers(c.state, out, 6, as_nobody)
    again.signal(signal.SIGTERM)
    assert again.wait() == 0


def test_a_reader_still_reading_when_the_master_stops_leaves_it_readable_to_others(
    public_cluster: Cluster,
) -> None:
    c = public_cluster
    write_files(c.root, 3)
    master = c.serve()
    c.work()
    wait_for(lambda: len(done_files(c.state)) == 3)
    uri = f"{(c.state / 'ledger.sqlite3').as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM versions").fetchone() == (3,)
        master.signal(signal.SIGTERM)
        assert master.wait() == 0
    assert "the ledger stays in WAL mode: a reader has it open" in master.output
    readable_by_all(c.state)
    assert len(done_files(c.state, as_nobody)) == 3


def test_a_master_starting_waits_for_a_reader_of_the_stopped_ledger(cluster: Cluster) -> None:
    write_files(cluster.root, 2)
    first = cluster.serve()
    cluster.work()
    wait_for(lambda: len(done_files(cluster.state)) == 2)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    uri = f"{(cluster.state / 'ledger.sqlite3').as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True, isolation_level=None)) as reader:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM versions").fetchone() == (2,)
        second = cluster._start(
            ["dispatcher", str(cluster.root), "--address", cluster.address,
             "--authkey-file", str(cluster.key_file), "--state", str(cluster.state)],
            "second",
        )  # fmt: skip
        wait_for(lambda: "waiting for the readers of the ledger" in second.output)
        assert second.popen.poll() is None
    wait_for(lambda: "serving on" in second.output)
    write_files(cluster.root, 1, start=2)
    wait_for(lambda: len(done_files(cluster.state)) == 3)
    second.signal(signal.SIGTERM)
    assert second.wait() == 0


@contextlib.contextmanager
def read_only_view(folder: Path, where: Path) -> Iterator[Path]:
    """``folder`` seen through a read-only bind mount at ``where``."""
    where.mkdir()
    try:
        subprocess.run(["mount", "--bind", str(folder), str(where)], check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("bind mounts need root and a mount namespace that allows them")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(where)], check=True)
        with pytest.raises(OSError) as refused:
            (where / "probe").write_bytes(b"")
        assert refused.value.errno == errno.EROFS
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_the_ledger_reads_from_a_read_only_mount_while_the_master_runs_and_after(
    cluster: Cluster, tmp_path: Path
) -> None:
    write_files(cluster.root, 4)
    master = cluster.serve()
    cluster.work()
    wait_for(lambda: len(done_files(cluster.state)) == 4)
    with read_only_view(cluster.state, tmp_path / "ro") as ro:
        check_readers(ro, tmp_path, 4, logdispatch)
        master.signal(signal.SIGTERM)
        assert master.wait() == 0
        check_readers(ro, tmp_path, 4, logdispatch)


# --- damaged ledgers --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(root, state) of a real `run --once` over 300 files: a ledger of several pages."""
    base = tmp_path_factory.mktemp("pristine")
    root = base / "root"
    root.mkdir()
    write_files(root, 300)
    state = base / "state"
    run = logdispatch("run", str(root), "--once", "-q", "--state", str(state))
    assert run.returncode == 0, run.stderr
    for extra in ("-wal", "-shm"):  # what a crash could leave holds nothing here
        wal = state / f"ledger.sqlite3{extra}"
        assert not wal.exists() or extra == "-shm" or wal.stat().st_size == 0
    return root, state


def _versions_page(ledger: Path) -> tuple[int, int]:
    """(page size, page number) of the versions table's root page."""
    with contextlib.closing(sqlite3.connect(f"{ledger.as_uri()}?mode=ro", uri=True)) as db:
        (size,) = db.execute("PRAGMA page_size").fetchone()
        (page,) = db.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'versions'"
        ).fetchone()
        (pages,) = db.execute("SELECT count(*) FROM versions").fetchone()
    assert pages == 300
    return int(size), int(page)


def _zero_page(ledger: Path) -> None:
    size, page = _versions_page(ledger)
    with open(ledger, "r+b") as f:
        f.seek((page - 1) * size)
        f.write(bytes(size))


def _zero_leaf(ledger: Path) -> None:
    """Zero a leaf page in the middle of the versions table (not the one max(id) reads)."""
    size, _ = _versions_page(ledger)
    with contextlib.closing(sqlite3.connect(ledger)) as db:
        try:
            leaves = [
                page
                for (page,) in db.execute(
                    "SELECT pageno FROM dbstat WHERE name = 'versions' AND pagetype = 'leaf' "
                    "ORDER BY path"
                )
            ]
        except sqlite3.OperationalError:
            pytest.skip("this SQLite has no dbstat table to find a leaf page with")
    assert len(leaves) >= 3
    with open(ledger, "r+b") as f:
        f.seek((leaves[len(leaves) // 2] - 1) * size)
        f.write(bytes(size))


def _truncate(ledger: Path) -> None:
    with open(ledger, "r+b") as f:
        f.truncate(ledger.stat().st_size // 2)


def _garbage(ledger: Path) -> None:
    ledger.write_bytes(os.urandom(ledger.stat().st_size))


def _header_only(ledger: Path) -> None:
    ledger.write_bytes(ledger.read_bytes()[:100])


def _empty(ledger: Path) -> None:
    ledger.write_bytes(b"")


DAMAGE = {
    "truncated": _truncate,
    "garbage": _garbage,
    "header-only": _header_only,
    "zeroed-page": _zero_page,
    "zeroed-leaf": _zero_leaf,
    "empty": _empty,
}


def damaged_copy(pristine: tuple[Path, Path], tmp_path: Path, damage: str) -> Path:
    state = tmp_path / "state"
    shutil.copytree(pristine[1], state)
    DAMAGE[damage](state / "ledger.sqlite3")
    return state


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_readers_of_a_damaged_ledger_say_so_in_one_line(
    pristine: tuple[Path, Path], tmp_path: Path, damage: str
) -> None:
    state = damaged_copy(pristine, tmp_path, damage)
    ledger = state / "ledger.sqlite3"
    for command, args in (
        ("summary", ()),
        ("summary", ("--format", "json")),
        ("summary", ("--by", "dir")),
        ("report", ("--out", str(tmp_path / "report.html"))),
    ):
        if damage in ("zeroed-leaf", "zeroed-page") and args == ("--by", "dir"):
            # The groups are read from the ledger's sums, not from the versions' pages, which
            # are those damaged here.
            assert logdispatch(command, "--state", str(state), *args).returncode == 0
            continue
        shown = logdispatch(command, "--state", str(state), *args)
        assert shown.returncode == 2, (command, args, shown.stderr)
        line = one_error_line(shown.stderr, command)
        assert str(ledger) in line
        assert "is damaged" in line or "is not a logdispatch ledger" in line, line
    assert not (tmp_path / "report.html").exists()


@pytest.mark.parametrize("damage", ["zeroed-page", "zeroed-leaf", "garbage", "truncated"])
def test_serve_on_a_damaged_ledger_exits_2_in_one_line(
    pristine: tuple[Path, Path], tmp_path: Path, damage: str
) -> None:
    state = damaged_copy(pristine, tmp_path, damage)
    served = logdispatch(
        "serve", str(pristine[0]), "--state", str(state), "--address", f"127.0.0.1:{free_port()}",
        env={"LOGDISPATCH_AUTHKEY": AUTHKEY},
    )  # fmt: skip
    assert served.returncode == 2, served.stderr  # systemd does not restart it in vain
    line = one_error_line(served.stderr, "serve")
    assert str(state / "ledger.sqlite3") in line
    assert "is damaged" in line


def test_a_ledger_another_user_cannot_open_is_one_line(
    pristine: tuple[Path, Path], public_dir: Path
) -> None:
    state = public_dir / "state"
    shutil.copytree(pristine[1], state)
    state.chmod(0o755)
    (state / "ledger.sqlite3").chmod(0o600)
    shown = as_nobody("summary", "--state", str(state))
    assert shown.returncode == 2
    line = one_error_line(shown.stderr, "summary")
    assert f"cannot open the ledger {state / 'ledger.sqlite3'}: Permission denied" in line


def test_a_ledger_left_in_wal_mode_says_how_another_user_can_read_it(
    pristine: tuple[Path, Path], public_dir: Path
) -> None:
    """As a master of an earlier version left it: WAL mode, no -shm file beside it."""
    state = public_dir / "state"
    shutil.copytree(pristine[1], state)
    with contextlib.closing(sqlite3.connect(state / "ledger.sqlite3")) as db:
        assert db.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    assert not (state / "ledger.sqlite3-shm").exists()
    readable_by_all(state)
    shown = as_nobody("summary", "--state", str(state))
    assert shown.returncode == 2
    line = one_error_line(shown.stderr, "summary")
    assert str(state / "ledger.sqlite3") in line and "WAL mode" in line
    # A clean stop of a master leaves it readable.
    served = Proc(
        ["dispatcher", str(pristine[0]), "--state", str(state),
         "--address", f"127.0.0.1:{free_port()}"],
        public_dir / "master.log",
        env={"LOGDISPATCH_AUTHKEY": AUTHKEY},
    )  # fmt: skip
    try:
        wait_for(lambda: "serving on" in served.output)
        served.signal(signal.SIGTERM)
        assert served.wait() == 0
    finally:
        served.stop()
    readable_by_all(state)
    assert len(done_files(state, as_nobody)) == 300


def test_a_state_directory_of_another_root_is_one_line(
    pristine: tuple[Path, Path], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    shutil.copytree(pristine[1], state)
    other = tmp_path / "other"
    other.mkdir()
    run = logdispatch("run", str(other), "--once", "--state", str(state))
    assert run.returncode == 2
    line = one_error_line(run.stderr, "run")
    assert f"the state directory belongs to root {pristine[0]}" in line
    assert len(done_files(state)) == 300


# --- a full disk ------------------------------------------------------------------------------


def _fill(folder: Path, leave: int) -> Path:
    """A file filling the file system of ``folder`` but ``leave`` bytes."""
    ballast = folder / "ballast"
    with open(ballast, "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:
            f.write(bytes(4096))
    size = ballast.stat().st_size
    os.truncate(ballast, max(size - leave, 0))
    return ballast


def test_a_full_state_disk_stops_the_master_in_one_line_and_loses_nothing(
    cluster: Cluster,
) -> None:
    cluster.state.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(cluster.state)], check=True
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("mounting a small tmpfs needs root and a mount namespace that allows it")
    try:
        master = cluster.serve("--settle", "0.2")
        cluster.work()
        ballast = _fill(cluster.state, leave=96 * 1024)
        written = 0
        deadline = time.monotonic() + 90
        while master.popen.poll() is None and time.monotonic() < deadline:
            write_files(cluster.root, 20, start=written)
            written += 20
            time.sleep(0.3)
        assert master.wait(30) == 1  # a restart may work once space is freed
        output = master.output
        assert "Traceback" not in output, output
        errors = [line for line in output.splitlines() if "error" in line.lower()]
        assert len(errors) == 1, output
        line = errors[0]
        assert line.startswith("logdispatch serve: error: cannot write the ledger "), line
        assert str(cluster.state / "ledger.sqlite3") in line
        assert "disk is full" in line and "committed before is kept" in line

        # What was committed is there, right; the rest is counted at the next start.
        kept = done_files(cluster.state)
        assert all(f["lines"] == LINES for f in kept.values())
        ballast.unlink()
        again = cluster.serve()
        wait_for(lambda: len(done_files(cluster.state)) == written, timeout=60)
        files = done_files(cluster.state)
        assert set(kept) <= set(files)
        assert all(f["lines"] == LINES and f["error_lines"] == 1 for f in files.values())
        again.signal(signal.SIGTERM)
        assert again.wait() == 0
    finally:
        cluster.stop()
        subprocess.run(["umount", str(cluster.state)], check=True)


# --- a second master --------------------------------------------------------------------------


def test_a_second_master_is_refused_even_when_the_lock_file_was_deleted(
    cluster: Cluster,
) -> None:
    write_files(cluster.root, 3)
    first = cluster.serve()
    cluster.work()
    wait_for(lambda: len(done_files(cluster.state)) == 3)
    (cluster.state / "master.lock").unlink()

    second = Proc(
        ["dispatcher", str(cluster.root), "--state", str(cluster.state),
         "--address", f"127.0.0.1:{free_port()}"],
        cluster.tmp / "second.log",
        env={"LOGDISPATCH_AUTHKEY": AUTHKEY},
    )  # fmt: skip
    try:
        assert second.wait(20) == 2
    finally:
        second.stop()
    line = one_error_line(second.output, "serve")
    assert f"another master is using the state directory {cluster.state}" in line

    # The first goes on undisturbed.
    write_files(cluster.root, 2, start=3)
    wait_for(lambda: len(done_files(cluster.state)) == 5)
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
