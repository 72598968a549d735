"""Counting one file: lines and error lines of its bytes, in bounded memory.

Pure: no logging setup, no processes, no global state. The rules are docs/counting.md;
``ErrorMatcher`` (``workers.matching``) compiles them once and ``count_path`` / ``count_fd`` /
``count_fileobj`` apply them to a file, a descriptor or an open binary file, decompressing
what is compressed (``workers.expansion``), and take the fingerprint of the content counted
(``workers.fingerprint``) on the way.
"""

from __future__ import annotations

import functools
import io
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import BinaryIO

from workers.errors import CountError
from workers.expansion import MAGIC_BYTES, Expansion, count_compressed, detect_compression
from workers.fingerprint import Fingerprint
from workers.matching import ErrorMatcher, count_chunks
from workers.scans import Counts

# Large enough that per-read Python overhead vanishes next to the search, small enough for RAM.
CHUNK_SIZE = 4 * 1024 * 1024

_EXPANSION = Expansion()


def count_fileobj(
    f: BinaryIO,
    matcher: ErrorMatcher,
    chunk_size: int = CHUNK_SIZE,
    size: int | None = None,
    expansion: Expansion = _EXPANSION,
) -> Counts:
    """Count a seekable binary file from its current position, decompressing by magic bytes.

    ``size``: the content's known size (from fstat). Reading stops once that much is read, so a
    small file costs one read; the caller then checks that the file has not changed.
    """

    def rewind(consumed: int) -> BinaryIO:
        f.seek(-consumed, io.SEEK_CUR)
        return f

    return _count(f.read, rewind, matcher, chunk_size, size, expansion)


def count_fd(
    fd: int,
    matcher: ErrorMatcher,
    chunk_size: int = CHUNK_SIZE,
    size: int | None = None,
    expansion: Expansion = _EXPANSION,
) -> Counts:
    """``count_fileobj`` on an open file descriptor, read with os.read: no file object."""

    def rewind(consumed: int) -> BinaryIO:
        os.lseek(fd, -consumed, os.SEEK_CUR)
        # closefd=False: the caller's descriptor stays open, and nothing is left to close.
        return open(fd, "rb", buffering=0, closefd=False)

    return _count(functools.partial(os.read, fd), rewind, matcher, chunk_size, size, expansion)


def _count(
    read: Callable[[int], bytes],
    rewind: Callable[[int], BinaryIO],
    matcher: ErrorMatcher,
    chunk_size: int,
    size: int | None,
    expansion: Expansion,
) -> Counts:
    """The counting of a file: ``read(n)`` gives its next bytes, ``rewind(n)`` a file object
    at its start once n bytes were read (for a decompressor)."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    first = read(chunk_size if size is None else max(1, min(chunk_size, size)))
    while 0 < len(first) < MAGIC_BYTES:  # enough to tell an archive, even in tiny reads
        more = read(MAGIC_BYTES - len(first))
        if not more:
            break
        first += more
    compression = detect_compression(first)
    if compression is None:
        fingerprint = Fingerprint()
        if size is not None and len(first) >= size:
            fingerprint.feed(first)
            counts = matcher.count_whole(first)
        else:
            chunks = fingerprint.fed(_plain_chunks(first, read, chunk_size, size))
            counts = count_chunks(chunks, matcher)
        return replace(counts, fingerprint=fingerprint.digest())
    if expansion.on_start is not None:
        expansion.on_start()
    return count_compressed(rewind(len(first)), compression, matcher, chunk_size, expansion.limit)


def _plain_chunks(
    first: bytes, read: Callable[[int], bytes], chunk_size: int, size: int | None
) -> Iterator[bytes]:
    yield first
    done = len(first)
    while size is None or done < size:
        chunk = read(chunk_size if size is None else min(chunk_size, size - done))
        if not chunk:
            return
        done += len(chunk)
        yield chunk


def count_path(
    path: str | bytes,
    matcher: ErrorMatcher,
    chunk_size: int = CHUNK_SIZE,
    expansion: Expansion = _EXPANSION,
) -> Counts:
    """Count one regular file; never follows a final symlink nor blocks on a FIFO.

    FileNotFoundError, PermissionError and other OSErrors of opening propagate.
    """
    # O_NONBLOCK only keeps a FIFO from blocking the open; reads of regular files ignore it.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CountError("not a regular file")
        return count_fd(fd, matcher, chunk_size, expansion=expansion)
    finally:
        os.close(fd)
