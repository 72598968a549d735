"""Matching the error pattern and the named counters: ``ErrorMatcher`` compiles them once,
for the engine chosen.

A literal pattern is searched with hyperscan or ``bytes.find``, any other with ``re``;
newlines are counted by stringzilla or ``bytes.count`` (docs/counting.md, "Error lines" and
"Named counters"). ``count_chunks`` applies a matcher to content in chunks, through the scans
it picks (``workers.scans``, ``workers.hyperscanning``). ``check_counters`` is the one check of
counters, for both ends.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from workers.common import COUNTER_NAME, ENGINES, MAX_COUNTERS, install_hint, printable
from workers.errors import ConfigError
from workers.hyperscanning import HyperscanScan, sample_ending_at
from workers.scans import (
    SAMPLE_LINES,
    CombinedScan,
    Counts,
    LiteralScan,
    RegexScan,
    Scan,
)

# The optional accelerators: the [fast] extra (workers.common.install_hint).
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
# A general regex sees at most this much of one line, so one huge line cannot exhaust memory.
LONG_LINE_LIMIT = 1024 * 1024

_WORD = rb"[A-Za-z0-9_]+"
_ALTERNATION = _WORD + rb"(?:\|" + _WORD + rb")*"
# Pattern shapes whose matches are exactly "one of these words occurs (as a whole word)".
_LITERAL_SHAPES: tuple[tuple[re.Pattern[bytes], bool], ...] = (
    (re.compile(rb"\\b\(\?:(" + _ALTERNATION + rb")\)\\b"), True),
    (re.compile(rb"\\b\((" + _ALTERNATION + rb")\)\\b"), True),
    (re.compile(rb"\\b(" + _WORD + rb")\\b"), True),
    (re.compile(rb"(" + _ALTERNATION + rb")"), False),
)

Counters = tuple[tuple[str, bytes], ...]


def check_counters(pairs: Iterable[tuple[str, bytes]]) -> Counters:
    """The (name, pattern) pairs as a tuple, or a ConfigError naming the first counter that is
    wrong: a bad name, a name given twice, more than MAX_COUNTERS, a pattern ``re`` refuses."""
    counters: list[tuple[str, bytes]] = []
    names: set[str] = set()
    for pair in pairs:
        if type(pair) is not tuple or len(pair) != 2:
            raise ConfigError("a counter is a (name, pattern) pair")
        name, pattern = pair
        shown = printable(repr(name)[:40])
        if type(name) is not str or not COUNTER_NAME.fullmatch(name):
            raise ConfigError(
                f"counter name {shown}: a name is a lower-case letter, then at most 31 "
                "lower-case letters, digits or _"
            )
        if name in names:
            raise ConfigError(f"counter {name}: given twice")
        if len(counters) == MAX_COUNTERS:
            raise ConfigError(f"counter {name}: at most {MAX_COUNTERS} counters may be given")
        if type(pattern) is not bytes:
            raise ConfigError(f"counter {name}: its pattern must be bytes")
        try:
            re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"counter {name}: not a valid regex: {e}") from None
        names.add(name)
        counters.append((name, pattern))
    return tuple(counters)


def _literal_shape(pattern: bytes) -> tuple[tuple[bytes, ...], bool] | None:
    """The words of a literal pattern and whether they must stand as whole words, or None."""
    for shape, bounded in _LITERAL_SHAPES:
        found = shape.fullmatch(pattern)
        if found:
            return tuple(dict.fromkeys(found[1].split(b"|"))), bounded
    return None


class ErrorMatcher:
    """Compiled counting rules; build once, reuse for many files.

    A pattern that is an alternation of literal words (``\\b(?:W1|W2)\\b``, ``\\b(W1|W2)\\b``,
    ``\\bW\\b`` or ``W1|W2``) takes a literal path that is exact on lines of any length:
    hyperscan (one pass for all words) when installed, else ``bytes.find`` on whole buffers.
    Any other pattern goes through ``re`` line by line, on at most the first
    ``long_line_limit`` bytes of each line. Appending ``(?#general)`` to a literal pattern
    forces the general path without changing what it matches.

    ``counters``: (name, pattern) pairs (``check_counters``), each counted by the same rules
    as the error pattern, without samples (Counts.counts, in ``counter_names`` order). With
    hyperscan, the literal ones share one database with a literal error pattern; the general
    ones are searched on the lines the error pattern's regex path splits, or on one split of
    their own.

    ``engine``: "auto" (the accelerators that are installed), "python" (the standard library
    only) or "hyperscan" (required: a ConfigError when it is not installed). It decides how
    literal patterns are searched, and whether newlines are counted by stringzilla (with
    "auto" or "hyperscan", when installed) or by ``bytes.count``: no engine changes what any
    pattern counts.
    """

    __slots__ = (
        "_block",
        "_bounded",
        "_counters",
        "_database",
        "_fast_counters",
        "_general_counters",
        "_limit",
        "_newlines",
        "_regex",
        "_slow_counters",
        "_words",
    )

    def __init__(
        self,
        pattern: bytes = DEFAULT_ERROR_PATTERN,
        *,
        counters: Iterable[tuple[str, bytes]] = (),
        long_line_limit: int = LONG_LINE_LIMIT,
        engine: str = "auto",
    ) -> None:
        if long_line_limit < 1:
            raise ValueError(f"long_line_limit must be at least 1, not {long_line_limit}")
        check_engine(engine)
        self._regex = re.compile(pattern)
        self._counters = check_counters(counters)
        self._limit = long_line_limit
        self._words: tuple[bytes, ...] | None = None
        self._bounded = False
        self._database: hyperscan.Database | None = None  # for streams of chunks
        self._block: hyperscan.Database | None = None  # for content read in one piece
        shape = _literal_shape(pattern)
        if shape is not None:
            self._words, self._bounded = shape
        use_hyperscan = engine != "python" and hyperscan is not None
        # Counters by the way they are searched: (index, words, bounded) in the hyperscan
        # database or on bytes.find, (index, regex) on the lines of a regex scan.
        self._fast_counters: list[tuple[int, tuple[bytes, ...], bool]] = []
        self._slow_counters: list[tuple[int, tuple[bytes, ...], bool]] = []
        self._general_counters: list[tuple[int, re.Pattern[bytes]]] = []
        for index, (_name, counter) in enumerate(self._counters):
            counter_shape = _literal_shape(counter)
            if counter_shape is None:
                self._general_counters.append((index, re.compile(counter)))
            elif use_hyperscan:
                self._fast_counters.append((index, *counter_shape))
            else:
                self._slow_counters.append((index, *counter_shape))
        groups = [(index + 1, words, bounded) for index, words, bounded in self._fast_counters]
        if self._words is not None and use_hyperscan:
            groups.insert(0, (0, self._words, self._bounded))
        if groups:
            self._database = _compile_hyperscan(groups, stream=True)
            self._block = _compile_hyperscan(groups, stream=False)
        self._newlines = _count_newlines
        if engine != "python" and stringzilla is not None:
            self._newlines = _count_newlines_simd

    @property
    def pattern(self) -> bytes:
        return self._regex.pattern

    @property
    def counters(self) -> tuple[tuple[str, bytes], ...]:
        """The (name, pattern) pairs of the named counters, as given."""
        return self._counters

    @property
    def counter_names(self) -> tuple[str, ...]:
        """The counters' names, in the order of Counts.counts."""
        return tuple(name for name, _ in self._counters)

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
        """What searches the error pattern: "hyperscan", "literal" (bytes.find) or "regex"."""
        if self._words is None:
            return "regex"
        return "hyperscan" if self._database is not None else "literal"

    @property
    def counter_engines(self) -> tuple[str, ...]:
        """What searches each counter, in ``counter_names`` order, as ``engine`` says it."""
        engines = ["regex"] * len(self._counters)
        for index, *_ in self._fast_counters:
            engines[index] = "hyperscan"
        for index, *_ in self._slow_counters:
            engines[index] = "literal"
        return tuple(engines)

    @property
    def newline_counter(self) -> str:
        """What counts the lines: "stringzilla" or "bytes.count"."""
        return "stringzilla" if self._newlines is _count_newlines_simd else "bytes.count"

    def __repr__(self) -> str:
        counters = f", counters={self.counter_names}" if self._counters else ""
        return (
            f"ErrorMatcher({self.pattern!r}{counters}, long_line_limit={self._limit}, "
            f"{self.engine}, {self.newline_counter})"
        )

    def count_whole(self, content: bytes) -> Counts:
        """Count content known to be complete (a small file read in one piece)."""
        if (
            self._block is None
            or self._words is None
            or self._slow_counters
            or self._general_counters
        ):
            return count_chunks((content,), self)
        error_lines = 0
        ends: list[int] = []
        counts = [0] * len(self._counters)

        def on_line(id: int, _start: int, end: int, _flags: int, _context: object) -> None:
            nonlocal error_lines
            if id > 1:
                counts[(id >> 1) - 1] += 1
                return
            error_lines += 1
            if error_lines <= SAMPLE_LINES:
                ends.append(end)

        self._block.scan(content, match_event_handler=on_line)
        lines = self._newlines(content) + (bool(content) and content[-1] != 0x0A)
        samples = tuple(sample_ending_at(content, end, b"") for end in ends)
        return Counts(lines, error_lines, len(content), samples=samples, counts=tuple(counts))

    def _scan(self) -> Scan:
        size = len(self._counters)
        if not size:
            if self._database is not None:
                return HyperscanScan(self._database, self._newlines)
            if self._words is not None:
                return LiteralScan(self._words, self._bounded, self._newlines)
            return RegexScan(self._regex, self._limit, self._newlines)
        scans: list[Scan] = []
        singles: dict[int, int] = {}
        regex_scan: Scan | None = None
        # The error pattern's scan first: it counts lines and takes samples.
        if self._words is None:
            regex_scan = RegexScan(
                self._regex, self._limit, self._newlines, self._general_counters, size
            )
            scans.append(regex_scan)
        elif self._database is not None:
            scans.append(HyperscanScan(self._database, self._newlines, size))
        else:
            scans.append(LiteralScan(self._words, self._bounded, self._newlines))
        if self._words is None and self._database is not None:
            scans.append(HyperscanScan(self._database, _no_newlines, size))
        for index, words, bounded in self._slow_counters:
            singles[len(scans)] = index
            scans.append(LiteralScan(words, bounded, _no_newlines))
        if regex_scan is None and self._general_counters:
            # A regex scan tells lines by counting newlines: it needs the real count.
            scans.append(RegexScan(None, self._limit, self._newlines, self._general_counters, size))
        if len(scans) == 1:
            return scans[0]
        return CombinedScan(scans, size, singles)


def _no_newlines(_buf: bytes) -> int:
    """The newline count of a scan whose lines another scan of the same content counts."""
    return 0


def _count_newlines(buf: bytes) -> int:
    return buf.count(b"\n")  # a byte at a time: stringzilla's SIMD count is faster


def _count_newlines_simd(buf: bytes) -> int:
    return int(stringzilla.count(buf, b"\n"))


def check_engine(engine: str) -> None:
    """ValueError for an unknown engine, ConfigError for hyperscan when it is not installed."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "hyperscan" and hyperscan is None:
        raise ConfigError(f"the hyperscan engine is not installed: {install_hint('fast')}")


def _compile_hyperscan(
    groups: Sequence[tuple[int, tuple[bytes, ...], bool]], stream: bool
) -> hyperscan.Database:
    """A database that reports each line holding a word of a group once, where the line ends.

    ``groups``: (group, words, bounded); group 0 is the error pattern, group i + 1 counter i.
    Group g's patterns have ids 2g and 2g + 1, so a report's group is its id // 2.

    A line's report is the end of ``WORD[^\\n]*\\n`` (or ``\\z`` for a last line without one):
    hyperscan reports a pattern once per end offset, so a line with several words is reported
    once per group, and one call per matched line is cheaper than one per word. Without the
    UTF-8 and UCP flags, ``\\b`` is the ASCII word boundary of a bytes regex in ``re``; the
    words are [A-Za-z0-9_]+, so they need no escaping and never hold a newline.
    """
    expressions: list[bytes] = []
    ids: list[int] = []
    for group, words, bounded in groups:
        word = b"(?:" + b"|".join(words) + b")"
        if bounded:
            word = rb"\b" + word + rb"\b"
        expressions += [word + rb"[^\n]*\n", word + rb"[^\n]*\z"]
        ids += [2 * group, 2 * group + 1]
    database = hyperscan.Database(
        mode=hyperscan.HS_MODE_STREAM if stream else hyperscan.HS_MODE_BLOCK
    )
    database.compile(expressions=expressions, ids=ids, elements=len(expressions))
    return database


def count_chunks(chunks: Iterable[bytes], matcher: ErrorMatcher) -> Counts:
    """Count a stream of content split into chunks of any sizes."""
    scan = matcher._scan()
    try:
        for chunk in chunks:
            scan.feed(chunk)
        return scan.finish()
    finally:
        scan.close()
