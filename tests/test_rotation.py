"""Real log rotation against a running master and two workers: an application writes its log
while Debian's logrotate (`logrotate -f -s STATE CONF`) rotates it every second or two, and
once everything settled the totals must be those of all the content the application wrote,
each piece counted once whatever names it had; deleting the oldest archives afterwards must
not move them.

What each scheme does to the files (the application's log is app/app.log):

- create: app.log is renamed app.log.1 (older archives move up: .1 to .2...), a new empty
  app.log is created, and postrotate sends SIGHUP, on which the application reopens app.log;
  until then it still writes to app.log.1.
- copytruncate: app.log is copied to app.log.1 (older archives move up) and then truncated in
  place; the application keeps it open with O_APPEND and goes on writing at its new end.
  Lines written between the copy and the truncation are lost, and a line half written then is
  cut in two, so this scheme expects the counts of the files the share holds.
- create + compress: as create (without the SIGHUP), then app.log.1 is compressed at once to
  app.log.1.gz and removed (every archive is app.log.N.gz); the application opens, appends
  and closes at each write, so it never writes to a file being compressed.
- create + compress + delaycompress: as create, and app.log.1 stays plain until the next
  rotation, which first compresses it in place to app.log.1.gz (app.log.1 removed) and then
  moves that up to app.log.2.gz with the older archives.
- dateext + compress: app.log is renamed app.log-YYYYMMDD-EPOCH (dateformat -%Y%m%d-%s) and
  compressed to app.log-YYYYMMDD-EPOCH.gz; an archive is never renamed again. The application
  opens, appends and closes at each write.
- rsync: the application and logrotate (create + compress + delaycompress) work in a folder
  outside the root, copied into ROOT/mirror by `rsync -a --delete` every second: rsync writes
  each changed file as a hidden .NAME.XXXXXX beside it, renames it into place (its mtime that
  of the source) and deletes from the mirror what left the source. The master's naming rules
  skip any path with a part that starts with `.` before the include globs apply, so those
  temporary files are never taken.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, logdispatch, wait_for
from reference import reference_counts

WRITER = Path(__file__).with_name("logwriter.py")
WRITE_SECONDS = 12.0
ROTATE_EVERY = 1.5
SYNC_EVERY = 1.0
KEEP = 2  # archives left by the retention at the end: the newest ones
# Every name a rotation gives: the log, numbered archives, dated ones, compressed or not.
INCLUDES = ["*.log", "*.log.*", "*.log-*", "*.gz"]
NOT_FINAL = {"queued", "leased"}
# rsync: some files vanished between its listing and its copy, as rotation renames them.
RSYNC_VANISHED = 24


@dataclasses.dataclass(frozen=True)
class Scheme:
    directives: tuple[str, ...]
    mode: str  # how the application meets the rotation: see logwriter.py
    lossless: bool = True  # the share holds every byte written, each line in one file


SCHEMES = {
    "create": Scheme(("create",), "hup"),
    "copytruncate": Scheme(("copytruncate",), "append", lossless=False),
    "create-compress": Scheme(("create", "compress"), "per-write"),
    "create-compress-delaycompress": Scheme(("create", "compress", "delaycompress"), "hup"),
    "dateext-compress": Scheme(
        ("create", "dateext", "dateformat -%Y%m%d-%s", "compress"), "per-write"
    ),
}


def _tool(name: str) -> str:
    found = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if found is None:
        pytest.fail(f"{name} is not installed (.ci/run installs it with apt)")
    return found


class Rotation:
    """The application and logrotate, working in ``folder``."""

    def __init__(self, tmp: Path, folder: Path, scheme: Scheme, seed: int) -> None:
        self.log = folder / "app.log"
        self.folder = folder
        self.scheme = scheme
        self.record = tmp / "written.log"
        self.state = tmp / "logrotate.state"
        self.conf = tmp / "logrotate.conf"
        self.logrotate = _tool("logrotate")
        self.rotations = 0
        self._last_second = -1
        folder.mkdir(parents=True)
        self.log.touch()
        args = [str(WRITER), str(self.log), str(self.record), "--mode", scheme.mode]
        args += ["--seconds", str(WRITE_SECONDS), "--seed", str(seed)]
        self.writer = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        body = ["missingok", "notifempty", "rotate 100", *scheme.directives]
        if scheme.mode == "hup":
            body += [
                "postrotate",
                f"    kill -HUP {self.writer.pid} 2>/dev/null || true",
                "endscript",
            ]
        lines = "\n".join(f"    {d}" for d in body)
        self.conf.write_text(f'"{self.log}" {{\n{lines}\n}}\n')
        # Once it has written, the application handles SIGHUP.
        wait_for(lambda: self.record.exists() and self.record.stat().st_size > 0)

    def rotate(self) -> None:
        # Dated names have a resolution of one second: never two rotations in one.
        while int(time.time()) == self._last_second:
            time.sleep(0.02)
        self._last_second = int(time.time())
        done = subprocess.run(
            [self.logrotate, "-f", "-s", str(self.state), str(self.conf)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, f"logrotate: {done.stdout}{done.stderr}"
        self.rotations += 1

    def run(self) -> str:
        """Rotate every ROTATE_EVERY seconds while the application writes, then once more after
        it stopped; returns what the application said at its end."""
        next_rotation = time.monotonic() + ROTATE_EVERY
        # Waited for without being reaped: postrotate's kill must not reach a process that
        # took its pid.
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        while os.waitid(os.P_PID, self.writer.pid, flags) is None:
            if time.monotonic() >= next_rotation:
                self.rotate()
                next_rotation = time.monotonic() + ROTATE_EVERY
            time.sleep(0.05)
        self.rotate()
        assert self.writer.stdout is not None
        out = self.writer.stdout.read().decode()
        assert self.writer.wait() == 0, f"the application failed: {out}"
        return out

    def stop(self) -> None:
        if self.writer.poll() is None:
            self.writer.kill()
            self.writer.wait()
        if self.writer.stdout:
            self.writer.stdout.close()

    def archives(self) -> list[Path]:
        """The rotated files, oldest first."""
        return sorted((p for p in self.folder.iterdir() if p != self.log), key=_age, reverse=True)


def _age(path: Path) -> int:
    """How many rotations ago (numbered names) or how long ago (dated names) ``path`` was made."""
    numbered = re.fullmatch(r"app\.log\.(\d+)(?:\.gz)?", path.name)
    if numbered:
        return int(numbered.group(1))
    dated = re.fullmatch(r"app\.log-\d{8}-(\d+)(?:\.gz)?", path.name)
    assert dated, f"an archive of an unknown name: {path.name}"
    return -int(dated.group(1))


def _content(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _share(folder: Path, rotation: Rotation) -> list[tuple[Path, bytes]]:
    """The files under ``folder``, as the application's content: archives oldest first, then
    the log."""
    names = [p.name for p in [*rotation.archives(), rotation.log]]
    return [(folder / name, _content(folder / name)) for name in names]


def _expected(rotation: Rotation, share: list[tuple[Path, bytes]]) -> tuple[int, int]:
    """The counts of everything written, after checking that the share holds exactly that (for
    copytruncate: the counts of what the share holds, file by file)."""
    written = rotation.record.read_bytes()
    if not rotation.scheme.lossless:
        lines = sum(reference_counts(data)[0] for _, data in share)
        errors = sum(reference_counts(data)[1] for _, data in share)
        return lines, errors
    held = b"".join(data for _, data in share)
    assert held == written, (
        f"the share does not hold what the application wrote: {len(held)} bytes against "
        f"{len(written)}"
    )
    # Each file ends at the end of a line, so file by file the counts are the same.
    assert all(data.endswith(b"\n") for _, data in share if data)
    return reference_counts(written)


def _relative(cluster: Cluster, path: Path) -> str:
    return path.relative_to(cluster.root).as_posix()


def _quiet(cluster: Cluster) -> bool:
    shown = logdispatch(
        "status", "--json", "--address", cluster.address, "--authkey-file", str(cluster.key_file)
    )
    assert shown.returncode == 0, shown.stderr
    files = json.loads(shown.stdout)["files"]
    return not any(files[k] for k in ("settling", "queued", "retrying", "in_flight"))


def _settled(cluster: Cluster, present: list[Path]) -> dict[str, Any] | None:
    """The summary once the master has nothing left to do and holds, for every file of
    ``present`` the version now on disk, no longer pending; None before that."""
    if not _quiet(cluster):
        return None
    summary = cluster.summary()
    if summary["totals"].get("pending", 1):
        return None
    files = {entry["path"]: entry for entry in summary["files"]}
    for path in present:
        entry = files.get(_relative(cluster, path))
        if entry is None or entry["status"] in NOT_FINAL or entry["gone"] is not None:
            return None
        if entry["bytes"] != path.stat().st_size:
            return None
    return summary


def _still(cluster: Cluster, present: list[Path]) -> dict[str, Any]:
    """The summary once it is settled and the same a second later."""
    last: list[dict[str, Any] | None] = [None]

    def same_twice() -> dict[str, Any] | None:
        now = _settled(cluster, present)
        before, last[0] = last[0], now
        return now if now is not None and now == before else None

    summary: dict[str, Any] = wait_for(same_twice, timeout=30, interval=1.0)
    return summary


def _totals(summary: dict[str, Any]) -> tuple[int, int]:
    return summary["totals"]["lines"], summary["totals"]["error_lines"]


def _breakdown(summary: dict[str, Any], share: list[tuple[Path, bytes]], root: Path) -> str:
    on_share = {p.relative_to(root).as_posix(): reference_counts(d) for p, d in share}
    rows = []
    for entry in summary["files"]:
        rows.append(
            f"  {entry['path']}: {entry['status']} {entry['lines']}/{entry['error_lines']}"
            f"{' gone' if entry['gone'] else ''}"
            f" (on the share: {on_share.get(entry['path'], 'none')})"
        )
    return "\n".join(rows)


def _retention_and_check(
    cluster: Cluster,
    rotation: Rotation,
    watched: Path,
    sync: Any = None,
) -> None:
    """Wait until all is counted, check the totals, delete the oldest archives, wait until they
    are gone, and check that the totals did not move."""
    share = _share(watched, rotation)
    expected = _expected(rotation, share)
    present = [path for path, _ in share]
    before = _still(cluster, present)
    archives = rotation.archives()
    assert len(archives) > KEEP, f"only {len(archives)} archives after {rotation.rotations} runs"
    old = archives[:-KEEP]
    for path in old:
        path.unlink()
    if sync is not None:
        sync()
    deleted = [_relative(cluster, watched / path.name) for path in old]
    assert not any((watched / path.name).exists() for path in old)
    wait_for(lambda: all(cluster.files()[p]["gone"] is not None for p in deleted))
    after = _still(cluster, [p for p in present if p.exists()])
    record = rotation.record.read_bytes()
    written = reference_counts(record)
    held = sum(len(data) for _, data in share)
    print(
        f"expected {expected}, written {written} ({len(record)} bytes, the share holds {held}), "
        f"counted {_totals(before)} then {_totals(after)}; {rotation.rotations} rotations, "
        f"{len(deleted)} archives deleted"
    )
    assert (_totals(before), _totals(after)) == (expected, expected), (
        f"expected {expected} (written: {written}), counted {_totals(before)} once settled and "
        f"{_totals(after)} after deleting {len(deleted)} archives; {rotation.rotations} "
        f"rotations\n{_breakdown(before, share, cluster.root)}"
    )


def _start(cluster: Cluster) -> None:
    includes = [arg for glob in INCLUDES for arg in ("--include", glob)]
    cluster.serve(*includes)
    cluster.work()
    cluster.work()


@pytest.mark.parametrize("name", list(SCHEMES))
def test_rotated_content_is_counted_once(cluster: Cluster, name: str) -> None:
    _start(cluster)
    scheme = SCHEMES[name]
    rotation = Rotation(cluster.tmp, cluster.root / "app", scheme, seed=len(name))
    try:
        print(rotation.run().strip())
        _retention_and_check(cluster, rotation, rotation.folder)
    finally:
        rotation.stop()


def test_a_mirror_made_by_rsync_is_counted_once(cluster: Cluster) -> None:
    rsync = _tool("rsync")
    source = cluster.tmp / "source"
    mirror = cluster.root / "mirror"
    mirror.mkdir()
    _start(cluster)
    scheme = SCHEMES["create-compress-delaycompress"]
    rotation = Rotation(cluster.tmp, source / "app", scheme, seed=7)
    codes: list[int] = []

    def sync() -> int:
        done = subprocess.run(
            [rsync, "-a", "--delete", f"{source}/", f"{mirror}/"],
            capture_output=True,
            timeout=30,
            check=False,
        )
        return done.returncode

    stop = threading.Event()

    def keep_syncing() -> None:
        while not stop.wait(SYNC_EVERY):
            codes.append(sync())

    syncer = threading.Thread(target=keep_syncing, name="rsync")
    syncer.start()
    try:
        print(rotation.run().strip())
    finally:
        stop.set()
        syncer.join()
        rotation.stop()
    print(f"rsync exit statuses while rotating: {codes}")
    assert set(codes) <= {0, RSYNC_VANISHED}, codes
    assert sync() == 0

    def sync_after_retention() -> None:
        assert sync() == 0

    _retention_and_check(cluster, rotation, mirror / "app", sync_after_retention)
    # rsync's temporary names were hidden: none of them was ever taken.
    assert not [p for p in cluster.versions() if any(s.startswith(b".") for s in p.split(b"/"))]
