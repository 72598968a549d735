"""Counting one file: lines and error lines of its bytes, in bounded memory.

Pure: no logging setup, no processes, no global state. The rules are docs/counting.md;
``ErrorMatcher`` (``workers.matching``) compiles them once and ``count_path`` / ``count_fd`` /
``count_fileobj`` apply them to a file, a descriptor or an open binary file, decompressing
what is compressed (``workers.expansion``), and take the fingerprint of the content counted
(``workers.fingerprint``) on the way. Given bases, earlier versions the content may extend,
they report the longest one it extends, and read a plain file only past it where they can
(docs/counting.md, "Extending an earlier version").
"""

from __future__ import annotations

import functools
import io
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, BinaryIO

from workers.errors import CountError
from workers.expansion import MAGIC_BYTES, Expansion, count_compressed, detect_compression
from workers.fingerprint import (
    EDGE_BYTES,
    HASH_BYTES,
    Extension,
    Fingerprint,
    edge_hash,
    extends,
    join,
    split,
)
from workers.matching import ErrorMatcher, count_chunks
from workers.scans import Counts

if TYPE_CHECKING:
    from workers.protocol import Base

# Large enough that per-read Python overhead vanishes next to the search, small enough for RAM.
CHUNK_SIZE = 4 * 1024 * 1024

_EXPANSION = Expansion()

# A plain file is read only past a base at least this long: the two reads that check a base
# (its first and its last EDGE_BYTES) are then at most half of what they let go unread. A
# shorter base is checked on the way as the file is read whole, which costs no other read.
APPEND_MIN_BYTES = 4 * EDGE_BYTES


def count_fileobj(
    f: BinaryIO,
    matcher: ErrorMatcher,
    chunk_size: int = CHUNK_SIZE,
    size: int | None = None,
    expansion: Expansion = _EXPANSION,
    bases: Sequence[Base] = (),
) -> Counts:
    """Count a seekable binary file from its current position, decompressing by magic bytes.

    ``size``: the content's known size (from fstat). Reading stops once that much is read, so a
    small file costs one read; the caller then checks that the file has not changed.
    ``bases``: earlier versions the content may extend; the longest it extends is
    Counts.extends. The counts are the content's full counts all the same.
    """

    def rewind(consumed: int) -> BinaryIO:
        f.seek(-consumed, io.SEEK_CUR)
        return f

    usable = _usable(bases, len(matcher.counters))
    return _count(f.read, rewind, matcher, chunk_size, size, expansion, usable)


def count_fd(
    fd: int,
    matcher: ErrorMatcher,
    chunk_size: int = CHUNK_SIZE,
    size: int | None = None,
    expansion: Expansion = _EXPANSION,
    bases: Sequence[Base] = (),
) -> Counts:
    """``count_fileobj`` on an open file descriptor, read with os.read: no file object.

    A plain file of known ``size``, at its start, that extends a base of APPEND_MIN_BYTES or
    more is read only past the base's last complete line; Counts.bytes_read is then the bytes
    read, not the content's length.
    """

    def rewind(consumed: int) -> BinaryIO:
        os.lseek(fd, -consumed, os.SEEK_CUR)
        # closefd=False: the caller's descriptor stays open, and nothing is left to close.
        return open(fd, "rb", buffering=0, closefd=False)

    usable = _usable(bases, len(matcher.counters))
    if usable and size is not None:
        try:
            counts = _count_appended(fd, matcher, chunk_size, size, usable)
        except OSError:
            counts = None  # read whole instead, which meets a lasting error again and says so
        if counts is not None:
            return counts
    read = functools.partial(os.read, fd)
    return _count(read, rewind, matcher, chunk_size, size, expansion, usable)


def _count(
    read: Callable[[int], bytes],
    rewind: Callable[[int], BinaryIO],
    matcher: ErrorMatcher,
    chunk_size: int,
    size: int | None,
    expansion: Expansion,
    bases: list[Base],
) -> Counts:
    """The counting of a file: ``read(n)`` gives its next bytes, ``rewind(n)`` a file object
    at its start once n bytes were read (for a decompressor). Every base is checked on the
    way, with no other read."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
    first = read(chunk_size if size is None else max(1, min(chunk_size, size)))
    while 0 < len(first) < MAGIC_BYTES:  # enough to tell an archive, even in tiny reads
        more = read(MAGIC_BYTES - len(first))
        if not more:
            break
        first += more
    compression = detect_compression(first)
    pairs = [(base.version_id, base.fingerprint) for base in bases]
    if compression is None:
        fingerprint = Fingerprint()
        extension = Extension(pairs) if pairs else None
        if size is not None and len(first) >= size:
            fingerprint.feed(first)
            if extension is not None:
                extension.feed(first)
            counts = matcher.count_whole(first)
        else:
            chunks = fingerprint.fed(_plain_chunks(first, read, chunk_size, size))
            if extension is not None:
                chunks = extension.fed(chunks)
            counts = count_chunks(chunks, matcher)
        extended = 0 if extension is None else extension.extended()
        return replace(counts, fingerprint=fingerprint.digest(), extends=extended)
    if expansion.on_start is not None:
        expansion.on_start()
    return count_compressed(
        rewind(len(first)), compression, matcher, chunk_size, expansion.limit, pairs
    )


def _usable(bases: Sequence[Base], counters: int) -> list[Base]:
    """The bases that can be used at all: a version id, a fingerprint of content of at least
    one byte, and counts that could be a content's, one per counter (``counters`` of them:
    a base counted with other counters cannot give theirs). Any other is left out, as if not
    given, neither read past nor reported as extended: a base only ever saves reading, it
    never decides a count."""
    usable = []
    for base in bases:
        version_id, lines, error_lines = base.version_id, base.lines, base.error_lines
        parts = split(base.fingerprint)
        if (
            type(version_id) is int
            and version_id >= 1
            and parts is not None
            and type(lines) is int
            and type(error_lines) is int
            and 0 <= error_lines <= lines <= parts[0]
            and lines >= 1
            and _counts_fit(base.counts, counters, lines)
        ):
            usable.append(base)
    return usable


def _counts_fit(counts: object, counters: int, lines: int) -> bool:
    return (
        type(counts) is tuple
        and len(counts) == counters
        and all(type(count) is int and 0 <= count <= lines for count in counts)
    )


def _count_appended(
    fd: int, matcher: ErrorMatcher, chunk_size: int, size: int, bases: list[Base]
) -> Counts | None:
    """The counts of the plain file at ``fd`` (``size`` bytes) from the longest of ``bases``
    it extends, reading only past that base's last complete line; None when that does not
    apply (compressed content, no such base of APPEND_MIN_BYTES or more, a short read, any
    doubt): the file is then counted whole.

    With C the content, B the base, L its length and E the end of its last complete line,
    C[:L] is B's content, so C's counts are B's, less those of C[E:L] (B's unfinished last
    line, counted as B counted it), plus those of C[E:]; the same for each counter's count.
    """
    # Longest first, the first given among equals (sorted is stable).
    candidates = sorted(
        (base for base in bases if APPEND_MIN_BYTES <= _length(base) <= size),
        key=lambda base: -_length(base),
    )
    if not candidates or os.lseek(fd, 0, os.SEEK_CUR) != 0:
        return None
    head = os.pread(fd, EDGE_BYTES, 0)
    if len(head) != EDGE_BYTES or detect_compression(head) is not None:
        return None
    bytes_read = len(head)
    for base in candidates:
        length = _length(base)
        start = length - EDGE_BYTES
        window = os.pread(fd, EDGE_BYTES, start)
        bytes_read += len(window)
        if not extends(head, window, base.fingerprint):
            continue
        # A longer base was not extended: this is the longest one that is.
        newline = window.rfind(b"\n")
        if newline == -1:
            return None  # a line longer than the window: where it starts is not known
        return _count_past(
            fd, matcher, chunk_size, size, base, head, window, newline + 1, bytes_read
        )
    return None


def _count_past(
    fd: int,
    matcher: ErrorMatcher,
    chunk_size: int,
    size: int,
    base: Base,
    head: bytes,
    window: bytes,
    cut: int,
    bytes_read: int,
) -> Counts | None:
    """``_count_appended`` once ``base`` (of length L) is known to be extended: ``window`` is
    C[L - EDGE_BYTES:L], and C[L - EDGE_BYTES + cut:] is what is counted."""
    length = _length(base)
    start = length - EDGE_BYTES
    unfinished = window[cut:]  # C[E:L]: read already, so only C[L:] is read again
    read = 0

    def rest() -> Iterator[bytes]:
        nonlocal read
        yield unfinished
        at = length
        while at < size:
            chunk = os.pread(fd, min(chunk_size, size - at), at)
            if not chunk:
                return
            at += len(chunk)
            read += len(chunk)
            yield chunk

    # C's tail hash is the one a Fingerprint takes of C[E:] when that is EDGE_BYTES or longer,
    # else of C[size - EDGE_BYTES:], whose part before E the window holds (as size >= L).
    tail = Fingerprint()
    tail.feed(window[min(size - EDGE_BYTES - start, cut) : cut])
    counted = count_chunks(tail.fed(rest()), matcher)
    if read != size - length:
        return None  # the file is shorter than it was said to be: let the whole count tell
    before = matcher.count_whole(unfinished)
    lines = base.lines - before.lines + counted.lines
    error_lines = base.error_lines - before.error_lines + counted.error_lines
    if before.lines > base.lines or before.error_lines > base.error_lines:
        return None
    if not 0 <= error_lines <= lines <= size:
        return None
    counts = tuple(
        had - less + more
        for had, less, more in zip(base.counts, before.counts, counted.counts, strict=True)
    )
    if not all(0 <= count <= lines for count in counts):
        return None
    return Counts(
        lines,
        error_lines,
        bytes_read + read,
        long_lines=counted.long_lines,
        samples=counted.samples,
        counts=counts,
        fingerprint=join(size, edge_hash(head), tail.digest()[-HASH_BYTES:]),
        extends=base.version_id,
    )


def _length(base: Base) -> int:
    """The length of a usable base's content."""
    parts = split(base.fingerprint)
    assert parts is not None
    return parts[0]


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


def compressed(fd: int) -> bool:
    """Whether the open file's first bytes are those of a compressed format."""
    return detect_compression(os.pread(fd, MAGIC_BYTES, 0)) is not None


def complete_lines_end(fd: int, size: int, window: int = 64 * 1024) -> int:
    """Where the last complete line of the open file's first ``size`` bytes ends (after its
    ``\n``); 0 if they hold none. Read backwards from ``size``, a window at a time."""
    end = size
    while end > 0:
        start = max(0, end - window)
        data = os.pread(fd, end - start, start)
        if len(data) != end - start:
            raise CountError("the file is shorter than when it was queued")
        newline = data.rfind(b"\n")
        if newline != -1:
            return start + newline + 1
        end = start
    return 0


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
