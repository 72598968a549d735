"""Each piece of log content counted once, whatever names it has had: renames taken without a
read, copies and compressed copies counted once, a growing log read from where it was counted,
the content of a rotated log counted once however it was rotated; across a master's SIGKILL.
Real master and worker processes, real files."""

from __future__ import annotations

import gzip
import itertools
import os
import shutil
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Cluster, logdispatch, wait_for
from reference import reference_counts

from workers.counting import complete_lines_end

OLD = 1_600_000_000  # an mtime long past: the file has settled


def _lines(first: int, count: int, every: int = 3) -> bytes:
    """Log lines numbered from ``first``, one in ``every`` an error line."""
    return b"".join(
        b"%d ERROR failed\n" % n if n % every == 0 else b"%d ok request served\n" % n
        for n in range(first, first + count)
    )


def _rows(cluster: Cluster, path: str) -> list[dict[str, Any]]:
    """The ledger's versions of ``path``, oldest first."""
    with sqlite3.connect(cluster.state / "ledger.sqlite3") as db:
        db.row_factory = sqlite3.Row
        rows = db.execute("SELECT * FROM versions WHERE path = ? ORDER BY id", (os.fsencode(path),))
        return [dict(row) for row in rows]


def _counted_at(cluster: Cluster, path: str, size: int) -> Callable[[], bool]:
    """Whether the latest version of ``path`` is of ``size`` bytes, and done."""

    def counted() -> bool:
        rows = _rows(cluster, path)
        return bool(rows) and (rows[-1]["size"], rows[-1]["status"]) == (size, "done")

    return counted


def _totals(cluster: Cluster) -> tuple[int, int]:
    totals = cluster.summary()["totals"]
    return totals.get("lines", 0), totals.get("error_lines", 0)


def _settled(cluster: Cluster, done: int) -> None:
    """Wait until ``done`` files are done and none is pending."""
    wait_for(
        lambda: (
            cluster.summary()["totals"].get("done") == done
            and cluster.summary()["totals"].get("pending") == 0
        )
    )


def _counted_log(cluster: Cluster, content: bytes, *serve: str) -> Path:
    """ROOT/app.log with ``content``, counted by a master started with ``serve`` and a worker."""
    log = cluster.root / "app.log"
    log.write_bytes(content)
    cluster.serve(*serve)
    cluster.work()
    _settled(cluster, 1)
    return log


def _kill_master(cluster: Cluster) -> None:
    assert cluster.master is not None
    cluster.master.signal(signal.SIGKILL)
    cluster.master.wait()


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def test_renamed_and_compressed_the_content_counts_once(cluster: Cluster) -> None:
    content = _lines(1, 300)
    log = cluster.root / "app" / "app.log"
    log.parent.mkdir()
    log.write_bytes(content)
    os.utime(log, (OLD, OLD))
    cluster.serve()
    cluster.work()
    _settled(cluster, 1)
    expected = reference_counts(content)
    assert _totals(cluster) == expected
    # Rotation by renaming: the new name is the same file, taken without a read.
    log.rename(log.with_name("app.log.1"))
    wait_for(lambda: cluster.files().get("app/app.log.1", {}).get("status") == "done")
    (renamed,) = _rows(cluster, "app/app.log.1")
    assert (renamed["attempts"], renamed["bytes_read"]) == (0, 0)  # no worker read it
    assert (renamed["lines"], renamed["error_lines"]) == expected
    assert cluster.files()["app/app.log.1"]["same_as"] == "app/app.log"
    wait_for(lambda: cluster.files()["app/app.log"]["gone"] is not None)
    assert _totals(cluster) == expected
    # Compressed, as logrotate's compress does: the same content, counted once.
    with (
        open(log.with_name("app.log.1"), "rb") as f,
        gzip.open(log.with_name("app.log.1.gz"), "wb") as out,
    ):
        shutil.copyfileobj(f, out)
    log.with_name("app.log.1").unlink()
    wait_for(lambda: cluster.files().get("app/app.log.1.gz", {}).get("status") == "done")
    entry = cluster.files()["app/app.log.1.gz"]
    assert (entry["lines"], entry["error_lines"], entry["same_as"]) == (*expected, "app/app.log")
    assert _totals(cluster) == expected
    # A copy under an unrelated name is the same content too.
    shutil.copyfile(log.with_name("app.log.1.gz"), cluster.root / "copy.gz")
    wait_for(lambda: cluster.files().get("copy.gz", {}).get("status") == "done")
    assert cluster.files()["copy.gz"]["same_as"] == "app/app.log"
    totals = cluster.summary()["totals"]
    assert (totals["lines"], totals["error_lines"], totals["bytes"]) == (*expected, len(content))
    assert cluster.master is not None
    assert "app/app.log.1 is app/app.log renamed" in cluster.master.output


def test_a_growing_log_is_read_about_once(cluster: Cluster) -> None:
    log = cluster.root / "app.log"
    cluster.serve()
    cluster.work()
    written = b""
    for step in range(6):
        # Each step ends inside a line: the line is finished by the next step.
        piece = _lines(step * 40_000, 40_000) + b"%d ERROR half of a li" % step
        if step:
            piece = b"ne\n" + piece
        _append(log, piece)
        written += piece
        wait_for(_counted_at(cluster, "app.log", len(written)))
        assert _totals(cluster) == reference_counts(written)
    rows = _rows(cluster, "app.log")
    read = sum(row["bytes_read"] or 0 for row in rows if row["status"] == "done")
    assert read <= 1.2 * len(written), (read, len(written))
    assert cluster.summary()["totals"]["bytes"] == len(written)
    assert (rows[-1]["lines"], rows[-1]["error_lines"]) == reference_counts(written)


def test_a_rotated_log_with_lines_written_after_its_last_count(cluster: Cluster) -> None:
    """logrotate's compress: the log is renamed and compressed at once, holding lines written
    since it was last counted; the new log starts empty."""
    counted = _lines(1, 5000)
    log = _counted_log(cluster, counted)
    later = _lines(5001, 777)
    _append(log, later)
    with open(log, "rb") as f, gzip.open(cluster.root / "app.log.1.gz", "wb") as out:
        shutil.copyfileobj(f, out)
    log.write_bytes(b"")
    _settled(cluster, 2)
    wait_for(lambda: _rows(cluster, "app.log")[-1]["size"] == 0)
    _settled(cluster, 2)
    assert _totals(cluster) == reference_counts(counted + later)
    (archive,) = _rows(cluster, "app.log.1.gz")
    assert (archive["own_lines"], archive["lines"]) == (777, 5777)


def test_copytruncate_counts_the_copy_and_the_new_lines_once(cluster: Cluster) -> None:
    first = _lines(1, 2000)
    log = _counted_log(cluster, first)
    more = _lines(2001, 100)
    _append(log, more)
    shutil.copyfile(log, cluster.root / "app.log.1")
    with open(log, "r+b") as f:
        f.truncate(0)
    _settled(cluster, 2)
    after = _lines(9001, 50, every=2)
    _append(log, after)
    wait_for(lambda: _rows(cluster, "app.log")[-1]["size"] == len(after))
    _settled(cluster, 2)
    assert _totals(cluster) == reference_counts(first + more + after)


def test_a_master_killed_around_a_rename_and_an_append_loses_and_doubles_nothing(
    cluster: Cluster,
) -> None:
    first = _lines(1, 30_000)
    log = _counted_log(cluster, first)
    _kill_master(cluster)
    # While no master runs: renamed, written to under its new name, and a new log begun.
    rotated = cluster.root / "app.log.1"
    log.rename(rotated)
    more = _lines(30_001, 200)
    _append(rotated, more)
    new = _lines(1, 10, every=5)
    log.write_bytes(new)
    cluster.serve()
    _settled(cluster, 2)
    assert _totals(cluster) == reference_counts(first + more + new)
    (counted,) = _rows(cluster, "app.log.1")
    assert counted["lines"] == 30_200 and counted["bytes_read"] < len(first) / 2  # from its end
    # Appended, and the master killed before the append settled (--settle 0.5).
    _append(rotated, _lines(30_201, 10))
    _kill_master(cluster)
    assert _rows(cluster, "app.log.1")[-1]["lines"] == 30_200
    cluster.serve()
    wait_for(lambda: _rows(cluster, "app.log.1")[-1]["lines"] == 30_210)
    _settled(cluster, 2)
    assert _totals(cluster) == reference_counts(first + more + _lines(30_201, 10) + new)


def test_no_base_carries_counts_of_another_error_pattern(cluster: Cluster) -> None:
    first = _lines(1, 30_000)
    log = _counted_log(cluster, first)
    _kill_master(cluster)
    _append(log, b"a WARN line\n")
    cluster.serve("--error-pattern", "WARN")
    wait_for(_counted_at(cluster, "app.log", len(first) + 12))
    latest = _rows(cluster, "app.log")[-1]
    # Read whole, and counted by the new pattern only.
    assert latest["bytes_read"] == len(first) + 12
    assert (latest["lines"], latest["error_lines"]) == (30_001, 1)


def test_complete_lines_end_finds_the_last_newline_before_a_size(tmp_path: Path) -> None:
    path = tmp_path / "log"
    path.write_bytes(b"a\n" + b"x" * 200 + b"\nhalf a li")
    fd = os.open(path, os.O_RDONLY)
    try:
        assert complete_lines_end(fd, 212) == 203
        assert complete_lines_end(fd, 203) == 203
        assert complete_lines_end(fd, 202, window=16) == 2  # found windows back
        assert complete_lines_end(fd, 1) == 0
        assert complete_lines_end(fd, 0) == 0
    finally:
        os.close(fd)


def test_follow_counts_a_growing_log_up_to_its_last_line_and_once_in_all(
    cluster: Cluster,
) -> None:
    log = cluster.root / "app.log"
    written = _lines(1, 20_000)  # past the size from which a worker reads only what was added
    log.write_bytes(written)
    cluster.serve("--settle", "30", "--follow", "0.5")
    cluster.work()
    n = 20_001
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        # Lines written in two pieces: the file often ends inside a line when it is counted.
        piece = _lines(n, 50)
        for part in (piece[:7], piece[7:]):
            _append(log, part)
            time.sleep(0.01)
        written += piece
        n += 50
    # Counted while it grew, though it never held still for --settle.
    growing = [r for r in _rows(cluster, "app.log") if r["status"] == "done"]
    assert len(growing) >= 2
    for row in growing:
        # Up to a complete line: the counts are those of whole lines of what was written.
        content = written[: _length(row)]
        assert content.endswith(b"\n") and (row["lines"], row["error_lines"]) == reference_counts(
            content
        )
    # Once it stops, the last version settles and the totals are all of it, each line once.
    wait_for(_counted_at(cluster, "app.log", len(written)), timeout=60)
    assert _totals(cluster) == reference_counts(written)
    # Each count after the first read what was added, and the 64 KiB checks of the base.
    done = [r for r in _rows(cluster, "app.log") if r["status"] == "done"]
    for before, row in itertools.pairwise(done):
        added = _length(row) - _length(before)
        assert row["bytes_read"] <= added + 3 * 64 * 1024, (row["bytes_read"], added)


def _length(row: dict[str, Any]) -> int:
    """The length of the content a done version counted."""
    return int.from_bytes(row["fingerprint"][:8], "big")


def test_follow_must_be_positive(tmp_path: Path) -> None:
    run = logdispatch(
        "run", str(tmp_path), "--once", "--follow", "0", "--state", str(tmp_path / "s")
    )
    assert run.returncode != 0 and "--follow must be positive" in run.stderr
