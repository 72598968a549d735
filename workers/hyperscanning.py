"""The streaming scan of the literal path on hyperscan: one hyperscan stream sees the whole
content, with the error pattern's words and the literal counters in one database
(``workers.matching`` builds it and picks the scans).

Apart from the standard library's scans (``workers.scans``, whose counts, samples and helpers
it shares) because it is the one scan that drives hyperscan, the optional [fast] extra.
``sample_ending_at`` makes a sample of a line hyperscan reported by its end, for this scan and
for ``workers.matching``'s search of content read in one piece.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from workers.scans import SAMPLE_BYTES, SAMPLE_LINES, Counts, head_room, line_sample, next_head

if TYPE_CHECKING:
    import hyperscan


def sample_ending_at(chunk: bytes, end: int, head: bytes) -> bytes:
    """The sample of the line hyperscan reported at ``end`` in ``chunk``: after its "\n", or at
    the end of the content; ``head``: the first bytes of a line that began in earlier chunks."""
    stop = end - 1 if chunk[end - 1] == 0x0A else end
    start = chunk.rfind(b"\n", 0, stop) + 1
    if start == 0:  # the line began in an earlier chunk (or begins the content)
        return line_sample(head + chunk[: head_room(head, stop)])
    return line_sample(chunk[start : min(stop, start + SAMPLE_BYTES + 1)])


class HyperscanScan:
    """Streaming state of the literal path on hyperscan.

    The database reports each error line once, at its end (see ``workers.matching``), whatever
    the chunks: one stream sees the whole content, so a word split across chunks or ending the
    content is hyperscan's business. The first SAMPLE_LINES reports are noted for samples.

    With ``size`` counters, ids 0 and 1 are the error pattern's and ids 2 + 2i and 3 + 2i
    counter i's (``workers.matching``); Counts.counts has ``size`` entries, zero for the
    counters searched elsewhere.
    """

    def __init__(
        self, database: hyperscan.Database, newlines: Callable[[bytes], int], size: int = 0
    ) -> None:
        self._newlines = newlines
        self._counts = [0] * size
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
        self._handler = self._on_report if size else self._on_line
        self._stream: hyperscan.Stream | None = database.stream(
            match_event_handler=self._handler
        ).__enter__()

    def _on_line(self, _id: int, _start: int, end: int, _flags: int, _context: object) -> None:
        # Called once per error line, so kept to the least: noting a sample is rare.
        self._error_lines += 1
        if self._error_lines <= SAMPLE_LINES:
            self._marks.append(end - self._base)

    def _on_report(self, id: int, start: int, end: int, flags: int, context: object) -> None:
        # A report of a counter's line, or else the error pattern's.
        if id > 1:
            self._counts[(id >> 1) - 1] += 1
        else:
            self._on_line(id, start, end, flags, context)

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
        self._head = next_head(self._head, self._chunk, self._chunk.rfind(b"\n"))

    def _take_samples(self) -> None:
        self._samples.extend(sample_ending_at(self._chunk, end, self._head) for end in self._marks)
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
            counts=tuple(self._counts),
        )

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
