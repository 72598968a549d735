"""The streaming scans of content: lines, error lines, samples and counters, chunk by chunk.

One scan per way of searching the error pattern (docs/counting.md): the literal words on
``bytes.find``, the literal words on hyperscan (``workers.hyperscanning``, which shares the
counts, the samples and their helpers here), and a general regex line by line. Each takes
the content in chunks of any sizes and keeps only what the line still open at a chunk's end
needs. The named counters ride along: literal ones in the hyperscan database, general ones in
the regex scan's split of the lines; ``CombinedScan`` feeds one content to several scans where
one alone cannot count everything. ``workers.matching.ErrorMatcher`` picks the scans.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

# Enough examples for an operator to recognise the errors without shipping the log.
SAMPLE_LINES = 3
# Keeps results small on the wire whatever the line length.
SAMPLE_BYTES = 200

# ``\b`` in a bytes regex is the edge between [A-Za-z0-9_] and anything else.
_WORD_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


@dataclass(frozen=True, slots=True)
class Counts:
    """What counting one file found."""

    lines: int
    error_lines: int
    # Content bytes: the decompressed size for archives. Read only past an earlier version
    # (workers.counting's bases): the bytes read from the file, fewer than the content has.
    bytes_read: int
    long_lines: int = 0  # lines a general regex saw only the first long_line_limit bytes of
    compression: str | None = None  # "gzip" | "bzip2" | "xz" | "zstd" | None
    samples: tuple[bytes, ...] = ()  # first error lines: no "\n", one "\r" stripped, truncated
    # The lines each named counter matched, in the order of ErrorMatcher.counter_names.
    counts: tuple[int, ...] = ()
    # The content's (workers.fingerprint), b"" where none was taken. Left out of ==: counts are
    # the same counts whatever content they were found in.
    fingerprint: bytes = field(default=b"", compare=False)
    # The version id of the earlier version the content extends (workers.counting's bases), 0
    # for none: left out of == as the fingerprint is.
    extends: int = field(default=0, compare=False)


class Scan(Protocol):
    def feed(self, chunk: bytes) -> None: ...

    def finish(self) -> Counts: ...

    def close(self) -> None:
        """Release what the scan holds, whether or not it finished; may be called twice."""


def line_sample(start: bytes | bytearray) -> bytes:
    """A sample from a complete line's first SAMPLE_BYTES + 1 bytes (or all of a shorter line)."""
    if start.endswith(b"\r"):
        start = start[:-1]
    return bytes(start[:SAMPLE_BYTES])


class LiteralScan:
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
            self._head = next_head(self._head, chunk, last_newline)
            return
        if open_matched:
            samples.append(line_sample(self._head + chunk[: min(first_newline, want)]))
        line_start = last_newline + 1
        for start in sorted(starts):
            if len(samples) >= SAMPLE_LINES or start == line_start:
                break
            stop = chunk.find(b"\n", start, start + want)
            samples.append(line_sample(chunk[start : stop if stop != -1 else start + want]))
        self._head = next_head(self._head, chunk, last_newline)

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
                self._samples.append(line_sample(self._head))
        return Counts(
            lines=self._lines,
            error_lines=self._error_lines,
            bytes_read=self._bytes_read,
            samples=tuple(self._samples),
        )

    def close(self) -> None:
        pass


class RegexScan:
    """Streaming state of the general regex path: complete lines are searched one by one.

    ``regex``: the error pattern, or None when only counters are searched here.
    ``counters``: (counter index, regex) of the general-regex counters, searched on the same
    lines; Counts.counts then has ``size`` entries, zero for the counters searched elsewhere.
    """

    def __init__(
        self,
        regex: re.Pattern[bytes] | None,
        limit: int,
        newlines: Callable[[bytes], int],
        counters: Sequence[tuple[int, re.Pattern[bytes]]] = (),
        size: int = 0,
    ) -> None:
        self._search = regex.search if regex is not None else _never
        self._counters = tuple((index, counter.search) for index, counter in counters)
        self._counts = [0] * size
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
                self._samples.append(line_sample(self._open[: SAMPLE_BYTES + 1]))
        for index, search in self._counters:
            if search(self._open, 0, size) is not None:
                self._counts[index] += 1
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
        if self._counters:
            self._search_with_counters(pieces)
            self._extend(pieces[-1])
            return
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
                    samples.append(line_sample(line[: SAMPLE_BYTES + 1]))
        self._error_lines += error_lines
        self._extend(pieces[-1])

    def _search_with_counters(self, pieces: list[bytes]) -> None:
        """The complete lines of one chunk, searched by the error pattern and every counter:
        a loop of its own, so that the error pattern alone keeps the lean one above."""
        search = self._search
        counters = self._counters
        counts = self._counts
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
                    samples.append(line_sample(line[: SAMPLE_BYTES + 1]))
            for index, counter in counters:
                if counter(line, 0, size) is not None:
                    counts[index] += 1
        self._error_lines += error_lines

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
            counts=tuple(self._counts),
        )

    def close(self) -> None:
        pass


def _never(_line: bytes | bytearray, _pos: int, _endpos: int) -> None:
    """The search of a regex scan that holds counters only."""
    return None


def head_room(head: bytes, stop: int) -> int:
    """How many bytes up to *stop* an open line's ``head`` still takes for a sample."""
    return min(stop, max(0, SAMPLE_BYTES + 1 - len(head)))


def next_head(head: bytes, chunk: bytes, last_newline: int) -> bytes:
    """The first SAMPLE_BYTES + 1 bytes of the line open after ``chunk``, given those of the
    line open before it (``head``) and the chunk's last "\n" (-1 if none)."""
    if last_newline == -1:
        return head + chunk[: head_room(head, len(chunk))]
    return chunk[last_newline + 1 : last_newline + 2 + SAMPLE_BYTES]


class CombinedScan:
    """Several scans of the same content: the first counts lines and error lines and takes
    samples; the others only count counters. ``singles`` maps the position of a scan that
    searches one counter as its error pattern (a literal counter on ``bytes.find``) to that
    counter's index; any other scan's Counts.counts has ``size`` entries, added up."""

    def __init__(self, scans: Sequence[Scan], size: int, singles: dict[int, int]) -> None:
        self._scans = tuple(scans)
        self._size = size
        self._singles = singles

    def feed(self, chunk: bytes) -> None:
        for scan in self._scans:
            scan.feed(chunk)

    def finish(self) -> Counts:
        results = [scan.finish() for scan in self._scans]
        counts = [0] * self._size
        for position, result in enumerate(results):
            single = self._singles.get(position)
            if single is not None:
                counts[single] += result.error_lines
            else:
                for index, count in enumerate(result.counts):
                    counts[index] += count
        # At most one of them is a regex scan, the one that sees long lines.
        long_lines = max(result.long_lines for result in results)
        return replace(results[0], long_lines=long_lines, counts=tuple(counts))

    def close(self) -> None:
        for scan in self._scans:
            scan.close()
