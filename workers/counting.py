"""The counting engine: lines and error lines of one file's bytes, in bounded memory.

Pure: no logging setup, no processes, no global state. The rules are docs/counting.md;
``ErrorMatcher`` compiles them once and ``count_path`` / ``count_fd`` / ``count_fileobj`` /
``count_chunks`` apply them to a file, a descriptor, an open binary file or byte chunks.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import io
import lzma
import os
import re
import stat
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import BinaryIO, Protocol

from workers.common import ENGINES, MAX_EXPANDED_BYTES, format_size
from workers.errors import ConfigError, CountError

# The optional accelerators: `pip install 'logdispatch[fast]'`.
try:
    import hyperscan
except ImportError:  # pragma: no cover - the default install
    hyperscan = None  # type: ignore[assignment]
try:
    import stringzilla
except ImportError:  # pragma: no cover - the default install
    stringzilla = None

# The error pattern every component uses unless the operator sets --error-pattern.
DEFAULT_ERROR_PATTERN: bytes = rb"\b(?:ERROR|FATAL|CRITICAL)\b"
# Large enough that per-read Python overhead vanishes next to the search, small enough for RAM.
CHUNK_SIZE = 4 * 1024 * 1024
# A general regex sees at most this much of one line, so one huge line cannot exhaust memory.
LONG_LINE_LIMIT = 1024 * 1024
# Enough examples for an operator to recognise the errors without shipping the log.
SAMPLE_LINES = 3
# Keeps results small on the wire whatever the line length.
SAMPLE_BYTES = 200

# ``\b`` in a bytes regex is the edge between [A-Za-z0-9_] and anything else.
_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_WORD = rb"[A-Za-z0-9_]+"
_ALTERNATION = _WORD + rb"(?:\|" + _WORD + rb")*"
# Pattern shapes whose matches are exactly "one of these words occurs (as a whole word)".
_LITERAL_SHAPES: tuple[tuple[re.Pattern[bytes], bool], ...] = (
    (re.compile(rb"\\b\(\?:(" + _ALTERNATION + rb")\)\\b"), True),
    (re.compile(rb"\\b\((" + _ALTERNATION + rb")\)\\b"), True),
    (re.compile(rb"\\b(" + _WORD + rb")\\b"), True),
    (re.compile(rb"(" + _ALTERNATION + rb")"), False),
)

_DECOMPRESSORS: dict[str, Callable[[BinaryIO], io.BufferedIOBase]] = {
    "gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
    "bzip2": bz2.BZ2File,
    "xz": lzma.LZMAFile,
}
_COMPRESSION_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)
# What the stdlib decompressors raise on damaged or truncated input.
_CORRUPT_ERRORS = (EOFError, zlib.error, lzma.LZMAError, OSError)


@dataclass(frozen=True, slots=True)
class Counts:
    """What counting one file found."""

    lines: int
    error_lines: int
    bytes_read: int  # content bytes: the decompressed size for archives
    long_lines: int = 0  # lines a general regex saw only the first long_line_limit bytes of
    compression: str | None = None  # "gzip" | "bzip2" | "xz" | None
    samples: tuple[bytes, ...] = ()  # first error lines: no "\n", one "\r" stripped, truncated


class _Scan(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> Counts: ...

    def close(self) -> None:
        """Release what the scan holds, whether or not it finished; may be called twice."""


class ErrorMatcher:
    """Compiled counting rules; build once, reuse for many files.

    A pattern that is an alternation of literal words (``\\b(?:W1|W2)\\b``, ``\\b(W1|W2)\\b``,
    ``\\bW\\b`` or ``W1|W2``) takes a literal path that is exact on lines of any length:
    hyperscan (one pass for all words) when installed, else ``bytes.find`` on whole buffers.
    Any other pattern goes through ``re`` line by line, on at most the first
    ``long_line_limit`` bytes of each line. Appending ``(?#general)`` to a literal pattern
    forces the general path without changing what it matches.

    ``engine``: "auto" (the accelerators that are installed), "python" (the standard library
    only) or "hyperscan" (required: a ConfigError when it is not installed). It decides how
    literal patterns are searched, and whether newlines are counted by stringzilla (with
    "auto" or "hyperscan", when installed) or by ``bytes.count``: no engine changes what any
    pattern counts.
    """

    __slots__ = ("_block", "_bounded", "_database", "_limit", "_newlines", "_regex", "_words")

    def __init__(
        self,
        pattern: bytes = DEFAULT_ERROR_PATTERN,
        *,
        long_line_limit: int = LONG_LINE_LIMIT,
        engine: str = "auto",
    ) -> None:
        if long_line_limit < 1:
            raise ValueError(f"long_line_limit must be at least 1, not {long_line_limit}")
        check_engine(engine)
        self._regex = re.compile(pattern)
        self._limit = long_line_limit
        self._words: tuple[bytes, ...] | None = None
        self._bounded = False
        self._database: hyperscan.Database | None = None  # for streams of chunks
        self._block: hyperscan.Database | None = None  # for content read in one piece
        for shape, bounded in _LITERAL_SHAPES:
            found = shape.fullmatch(pattern)
            if found:
                self._words = tuple(dict.fromkeys(found[1].split(b"|")))
                self._bounded = bounded
                break
        if self._words is not None and engine != "python" and hyperscan is not None:
            self._database = _compile_hyperscan(self._words, self._bounded, stream=True)
            self._block = _compile_hyperscan(self._words, self._bounded, stream=False)
        self._newlines = _count_newlines
        if engine != "python" and stringzilla is not None:
            self._newlines = _count_newlines_simd

    @property
    def pattern(self) -> bytes:
        return self._regex.pattern

    @property
    def long_line_limit(self) -> int:
        return self._limit

    @property
    def literal_words(self) -> tuple[bytes, ...] | None:
        """The words of the literal fast path, or None when the general regex path is used."""
        return self._words

    @property
    def word_bounded(self) -> bool:
        """Whether the literal words must stand as whole words (the ``\\b...\\b`` shapes)."""
        return self._bounded

    @property
    def engine(self) -> str:
        """What searches this pattern: "hyperscan", "literal" (bytes.find) or "regex"."""
        if self._database is not None:
            return "hyperscan"
        return "literal" if self._words is not None else "regex"

    @property
    def newline_counter(self) -> str:
        """What counts the lines: "stringzilla" or "bytes.count"."""
        return "stringzilla" if self._newlines is _count_newlines_simd else "bytes.count"

    def __repr__(self) -> str:
        return (
            f"ErrorMatcher({self.pattern!r}, long_line_limit={self._limit}, {self.engine}, "
            f"{self.newline_counter})"
        )

    def _count_whole(self, content: bytes) -> Counts:
        """Count content known to be complete (a small file read in one piece)."""
        if self._block is None:
            return count_chunks((content,), self)
        error_lines = 0
        ends: list[int] = []

        def on_line(_id: int, _start: int, end: int, _flags: int, _context: object) -> None:
            nonlocal error_lines
            error_lines += 1
            if error_lines <= SAMPLE_LINES:
                ends.append(end)

        self._block.scan(content, match_event_handler=on_line)
        lines = self._newlines(content) + (bool(content) and content[-1] != 0x0A)
        samples = tuple(_sample_ending_at(content, end, b"") for end in ends)
        return Counts(lines, error_lines, len(content), samples=samples)

    def _scan(self) -> _Scan:
        if self._database is not None:
            return _HyperscanScan(self._database, self._newlines)
        if self._words is not None:
            return _LiteralScan(self._words, self._bounded, self._newlines)
        return _RegexScan(self._regex, self._limit, self._newlines)


def _count_newlines(buf: bytes) -> int:
    return buf.count(b"\n")  # a byte at a time: stringzilla's SIMD count is faster


def _count_newlines_simd(buf: bytes) -> int:
    return int(stringzilla.count(buf, b"\n"))


def check_engine(engine: str) -> None:
    """ValueError for an unknown engine, ConfigError for hyperscan when it is not installed."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "hyperscan" and hyperscan is None:
        raise ConfigError("the hyperscan engine is not installed: pip install 'logdispatch[fast]'")


def _compile_hyperscan(words: tuple[bytes, ...], bounded: bool, stream: bool) -> hyperscan.Database:
    """A database that reports each line holding a word once, where the line ends.

    A line's report is the end of ``WORD[^\\n]*\\n`` (or ``\\z`` for a last line without one):
    hyperscan reports a pattern once per end offset, so a line with several words is reported
    once, and one call per error line is cheaper than one per word. Without the UTF-8 and UCP
    flags, ``\\b`` is the ASCII word boundary of a bytes regex in ``re``; the words are
    [A-Za-z0-9_]+, so they need no escaping and never hold a newline.
    """
    word = b"(?:" + b"|".join(words) + b")"
    if bounded:
        word = rb"\b" + word + rb"\b"
    database = hyperscan.Database(
        mode=hyperscan.HS_MODE_STREAM if stream else hyperscan.HS_MODE_BLOCK
    )
    database.compile(expressions=[word + rb"[^\n]*\n", word + rb"[^\n]*\z"], ids=[0, 1], elements=2)
    return database


def _sample(start: bytes | bytearray) -> bytes:
    """A sample from a complete line's first SAMPLE_BYTES + 1 bytes (or all of a shorter line)."""
    if start.endswith(b"\r"):
        start = start[:-1]
    return bytes(start[:SAMPLE_BYTES])


class _LiteralScan:
    """Streaming state of the literal fast path.

    The line that continues past the current chunk (the "open" line) is carried as: whether it
    has matched, its first bytes for a sample, and a tail of its last max-word-length + 1 bytes,
    which is enough to find a word split across chunks and the byte before it.
    """

    def __init__(
        self, words: tuple[bytes, ...], bounded: bool, newlines: Callable[[bytes], int]
    ) -> None:
        self._words = words
        self._newlines = newlines
        self._bounded = bounded
        self._keep = max(map(len, words)) + 1
        self._lines = 0
        self._error_lines = 0
        self._bytes_read = 0
        self._samples: list[bytes] = []
        self._ends_open = False  # the content so far is non-empty and does not end in "\n"
        self._matched = False  # the open line has matched
        self._tail = b""  # last self._keep bytes of the open line (empty once it matched)
        self._tail_is_whole = True  # the tail starts where the open line starts
        self._head = b""  # first SAMPLE_BYTES + 1 bytes of the open line

    def _search(self, buf: bytes, start: int, stop: int, prev_is_word: bool) -> set[int]:
        """Starts of the lines in buf[start:stop] holding a word; byte before buf[0] given."""
        starts: set[int] = set()
        bounded = self._bounded
        # A bounded hit needs the byte after it to decide, so it must end before buf does.
        end = len(buf) - 1 if bounded else len(buf)
        for word in self._words:
            size = len(word)
            at = buf.find(word, start, end)
            while at != -1 and at < stop:
                after = at + size
                if bounded and (
                    (buf[at - 1] in _WORD_BYTES if at else prev_is_word)
                    or buf[after] in _WORD_BYTES
                ):
                    at = buf.find(word, at + 1, end)
                    continue
                starts.add(buf.rfind(b"\n", 0, at) + 1)
                # One hit decides a line: skip to the next one.
                newline = buf.find(b"\n", after)
                if newline == -1:
                    break
                at = buf.find(word, newline + 1, end)
        return starts

    def feed(self, chunk: bytes) -> None:
        size = len(chunk)
        if not size:
            return
        self._bytes_read += size
        self._lines += self._newlines(chunk)
        self._ends_open = chunk[-1] != 0x0A
        first_newline = chunk.find(b"\n")
        last_newline = chunk.rfind(b"\n") if first_newline != -1 else -1
        was_matched = self._matched
        open_matched = was_matched
        tail = self._tail
        if was_matched:
            # The open line is decided: only lines after its end are searched.
            starts = set()
            if first_newline != -1:
                starts = self._search(chunk, first_newline + 1, size, False)
        else:
            if tail:
                # A word starting in the tail that runs into this chunk, or whose closing \b
                # depends on this chunk's first byte. A cut tail's first byte has an unknown
                # byte before it, but any word starting there was decided by the last chunk.
                junction = tail + chunk[: self._keep]
                start = 0 if self._tail_is_whole else 1
                open_matched = bool(self._search(junction, start, len(tail), False))
            starts = self._search(chunk, 0, size, bool(tail) and tail[-1] in _WORD_BYTES)
            if 0 in starts:
                open_matched = True
                starts.discard(0)
        self._error_lines += len(starts) + (open_matched and not was_matched)
        self._take_samples(chunk, starts, open_matched, first_newline, last_newline)
        if first_newline == -1:
            self._matched = open_matched
            if open_matched:
                self._tail = b""
            else:
                self._extend_tail(chunk)
            return
        line_start = last_newline + 1
        self._matched = line_start in starts
        if self._matched:
            self._tail = b""
        else:
            self._tail = chunk[max(line_start, size - self._keep) :]
            self._tail_is_whole = size - line_start <= self._keep

    def _extend_tail(self, chunk: bytes) -> None:
        """Carry the open line's tail across a chunk that holds no newline."""
        keep = self._keep
        if len(self._tail) + len(chunk) <= keep:
            self._tail += chunk
        else:
            self._tail = (self._tail + chunk[-keep:])[-keep:]
            self._tail_is_whole = False

    def _take_samples(
        self,
        chunk: bytes,
        starts: set[int],
        open_matched: bool,
        first_newline: int,
        last_newline: int,
    ) -> None:
        samples = self._samples
        if len(samples) >= SAMPLE_LINES:
            return
        want = SAMPLE_BYTES + 1
        if first_newline == -1:
            self._head = _next_head(self._head, chunk, last_newline)
            return
        if open_matched:
            samples.append(_sample(self._head + chunk[: min(first_newline, want)]))
        line_start = last_newline + 1
        for start in sorted(starts):
            if len(samples) >= SAMPLE_LINES or start == line_start:
                break
            stop = chunk.find(b"\n", start, start + want)
            samples.append(_sample(chunk[start : stop if stop != -1 else start + want]))
        self._head = _next_head(self._head, chunk, last_newline)

    def finish(self) -> Counts:
        if self._ends_open:
            self._lines += 1
            tail = self._tail
            if not self._matched and self._bounded and tail:
                # Words ending the content: the end of the line is a word boundary.
                for word in self._words:
                    at = len(tail) - len(word)
                    if tail.endswith(word) and (
                        tail[at - 1] not in _WORD_BYTES if at > 0 else self._tail_is_whole
                    ):
                        self._matched = True
                        self._error_lines += 1
                        break
            if self._matched and len(self._samples) < SAMPLE_LINES:
                self._samples.append(_sample(self._head))
        return Counts(
            lines=self._lines,
            error_lines=self._error_lines,
            bytes_read=self._bytes_read,
            samples=tuple(self._samples),
        )

    def close(self) -> None:
        pass


class _RegexScan:
    """Streaming state of the general regex path: complete lines are searched one by one."""

    def __init__(
        self, regex: re.Pattern[bytes], limit: int, newlines: Callable[[bytes], int]
    ) -> None:
        self._search = regex.search
        self._newlines = newlines
        self._limit = limit
        # The open line is kept up to what its search and its sample need, never more.
        self._keep = max(limit, SAMPLE_BYTES) + 1
        self._lines = 0
        self._error_lines = 0
        self._bytes_read = 0
        self._long_lines = 0
        self._samples: list[bytes] = []
        self._open = bytearray()  # first self._keep bytes of the open line
        self._open_size = 0
        self._open_last = -1  # last byte of the open line, to strip a "\r" never kept

    def _extend(self, piece: bytes) -> None:
        if not piece:
            return
        room = self._keep - len(self._open)
        if room > 0:
            self._open += piece[:room]
        self._open_size += len(piece)
        self._open_last = piece[-1]

    def _close_open_line(self) -> None:
        size = self._open_size - (self._open_last == 0x0D)
        if size > self._limit:
            self._long_lines += 1
            size = self._limit
        # endpos, unlike pos, makes the regex see the buffer as if it ended there.
        if self._search(self._open, 0, size) is not None:
            self._error_lines += 1
            if len(self._samples) < SAMPLE_LINES:
                self._samples.append(_sample(self._open[: SAMPLE_BYTES + 1]))
        self._open = bytearray()
        self._open_size = 0
        self._open_last = -1

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self._bytes_read += len(chunk)
        newlines = self._newlines(chunk)
        if not newlines:
            self._extend(chunk)
            return
        self._lines += newlines
        pieces = chunk.split(b"\n")
        self._extend(pieces[0])
        self._close_open_line()
        search = self._search
        limit = self._limit
        samples = self._samples
        error_lines = 0
        for line in pieces[1:-1]:
            size = len(line)
            if size and line[-1] == 0x0D:
                size -= 1
            if size > limit:
                self._long_lines += 1
                size = limit
            if search(line, 0, size) is not None:
                error_lines += 1
                if len(samples) < SAMPLE_LINES:
                    samples.append(_sample(line[: SAMPLE_BYTES + 1]))
        self._error_lines += error_lines
        self._extend(pieces[-1])

    def finish(self) -> Counts:
        if self._open_size:
            self._lines += 1
            self._close_open_line()
        return Counts(
            lines=self._lines,
            error_lines=self._error_lines,
            bytes_read=self._bytes_read,
            long_lines=self._long_lines,
            samples=tuple(self._samples),
        )

    def close(self) -> None:
        pass


def _head_room(head: bytes, stop: int) -> int:
    """How many bytes up to *stop* an open line's ``head`` still takes for a sample."""
    return min(stop, max(0, SAMPLE_BYTES + 1 - len(head)))


def _next_head(head: bytes, chunk: bytes, last_newline: int) -> bytes:
    """The first SAMPLE_BYTES + 1 bytes of the line open after ``chunk``, given those of the
    line open before it (``head``) and the chunk's last "\n" (-1 if none)."""
    if last_newline == -1:
        return head + chunk[: _head_room(head, len(chunk))]
    return chunk[last_newline + 1 : last_newline + 2 + SAMPLE_BYTES]


def _sample_ending_at(chunk: bytes, end: int, head: bytes) -> bytes:
    """The sample of the line hyperscan reported at ``end`` in ``chunk``: after its "\n", or at
    the end of the content; ``head``: the first bytes of a line that began in earlier chunks."""
    stop = end - 1 if chunk[end - 1] == 0x0A else end
    start = chunk.rfind(b"\n", 0, stop) + 1
    if start == 0:  # the line began in an earlier chunk (or begins the content)
        return _sample(head + chunk[: _head_room(head, stop)])
    return _sample(chunk[start : min(stop, start + SAMPLE_BYTES + 1)])


class _HyperscanScan:
    """Streaming state of the literal path on hyperscan.

    The database reports each error line once, at its end (see _compile_hyperscan), whatever
    the chunks: one stream sees the whole content, so a word split across chunks or ending the
    content is hyperscan's business. The first SAMPLE_LINES reports are noted for samples.
    """

    def __init__(self, database: hyperscan.Database, newlines: Callable[[bytes], int]) -> None:
        self._newlines = newlines
        self._lines = 0
        self._error_lines = 0
        self._bytes_read = 0
        self._samples: list[bytes] = []
        self._chunk = b""  # the chunk being scanned
        self._base = 0  # stream offset of self._chunk[0]
        self._marks: list[int] = []  # ends, in self._chunk, of error lines to sample
        self._head = b""  # first SAMPLE_BYTES + 1 bytes of the line open where self._chunk starts
        self._ends_open = False
        # The binding keeps borrowed references to the database and the handler: hold both.
        self._database = database
        self._handler = self._on_line
        self._stream: hyperscan.Stream | None = database.stream(
            match_event_handler=self._handler
        ).__enter__()

    def _on_line(self, _id: int, _start: int, end: int, _flags: int, _context: object) -> None:
        # Called once per error line, so kept to the least: noting a sample is rare.
        self._error_lines += 1
        if self._error_lines <= SAMPLE_LINES:
            self._marks.append(end - self._base)

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        assert self._stream is not None, "feed() after finish()"
        self._advance_head()
        self._base += len(self._chunk)
        self._chunk = chunk
        self._bytes_read += len(chunk)
        self._lines += self._newlines(chunk)
        self._ends_open = chunk[-1] != 0x0A
        self._stream.scan(chunk)
        if self._marks:
            self._take_samples()

    def _advance_head(self) -> None:
        """Move self._head past the current chunk, before the next one is fed."""
        self._head = _next_head(self._head, self._chunk, self._chunk.rfind(b"\n"))

    def _take_samples(self) -> None:
        self._samples.extend(_sample_ending_at(self._chunk, end, self._head) for end in self._marks)
        self._marks = []

    def finish(self) -> Counts:
        self.close()  # reports an error line that ends the content without a "\n"
        self._take_samples()
        if self._ends_open:
            self._lines += 1
        return Counts(
            lines=self._lines,
            error_lines=self._error_lines,
            bytes_read=self._bytes_read,
            samples=tuple(self._samples),
        )

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()


def count_chunks(chunks: Iterable[bytes], matcher: ErrorMatcher) -> Counts:
    """Count a stream of content split into chunks of any sizes."""
    scan = matcher._scan()
    try:
        for chunk in chunks:
            scan.feed(chunk)
        return scan.finish()
    finally:
        scan.close()


def _detect_compression(magic: bytes) -> str | None:
    for prefix, name in _COMPRESSION_MAGIC:
        if magic.startswith(prefix):
            return name
    return None


@dataclass(frozen=True, slots=True)
class Expansion:
    """How far compressed content may expand, and who hears when it is about to.

    ``limit``: the most decompressed bytes of one file; more is refused as a decompression bomb.
    ``on_start``: called once content is found compressed, before it is decompressed: its
    counting may take long, so a caller holding results of other files sends them first.
    """

    limit: int = MAX_EXPANDED_BYTES
    on_start: Callable[[], None] | None = None


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


_MAGIC_BYTES = max(len(magic) for magic, _ in _COMPRESSION_MAGIC)


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
    while 0 < len(first) < _MAGIC_BYTES:  # enough to tell an archive, even in tiny reads
        more = read(_MAGIC_BYTES - len(first))
        if not more:
            break
        first += more
    compression = _detect_compression(first)
    if compression is None:
        if size is not None and len(first) >= size:
            return matcher._count_whole(first)
        return count_chunks(_plain_chunks(first, read, chunk_size, size), matcher)
    if expansion.on_start is not None:
        expansion.on_start()
    f = rewind(len(first))
    try:
        with _DECOMPRESSORS[compression](f) as stream:
            chunks = _expanded_chunks(stream, chunk_size, expansion.limit, compression)
            counts = count_chunks(chunks, matcher)
    except _CORRUPT_ERRORS as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # a real I/O error of the underlying file, not bad data
        reason = " ".join(str(e).split()) or type(e).__name__
        raise CountError(f"corrupt {compression} data: {reason}") from None
    return replace(counts, compression=compression)


def _expanded_chunks(
    stream: io.BufferedIOBase, chunk_size: int, limit: int, compression: str
) -> Iterator[bytes]:
    """The decompressed content, refused (CountError) once it passes ``limit`` bytes.

    read(n) returns at most n decompressed bytes: a bomb exhausts neither memory nor, past the
    limit, time; reading stops one byte past it, so content of exactly ``limit`` bytes passes.
    """
    done = 0
    while chunk := stream.read(min(chunk_size, limit + 1 - done)):
        done += len(chunk)
        if done > limit:
            raise CountError(
                f"{compression} data expands past {format_size(limit)} (--max-expanded): "
                "refused as a decompression bomb"
            )
        yield chunk


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
