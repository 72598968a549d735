"""Folders under a trusted top folder, opened one name at a time without following symlinks.

A path given whole is resolved by the kernel, which follows every symbolic link on the way and
refuses a path longer than PATH_MAX. Opened name by name, each folder relative to the one
before with O_NOFOLLOW, a folder that was swapped for a symbolic link is refused instead of
followed, and any depth works: the caller acts relative to the last folder's descriptor
(``os.lstat(name, dir_fd=...)``, ``os.unlink(name, dir_fd=...)``...), which stays that very
folder whatever happens to the names above it meanwhile.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator, Sequence

from workers.errors import SymlinkOnPath

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def open_folder(top: bytes, parts: Sequence[bytes], create: bool = False) -> int:
    """A descriptor of ``top/parts[0]/parts[1]/...``, none of ``parts`` followed if a symlink.

    ``top`` itself is opened as given (it is the root or the archive, named by the operator).
    With ``create``, missing folders are made. An error's ``filename`` is the path of the folder
    it concerns: FileNotFoundError for one missing, SymlinkOnPath for a symlink, FileExistsError
    (with ``create``) for something else standing where a folder must be.
    """
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for depth, part in enumerate(parts, 1):
            try:
                child = _open_child(fd, part, create)
            except OSError as e:
                where = os.path.join(top, *parts[:depth])
                if isinstance(e, SymlinkOnPath):
                    raise SymlinkOnPath(where) from None
                e.filename = where
                raise
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def folder(top: bytes, parts: Sequence[bytes], create: bool = False) -> Iterator[int]:
    """``open_folder`` as a context: the descriptor is closed at the end."""
    fd = open_folder(top, parts, create)
    try:
        yield fd
    finally:
        os.close(fd)


def _open_child(fd: int, name: bytes, create: bool) -> int:
    try:
        return os.open(name, _FOLDER, dir_fd=fd)
    except OSError as e:
        # O_NOFOLLOW with O_DIRECTORY reports a symlink as "not a directory" (or as a loop).
        if e.errno in (errno.ENOTDIR, errno.ELOOP) and _is_symlink(fd, name):
            raise SymlinkOnPath(name) from None
        if not create or e.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise
        if e.errno == errno.ENOTDIR:  # a file stands where the folder must be: as mkdir says
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST)) from None
    with contextlib.suppress(FileExistsError):  # made meanwhile, by another thread say
        os.mkdir(name, dir_fd=fd)
    return _open_child(fd, name, create=False)


def _is_symlink(fd: int, name: bytes) -> bool:
    try:
        return stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode)
    except OSError:
        return False


def open_path(top: bytes, relpath: bytes) -> int:
    """A descriptor of the folder ``top/relpath`` (``relpath`` empty: ``top``), not followed if
    it is a symlink; a path too long to open whole is walked name by name."""
    if not relpath:
        return os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return os.open(os.path.join(top, relpath), _FOLDER)
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
    return open_folder(top, relpath.split(b"/"))


def lstat_under(top: bytes, relpath: bytes) -> os.stat_result:
    """``os.lstat(top/relpath)``, for a path too long to name whole as well."""
    try:
        return os.lstat(os.path.join(top, relpath))
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
    folder_path, _, name = relpath.rpartition(b"/")
    with folder(top, folder_path.split(b"/") if folder_path else []) as fd:
        return os.lstat(name, dir_fd=fd)


def stat_under(root: bytes, path: bytes) -> tuple[int, int] | None:
    """Size and mtime of a regular file under the root; None if it is anything else."""
    found = file_under(root, path)
    return None if found is None else (found.st_size, found.st_mtime_ns)


def file_under(root: bytes, path: bytes) -> os.stat_result | None:
    """The lstat of a regular file under the root; None if it is anything else."""
    try:
        st = lstat_under(root, path)  # a path longer than PATH_MAX as well
    except OSError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None
