"""Opening a task's file under the worker's root: one path relative to ``--root``, as the master
sent it, opened for reading without following any symlink or leaving the root.

The path comes from the master, so a path that climbs out of the root (``..``, an absolute
path) is refused here, and a symlink anywhere on the way fails the open rather than leading
elsewhere on the share.
"""

from __future__ import annotations

import errno
import functools
import os
import stat

from workers.common import display_path
from workers.errors import PathRefused


def open_under(root: bytes, relpath: bytes) -> int:
    """Open ``root/relpath`` for reading without following any symlink or leaving ``root``."""
    parts = relpath.split(b"/")
    if relpath.startswith(b"/") or any(p in (b"", b".", b"..") for p in parts):
        raise PathRefused(f"refused path {display_path(relpath)!r}: it leaves the root")
    # O_NONBLOCK: opening a FIFO must not wait for a writer.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    # One open of the whole path, then the kernel's own name for what it opened: a symlinked
    # folder on the way (or a root that moved) gives another name, and the walk below decides.
    expected = _real_root(root) + relpath
    try:
        fd = os.open(expected, flags)
    except OSError:
        return _open_walking(root, parts, flags)  # which gives the precise error
    try:
        if os.readlink(b"/proc/self/fd/%d" % fd) == expected:
            return fd
    except OSError:
        pass  # no /proc (not Linux)
    os.close(fd)
    return _open_walking(root, parts, flags)


@functools.lru_cache(maxsize=16)
def _real_root(root: bytes) -> bytes:
    """The root's canonical path with a trailing slash, as /proc names the files under it."""
    return os.path.realpath(root).rstrip(b"/") + b"/"


def _open_walking(root: bytes, parts: list[bytes], flags: int) -> int:
    """Open component by component from the root, each folder with O_NOFOLLOW."""
    dir_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd
                )
            except NotADirectoryError:
                # O_NOFOLLOW with O_DIRECTORY reports a symlinked folder as "not a directory".
                if stat.S_ISLNK(os.lstat(part, dir_fd=dir_fd).st_mode):
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
                raise
            os.close(dir_fd)
            dir_fd = next_fd
        return os.open(parts[-1], flags, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
