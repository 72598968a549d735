"""Named counters (docs/counting.md, "Named counters"): every counter against a line-by-line
reference on real files and random content cut into random chunks, with both engines; their
check; the append fast path; the wire; and a worker counting a task that carries them."""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import os
import pickle
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import reference_counts, reference_line_counts

from dispatcher.transport.requests import REQUEST_TYPES, check_results
from workers.common import MAX_COUNTERS
from workers.counting import APPEND_MIN_BYTES, count_fd, count_path
from workers.errors import BadRequest, ConfigError
from workers.fingerprint import Fingerprint
from workers.matching import (
    DEFAULT_ERROR_PATTERN,
    LONG_LINE_LIMIT,
    ErrorMatcher,
    check_counters,
    count_chunks,
)
from workers.protocol import REPLY_TYPES, Base, Result, Status, Task
from workers.wirechecks import load_message
from workers.worker import Worker, WorkerConfig

ENGINES = pytest.mark.parametrize("engine", ["python", "hyperscan"])
FORCED_GENERAL = DEFAULT_ERROR_PATTERN + rb"(?#general)"
# Every shape a counter can take: the literal ones (whole words, several words, words inside
# words) and general regexes.
COUNTERS = (
    ("warn", rb"\b(?:WARN|WARNING)\b"),
    ("info", rb"\bINFO\b"),
    ("inside", rb"ERR|NING"),
    ("plain", rb"x"),
    ("dollar", rb"x$"),
    ("digits", rb"\d{2,}"),
    ("cr", rb"WARN\r"),
)
PATTERNS = [pattern for _, pattern in COUNTERS]


def matchers(pattern: bytes = DEFAULT_ERROR_PATTERN, **kwargs: object) -> list[ErrorMatcher]:
    return [
        ErrorMatcher(pattern, counters=COUNTERS, engine=engine, **kwargs)  # type: ignore[arg-type]
        for engine in ("python", "hyperscan")
    ]


def test_each_counter_takes_the_path_its_shape_allows() -> None:
    python, fast = matchers()
    assert python.counter_names == tuple(name for name, _ in COUNTERS)
    assert python.counter_engines == ("literal",) * 4 + ("regex",) * 3
    assert fast.counter_engines == ("hyperscan",) * 4 + ("regex",) * 3
    assert (python.engine, fast.engine) == ("literal", "hyperscan")
    assert ErrorMatcher(FORCED_GENERAL, counters=COUNTERS).engine == "regex"
    assert ErrorMatcher().counter_names == ()


@pytest.mark.parametrize("pattern", [DEFAULT_ERROR_PATTERN, FORCED_GENERAL])
@ENGINES
def test_counters_overlap_and_count_a_line_once(
    tmp_path: Path, pattern: bytes, engine: str
) -> None:
    data = (
        b"ERROR WARN WARNING x x 12\r\n"  # the error pattern and five counters on one line
        b"WARN WARN WARN\n"  # one counter three times: one line
        b"INFOS xINFO INFO_ ERRORS\n"  # words inside words: only the unbounded counters
        b"WARN\r\r\n"
        b"done x"
    )
    path = tmp_path / "app.log"
    path.write_bytes(data)
    matcher = ErrorMatcher(pattern, counters=COUNTERS, engine=engine)
    counts = count_path(str(path), matcher)
    assert counts.counts == reference_line_counts(data, PATTERNS) == (3, 0, 2, 3, 1, 1, 1)
    assert (counts.lines, counts.error_lines) == reference_counts(data, pattern) == (5, 1)
    assert counts.samples == (b"ERROR WARN WARNING x x 12",)  # the error pattern's only
    for size in (1, 3, 7):
        assert count_path(str(path), matcher, chunk_size=size) == counts
    with open(path, "rb") as f:
        assert count_fd(f.fileno(), matcher, size=len(data)) == counts  # read in one piece


TRICKY = [
    b"WARN\nxWARNING_ WARNING\r\nINFO x",
    b"ERR\r\n\r\nNINGERR x\rINFO\n9 12",
    b"INFOINFO INFO\nWARN\rWARN\r\n",
    b"x\n",  # a last line ending in "\n", matched by a counter: counted once
]


@pytest.mark.parametrize("data", TRICKY)
@pytest.mark.parametrize("pattern", [DEFAULT_ERROR_PATTERN, FORCED_GENERAL])
def test_every_three_way_split(data: bytes, pattern: bytes) -> None:
    expected = reference_line_counts(data, PATTERNS)
    for matcher in matchers(pattern):
        assert matcher.count_whole(data).counts == expected
        for a, b in itertools.combinations_with_replacement(range(len(data) + 1), 2):
            assert count_chunks([data[:a], data[a:b], data[b:]], matcher).counts == expected


TOKENS = [
    b"ERROR", b"WARN", b"WARNING", b"INFO", b"ERR", b"NING", b"x", b"1", b"23", b"\n", b"\r",
    b"\r\n", b"_", b" ", b"\xff", b"\x00", b"y" * 90,
]  # fmt: skip
PROPERTY = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EVERY_MATCHER = {
    (pattern, engine): ErrorMatcher(pattern, counters=COUNTERS, engine=engine)
    for pattern in (DEFAULT_ERROR_PATTERN, FORCED_GENERAL, rb"ERR|x")
    for engine in ("python", "hyperscan")
}
ALONE = {pattern: ErrorMatcher(pattern, engine="python") for pattern, _ in EVERY_MATCHER}


@PROPERTY
@given(
    st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=5)), max_size=60),
    st.lists(st.integers(0, 600), max_size=10),
    st.sampled_from(sorted(EVERY_MATCHER)),
)
def test_counters_match_the_reference_on_random_bytes(
    pieces: list[bytes], cuts: list[int], key: tuple[bytes, str]
) -> None:
    """Every counter against the line-by-line reference, in chunks of any sizes; the lines,
    error lines and samples are those of the error pattern counted alone."""
    data = b"".join(pieces)
    bounds = [0, *sorted(min(cut, len(data)) for cut in cuts), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    matcher = EVERY_MATCHER[key]
    counts = count_chunks(chunks, matcher)
    assert counts.counts == reference_line_counts(data, PATTERNS)
    assert counts == dataclasses.replace(count_chunks([data], ALONE[key[0]]), counts=counts.counts)
    assert matcher.count_whole(data) == counts


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=80), st.integers(1, 30))
def test_general_counters_see_the_first_bytes_of_a_line(pieces: list[bytes], limit: int) -> None:
    data = b"".join(pieces)
    for pattern in (DEFAULT_ERROR_PATTERN, FORCED_GENERAL):
        matcher = ErrorMatcher(pattern, counters=COUNTERS, long_line_limit=limit)
        counts = count_chunks([data[:7], data[7:]], matcher).counts
        assert counts[:4] == reference_line_counts(data, PATTERNS[:4])  # literal: exact
        assert counts[4:] == reference_line_counts(data, PATTERNS[4:], limit)


@ENGINES
def test_a_3_mib_line(tmp_path: Path, engine: str) -> None:
    """Literal counters are exact on it; a general one sees its first 1 MiB."""
    line = b"start " + b"y" * (3 * LONG_LINE_LIMIT) + b" WARN 77 end"
    data = b"INFO 1\n" + line + b"\nlast 42\n"
    path = tmp_path / "huge.log"
    path.write_bytes(data)
    counters = (("warn", rb"\bWARN\b"), ("number", rb"\d\d"), ("start", rb"^start"))
    for pattern in (DEFAULT_ERROR_PATTERN, FORCED_GENERAL):
        matcher = ErrorMatcher(pattern, counters=counters, engine=engine)
        counts = count_path(str(path), matcher, chunk_size=256 * 1024)
        assert counts.counts == (1, 1, 1)  # "77" is past the first MiB: only "42" counts
        assert (counts.lines, counts.long_lines) == (3, 1)


@ENGINES
def test_compressed_content_is_counted_as_its_lines(tmp_path: Path, engine: str) -> None:
    data = b"".join(b"%d WARN x\nINFO %d\r\nERROR WARNING\n" % (i, i) for i in range(5000))
    path = tmp_path / "app.log.gz"
    path.write_bytes(gzip.compress(data))
    for matcher in (ErrorMatcher(pattern, counters=COUNTERS, engine=engine)
                    for pattern in (DEFAULT_ERROR_PATTERN, FORCED_GENERAL)):  # fmt: skip
        counts = count_path(str(path), matcher, chunk_size=4096)
        assert counts.compression == "gzip"
        assert counts.counts == reference_line_counts(data, PATTERNS)
        assert counts.counts[:2] == (10_000, 5000)


# The append fast path: a base's counter counts less its unfinished line's, plus the rest's.


def _base(version_id: int, content: bytes, patterns: list[bytes]) -> Base:
    fingerprint = Fingerprint()
    fingerprint.feed(content)
    lines, errors = reference_counts(content)
    counts = reference_line_counts(content, patterns)
    return Base(version_id, fingerprint.digest(), lines, errors, counts)


@pytest.mark.parametrize("pattern", [DEFAULT_ERROR_PATTERN, FORCED_GENERAL])
@ENGINES
def test_a_grown_file_is_read_past_its_base_with_its_counters(
    tmp_path: Path, pattern: bytes, engine: str
) -> None:
    rows = [b"%d INFO ok\n" % i if i % 3 else b"%d WARN ERROR x\n" % i for i in range(60_000)]
    base = b"".join(rows) + b"tail WA"
    content = base + b"RN x 12\n" + b"".join(rows[:5000])
    assert len(base) > APPEND_MIN_BYTES
    path = tmp_path / "app.log"
    path.write_bytes(content)
    matcher = ErrorMatcher(pattern, counters=COUNTERS, engine=engine)
    with open(path, "rb") as f:
        counts = count_fd(f.fileno(), matcher, size=len(content), bases=[_base(7, base, PATTERNS)])
    assert counts.extends == 7
    assert counts.bytes_read < len(content) - len(base) + APPEND_MIN_BYTES
    assert counts.counts == reference_line_counts(content, PATTERNS)
    assert (counts.lines, counts.error_lines) == reference_counts(content, pattern)
    # A base counted with other counters (here: none) is not used at all.
    other = dataclasses.replace(_base(8, base, PATTERNS), counts=())
    with open(path, "rb") as f:
        whole = count_fd(f.fileno(), matcher, size=len(content), bases=[other])
    assert (whole.extends, whole.bytes_read) == (0, len(content))
    assert dataclasses.replace(whole, bytes_read=0) == dataclasses.replace(counts, bytes_read=0)


@pytest.mark.parametrize("counts", [(1,) * 6, (1,) * 8, (-1,) + (0,) * 6, (10**9,) * 7, [0] * 7])
def test_a_base_with_counts_that_cannot_be_its_is_not_used(
    tmp_path: Path, counts: tuple[int, ...]
) -> None:
    data = b"WARN\n" * 100_000
    path = tmp_path / "app.log"
    path.write_bytes(data)
    base = dataclasses.replace(_base(3, data[:-5], PATTERNS), counts=counts)
    with open(path, "rb") as f:
        result = count_fd(f.fileno(), matchers()[1], size=len(data), bases=[base])
    assert (result.extends, result.counts[0]) == (0, 100_000)


# The one check of counters, shared with the master.


def test_good_counters_are_returned_as_a_tuple() -> None:
    pairs = [("warn", rb"\bWARN\b"), ("http_5xx", rb'" 5\d\d '), ("a" * 32, b"")]
    assert check_counters(iter(pairs)) == tuple(pairs)
    assert check_counters([(f"c{i}", b"x") for i in range(MAX_COUNTERS)])[-1] == ("c31", b"x")


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([("Warn", b"x")], "counter name 'Warn': a name is a lower-case letter, then at most 31"),
        ([("1x", b"x")], "counter name '1x': "),
        ([("a" * 33, b"x")], "counter name 'aaaa"),
        ([("", b"x")], "counter name '': "),
        ([("wa-rn", b"x")], "counter name 'wa-rn'"),
        ([(b"warn", b"x")], "counter name b'warn'"),
        ([("warn", b"x"), ("warn", b"y")], "counter warn: given twice"),
        ([(f"c{i}", b"x") for i in range(33)], "counter c32: at most 32 counters may be given"),
        ([("warn", "WARN")], "counter warn: its pattern must be bytes"),
        ([("slow", rb"(?<=a+)b")], "counter slow: not a valid regex: look-behind requires"),
        ([("open", rb"(WARN")], r"counter open: not a valid regex: missing \), unterminated"),
        ([("warn",)], r"a counter is a \(name, pattern\) pair"),
    ],
)
def test_bad_counters_are_refused_in_one_line_naming_them(
    pairs: list[tuple[str, bytes]], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        check_counters(pairs)
    assert "\n" not in str(refused.value)
    with pytest.raises(ConfigError, match=message):
        ErrorMatcher(counters=pairs)


# The wire.


def _result(**fields: object) -> Result:
    counts: dict[str, object] = {"lines": 5, "error_lines": 1, "bytes_read": 50, **fields}
    return Result(1, 1, "w:1", Status.DONE, **counts)  # type: ignore[arg-type]


def test_counters_and_counts_travel_and_older_results_still_load() -> None:
    task = Task(5, b"a.log", 9, 1, 1, DEFAULT_ERROR_PATTERN, b"sig", (), True, COUNTERS)
    assert load_message(pickle.dumps(task), REPLY_TYPES) == task
    assert load_message(pickle.dumps(Task(5, b"a", 9, 1, 1, b"x")), REPLY_TYPES).counters == ()
    base = Base(3, b"f" * 40, 5, 1, (2, 0))
    assert load_message(pickle.dumps(base), REPLY_TYPES) == base
    sent = _result(counts=(5, 0, 3))
    received = load_message(pickle.dumps(sent), REQUEST_TYPES)
    assert received == sent and check_results([received]) == [received]

    class Older:
        """A result as a worker from before counters pickles it."""

        def __reduce__(self) -> tuple[object, ...]:
            args = (1, 1, "w:1", "done", 2, 1, 10, 0, 0.5, None, (), b"", 3, 4, b"", 0)
            return Result, args

    older = load_message(pickle.dumps(Older()), REQUEST_TYPES)
    assert older.counts == ()
    assert check_results([older]) == [older]


@pytest.mark.parametrize(
    ("counts", "message"),
    [
        ((0,) * (MAX_COUNTERS + 1), "counts must be a tuple of at most 32"),
        ([1, 2], "counts must be a tuple of at most 32"),
        ((6,), "each of counts must be an integer from 0 to lines"),
        ((-1,), "each of counts must be an integer from 0 to lines"),
        ((True,), "each of counts must be an integer from 0 to lines"),
        ((1.0,), "each of counts must be an integer from 0 to lines"),
    ],
)
def test_bad_counts_are_refused(counts: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        check_results([_result(counts=counts)])


def test_only_a_done_result_has_counter_counts() -> None:
    with pytest.raises(BadRequest, match="only a done result has counts"):
        check_results([Result(1, 1, "w:1", Status.ERROR, counts=(0,))])


# A worker counting a task that carries counters.


def _worker(root: Path) -> Worker:
    return Worker(WorkerConfig(("127.0.0.1", 1), b"k", root=os.fsencode(root)))


def test_a_worker_counts_the_counters_of_its_task(tmp_path: Path) -> None:
    data = b"".join(b"%d WARN 1\nINFO x\r\nERROR 22\n" % i for i in range(3000))
    (tmp_path / "app.log.gz").write_bytes(gzip.compress(data))
    (tmp_path / "app.log").write_bytes(data)
    worker = _worker(tmp_path)
    for name in (b"app.log", b"app.log.gz"):
        st = os.stat(tmp_path / os.fsdecode(name))
        sent = Task(1, name, st.st_size, st.st_mtime_ns, 1, DEFAULT_ERROR_PATTERN, b"", (),
                    False, COUNTERS)  # fmt: skip
        task = load_message(pickle.dumps(sent), REPLY_TYPES)  # as it comes off the wire
        result = worker.count(task)
        assert result.status is Status.DONE, result.error
        assert result.counts == reference_line_counts(data, PATTERNS)
        assert (result.lines, result.error_lines) == reference_counts(data)
        assert check_results([load_message(pickle.dumps(result), REQUEST_TYPES)]) == [result]
    # A task whose counters cannot be used is an error result naming the counter.
    st = os.stat(tmp_path / "app.log")
    bad = Task(2, b"app.log", st.st_size, st.st_mtime_ns, 1, DEFAULT_ERROR_PATTERN, b"", (),
               False, (("warn", rb"(WARN"),))  # fmt: skip
    result = worker.count(bad)
    assert result.status is Status.ERROR
    assert result.error is not None and re.match(r"counter warn: not a valid regex", result.error)
    listed = dataclasses.replace(bad, counters=[["warn", b"WARN"]])
    assert worker.count(listed).error == (
        "a task's counters must be a tuple of (name, pattern) pairs"
    )
