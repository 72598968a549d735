"""--on-done against a writer of the share who swaps what was counted for something else.

The writer (an unprivileged user here) plants a file with the size and mtime of a root-owned
file elsewhere, lets it be counted, then swaps its folder for a symlink to the other file's
folder, or the file for another one. The master must then leave everything alone and say why.
The window between counting and acting is widened without timing: a move that fails until
the master restarts, a pending action in a ledger, or the Disposer driven directly.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, as_unprivileged, wait_for

from dispatcher.ledger.writer import Ledger
from dispatcher.master.ondone import Disposer
from dispatcher.versions import Action, Disposal, DisposalState, OnDone, Version
from workers.protocol import Result, Status, Task
from workers.worker import Worker, WorkerConfig

SECRET = b"root:secret-hash:19000:0:99999:7:::\n"
MTIME_NS = 1_600_000_000_123_456_789


class _Share:
    """A world-writable root, a root-only folder elsewhere holding a secret, and an archive."""

    def __init__(self, top: Path) -> None:
        self.top = top
        self.root = top / "root"
        self.root.mkdir()
        self.root.chmod(0o777)
        self.victim = top / "victim"
        self.victim.mkdir(mode=0o700)
        self.secret = self.victim / "secret.log"
        self.secret.write_bytes(SECRET)
        self.secret.chmod(0o600)
        os.utime(self.secret, ns=(MTIME_NS, MTIME_NS))
        self.archive = top / "archive"

    def plant(self) -> int:
        """As the writer: ROOT/a/secret.log, forged to the secret's size and mtime; its inode."""
        root, size = self.root, len(SECRET)

        def forge() -> int:
            (root / "a").mkdir()
            forged = root / "a/secret.log"
            forged.write_bytes(b"x" * (size - 1) + b"\n")
            os.utime(forged, ns=(MTIME_NS, MTIME_NS))
            return forged.stat().st_ino

        return int(as_unprivileged(forge))

    def swap_folder(self) -> None:
        """As the writer: ROOT/a becomes a symlink to the secret's folder."""
        root, victim = self.root, self.victim

        def swap() -> None:
            os.rename(root / "a", root / "a-before")
            os.symlink(victim, root / "a")

        as_unprivileged(swap)

    def intact(self) -> bool:
        return self.secret.read_bytes() == SECRET and self.secret.stat().st_mtime_ns == MTIME_NS


@pytest.fixture
def share(public_dir: Path) -> _Share:
    return _Share(public_dir)


@pytest.fixture
def share_cluster(share: _Share) -> Iterator[Cluster]:
    """A cluster on the share's root (tmp_path is private to root: the writer could not reach)."""
    (share.top / "cluster").mkdir()
    cluster = Cluster(share.top / "cluster")
    cluster.root.rmdir()
    cluster.root = share.root
    try:
        yield cluster
    finally:
        cluster.stop()


def _on_done(cluster: Cluster, path: str) -> str:
    return str((cluster.files().get(path) or {}).get("on_done") or "")


def test_a_folder_swapped_for_a_symlink_while_a_move_waits_moves_nothing(
    share: _Share, share_cluster: Cluster
) -> None:
    """Real master and worker: the forged file is counted, its move fails (a file stands where
    its archive folder must be), the master is SIGKILLed, the writer swaps ROOT/a for a symlink
    to the secret's folder, the obstacle goes, and the next master finishes the recorded move:
    it must not move the secret, whose size and mtime match."""
    cluster = share_cluster
    forged_inode = share.plant()
    share.archive.mkdir()
    (share.archive / "a").write_bytes(b"in the way\n")
    master = cluster.serve("--on-done", f"move:{share.archive}")
    cluster.work()
    wait_for(lambda: _on_done(cluster, "a/secret.log").startswith("move failed: cannot create"))
    master.signal(signal.SIGKILL)
    master.wait()
    with contextlib.closing(sqlite3.connect(cluster.state / "ledger.sqlite3")) as db:
        recorded = db.execute("SELECT inode FROM versions WHERE path = x'612f7365637265742e6c6f67'")
        assert recorded.fetchall() == [(forged_inode,)]  # the worker's fstat, with the counts

    share.swap_folder()
    (share.archive / "a").unlink()
    restarted = cluster.serve()
    wait_for(lambda: not _on_done(cluster, "a/secret.log").startswith("move failed"))
    assert (
        _on_done(cluster, "a/secret.log") == f"left in place: {share.root}/a is a symbolic link now"
    )
    assert share.intact()
    assert not (share.archive / "a").exists()
    assert "finishing 1 moves or deletions recorded in the ledger" in restarted.output


def test_a_pending_delete_from_a_ledger_without_inodes_follows_no_symlink(
    share: _Share, share_cluster: Cluster
) -> None:
    """A delete recorded by a master that stored no inode, left pending (the master stopped
    after the commit), then ROOT/a swapped for a symlink while it was down: the next master
    walks the path without following it, and deletes nothing."""
    cluster = share_cluster
    share.plant()
    with contextlib.closing(Ledger(cluster.state, share.root.resolve())) as ledger:
        vid = ledger.add_version(b"a/secret.log", len(SECRET), MTIME_NS, 0.0)
        counted = Result(vid, 1, "w1", Status.DONE, lines=1)
        ledger.record_result(counted, 1.0, OnDone(Action.DELETE))
    with contextlib.closing(sqlite3.connect(cluster.state / "ledger.sqlite3")) as db:
        db.execute("DROP INDEX versions_inode")  # as a ledger from before
        db.execute("ALTER TABLE versions DROP COLUMN inode")
        db.execute("ALTER TABLE versions DROP COLUMN device")
        db.commit()
    share.swap_folder()
    master = cluster.serve()
    wait_for(lambda: _on_done(cluster, "a/secret.log") not in ("", "pending: delete"))
    assert (
        _on_done(cluster, "a/secret.log") == f"left in place: {share.root}/a is a symbolic link now"
    )
    assert share.intact()
    assert (share.root / "a-before/secret.log").exists()  # the forged file, not acted on either
    with contextlib.closing(sqlite3.connect(cluster.state / "ledger.sqlite3")) as db:
        columns = {row[1] for row in db.execute("PRAGMA table_info(versions)")}
    assert {"device", "inode"} <= columns  # added when the master opened the ledger
    assert "Traceback" not in master.output


# --- one action, on real files -------------------------------------------------------------


def _disposal(share: _Share, action: Action, inode: int | None) -> Disposal:
    archive = os.fsencode(share.archive) if action is Action.MOVE else None
    version = Version(7, b"a/secret.log", len(SECRET), MTIME_NS)
    return Disposal(version, action, archive, 2049, inode)


def _dispose(share: _Share, disposal: Disposal) -> tuple[DisposalState, str]:
    vid, state, note = Disposer(os.fsencode(share.root), lambda _: None).dispose(disposal)
    assert vid == disposal.version.id
    return state, note


@pytest.mark.parametrize("action", [Action.DELETE, Action.MOVE])
@pytest.mark.parametrize("inode_known", [True, False])
def test_the_disposer_follows_no_folder_swapped_for_a_symlink(
    share: _Share, action: Action, inode_known: bool
) -> None:
    forged_inode = share.plant()
    share.archive.mkdir()
    counted = _disposal(share, action, forged_inode if inode_known else None)
    share.swap_folder()
    assert _dispose(share, counted) == (
        DisposalState.SKIPPED,
        f"left in place: {share.root}/a is a symbolic link now",
    )
    assert share.intact()
    assert not (share.archive / "a").exists()


@pytest.mark.parametrize("action", [Action.DELETE, Action.MOVE])
def test_a_file_replaced_by_another_of_the_same_size_and_mtime_is_left_alone(
    share: _Share, action: Action
) -> None:
    """The counted inode is gone; another file, forged to the same size and mtime, holds the
    name: it is not the file that was counted."""
    forged_inode = share.plant()
    root = share.root

    def replace() -> None:
        os.rename(root / "a/secret.log", root / "a/counted.log")
        (root / "a/secret.log").write_bytes(b"y" * (len(SECRET) - 1) + b"\n")
        os.utime(root / "a/secret.log", ns=(MTIME_NS, MTIME_NS))

    as_unprivileged(replace)
    assert _dispose(share, _disposal(share, action, forged_inode)) == (
        DisposalState.SKIPPED,
        "left in place: another file than the one counted",
    )
    assert (root / "a/secret.log").read_bytes().startswith(b"yyy")
    assert not share.archive.exists()


def test_a_symlink_in_the_archive_is_not_followed(share: _Share, tmp_path: Path) -> None:
    """Folders are made in the archive without following a symlink found there: the move
    fails, and nothing is written where the symlink points."""
    share.plant()
    share.archive.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, share.archive / "a")
    counted = _disposal(share, Action.MOVE, (share.root / "a/secret.log").stat().st_ino)
    state, note = _dispose(share, counted)
    assert (state, note) == (
        DisposalState.FAILED,
        f"move failed: cannot create {share.archive}/a: a symbolic link on the path: not followed",
    )
    assert list(elsewhere.iterdir()) == []
    assert (share.root / "a/secret.log").exists()


def test_the_worker_reports_the_inode_it_counted(share: _Share) -> None:
    """Result carries device and inode across the wire, from the worker's fstat."""
    inode = share.plant()
    worker = Worker(WorkerConfig(("127.0.0.1", 1), b"key", root=os.fsencode(share.root)))
    task = Task(3, b"a/secret.log", len(SECRET), MTIME_NS, 1, b"ERROR")
    result: Any = pickle.loads(pickle.dumps(worker.count(task)))
    st = (share.root / "a/secret.log").stat()
    assert (result.status, result.device, result.inode) == (Status.DONE, st.st_dev, inode)
