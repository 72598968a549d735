"""The counting engine against docs/counting.md, on real files and random streams."""

from __future__ import annotations

import bz2
import dataclasses
import errno
import gzip
import io
import itertools
import json
import lzma
import os
import re
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import as_unprivileged, write_bomb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from workers import matching
from workers.common import MAX_EXPANDED_BYTES, format_size, parse_size
from workers.counting import CHUNK_SIZE, count_fd, count_fileobj, count_path
from workers.errors import CountError
from workers.expansion import Expansion
from workers.matching import DEFAULT_ERROR_PATTERN, ErrorMatcher, count_chunks
from workers.scans import SAMPLE_BYTES, SAMPLE_LINES, Counts

SAMPLE_LOGS = Path(__file__).resolve().parent.parent / "sample_logs"
# A comment changes nothing a regex matches but takes the pattern off the literal fast path.
FORCED_GENERAL = DEFAULT_ERROR_PATTERN + rb"(?#general)"
DEFAULT = ErrorMatcher(engine="python")
HYPERSCAN = ErrorMatcher(engine="hyperscan")
GENERAL = ErrorMatcher(FORCED_GENERAL)
# Each way a pattern can be searched: the literal path on bytes.find or hyperscan, and re.
LITERAL_ENGINES = pytest.mark.parametrize("engine", ["python", "hyperscan"])
EVERY_PATH = pytest.mark.parametrize(
    "matcher", [DEFAULT, HYPERSCAN, GENERAL], ids=["literal", "hyperscan", "general"]
)


def reference(data: bytes, pattern: bytes, long_line_limit: int | None = None) -> Counts:
    """The counting rules written as plainly as possible."""
    regex = re.compile(pattern)
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # what follows a final "\n" (or an empty file) is not a line
    error_lines = long_lines = 0
    samples: list[bytes] = []
    for raw in lines:
        line = raw[:-1] if raw.endswith(b"\r") else raw
        subject = line
        if long_line_limit is not None and len(line) > long_line_limit:
            long_lines += 1
            subject = line[:long_line_limit]
        if regex.search(subject):
            error_lines += 1
            if len(samples) < SAMPLE_LINES:
                samples.append(line[:SAMPLE_BYTES])
    return Counts(len(lines), error_lines, len(data), long_lines, None, tuple(samples))


def split_every(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.fixture
def count(tmp_path: Path) -> Callable[..., Counts]:
    """Count bytes from a real file, checking that any chunking of them gives the same result."""

    def count(data: bytes, matcher: ErrorMatcher = DEFAULT) -> Counts:
        path = tmp_path / "app.log"
        path.write_bytes(data)
        counts = count_path(str(path), matcher)
        for size in (1, 2, 7):
            assert count_path(str(path), matcher, chunk_size=size) == counts, size
        assert count_chunks([data[:5], b"", data[5:]], matcher) == counts
        with open(path, "rb") as f:  # the size known: one read, the content counted whole
            assert count_fd(f.fileno(), matcher, size=len(data)) == counts
        return counts

    return count


def test_literal_patterns_take_the_fast_path() -> None:
    assert DEFAULT.literal_words == (b"ERROR", b"FATAL", b"CRITICAL")
    assert DEFAULT.word_bounded
    assert (DEFAULT.engine, HYPERSCAN.engine, GENERAL.engine) == ("literal", "hyperscan", "regex")
    assert ErrorMatcher().engine == "hyperscan"  # "auto" takes it when it is installed
    assert ErrorMatcher(FORCED_GENERAL, engine="hyperscan").engine == "regex"
    # stringzilla counts the newlines unless the engine is the standard library's alone.
    assert DEFAULT.newline_counter == "bytes.count"
    assert HYPERSCAN.newline_counter == GENERAL.newline_counter == "stringzilla"
    assert ErrorMatcher(rb"\b(WARN|ERROR)\b").literal_words == (b"WARN", b"ERROR")
    assert ErrorMatcher(rb"\bE42\b").literal_words == (b"E42",)
    plain = ErrorMatcher(rb"ERROR|FATAL|ERROR")
    assert plain.literal_words == (b"ERROR", b"FATAL")
    assert not plain.word_bounded
    assert ErrorMatcher(rb"panic").literal_words == (b"panic",)


@pytest.mark.parametrize(
    "pattern",
    [
        FORCED_GENERAL,
        rb"\bERROR|FATAL\b",  # no group: the \b bind to one word each
        rb"(?i)\b(?:ERROR|FATAL)\b",
        rb"\b(?:ERROR|)\b",
        rb"ERROR:",
        rb"timeout after \d+ms",
        rb"",
    ],
)
def test_other_patterns_take_the_general_path(pattern: bytes) -> None:
    assert ErrorMatcher(pattern).literal_words is None


def test_bad_regex_and_bad_limit_are_refused() -> None:
    with pytest.raises(re.error):
        ErrorMatcher(rb"\b(?:ERROR\b")
    with pytest.raises(ValueError):
        ErrorMatcher(long_line_limit=0)
    with pytest.raises(ValueError, match="engine must be one of auto, python, hyperscan"):
        ErrorMatcher(engine="grep")


def test_default_install_counts_without_the_accelerators(tmp_path: Path) -> None:
    """Without the optional extra, "auto" falls back to bytes.find and bytes.count, and
    "hyperscan" is refused."""
    path = tmp_path / "app.log"
    path.write_bytes(LOG)
    script = f"""
import sys
# What an install without the extra sees: ImportError.
sys.modules["hyperscan"] = sys.modules["stringzilla"] = None
from workers.counting import count_path
from workers.matching import ErrorMatcher
from workers.errors import ConfigError
matcher = ErrorMatcher()
counts = count_path({str(path)!r}, matcher)
print(matcher.engine, matcher.newline_counter, counts.lines, counts.error_lines)
try:
    ErrorMatcher(engine="hyperscan")
except ConfigError as e:
    print(e)
"""
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    expected = count_path(str(path), HYPERSCAN)
    assert done.stdout.splitlines() == [
        f"literal bytes.count {expected.lines} {expected.error_lines}",
        "the hyperscan engine is not installed: "
        "pip install '.[fast]' in a checkout, or 'FILE.whl[fast]' for a wheel",
    ]


@EVERY_PATH
class TestRules:
    def test_empty_file(self, count: Callable[..., Counts], matcher: ErrorMatcher) -> None:
        assert count(b"", matcher) == Counts(0, 0, 0)

    def test_only_a_newline(self, count: Callable[..., Counts], matcher: ErrorMatcher) -> None:
        assert count(b"\n", matcher) == Counts(1, 0, 1)

    def test_no_final_newline(self, count: Callable[..., Counts], matcher: ErrorMatcher) -> None:
        counts = count(b"ok\nan ERROR", matcher)
        assert (counts.lines, counts.error_lines) == (2, 1)
        assert counts.samples == (b"an ERROR",)

    def test_crlf_lines(self, count: Callable[..., Counts], matcher: ErrorMatcher) -> None:
        counts = count(b"ok\r\nx ERROR\r\n\r\nFATAL\r", matcher)
        assert (counts.lines, counts.error_lines) == (4, 2)
        assert counts.samples == (b"x ERROR", b"FATAL")

    def test_several_matches_count_once(
        self, count: Callable[..., Counts], matcher: ErrorMatcher
    ) -> None:
        assert count(b"ERROR ERROR FATAL CRITICAL\n", matcher).error_lines == 1

    @pytest.mark.parametrize(
        "line", [b"ERRORS", b"MYERROR", b"ERROR_CODE", b"error", b"[error]", b"ERR OR", b"1ERROR"]
    )
    def test_not_an_error_word(
        self, count: Callable[..., Counts], matcher: ErrorMatcher, line: bytes
    ) -> None:
        assert count(b"ok\n" + line + b"\n", matcher) == Counts(2, 0, len(line) + 4)

    @pytest.mark.parametrize(
        "line",
        [
            b"[ERROR]",
            b"ERROR:",
            b"(FATAL)",
            b"CRITICAL",
            b"x-ERROR-x",
            b"\x00ERROR\xff",
            b"\tFATAL",
        ],
    )
    def test_an_error_word(
        self, count: Callable[..., Counts], matcher: ErrorMatcher, line: bytes
    ) -> None:
        assert count(b"ok\n" + line + b"\nok", matcher).error_lines == 1

    def test_any_bytes(self, count: Callable[..., Counts], matcher: ErrorMatcher) -> None:
        data = "Zürich ERROR\n".encode("latin-1") + b"\xff\xfe ERROR \x00\n\x00\x00\nFATAL\xc3\n"
        counts = count(data, matcher)
        assert (counts.lines, counts.error_lines) == (4, 3)
        assert counts.samples == (b"Z\xfcrich ERROR", b"\xff\xfe ERROR \x00", b"FATAL\xc3")

    @pytest.mark.parametrize("where", ["start", "end", "middle"])
    def test_match_in_a_line_longer_than_the_chunk(
        self, tmp_path: Path, matcher: ErrorMatcher, where: str
    ) -> None:
        lead, trail = b"x " * 5000, b" x" * 5000
        line = {
            "start": b"ERROR" + trail,
            "end": lead + b"ERROR",
            "middle": lead + b"ERROR" + trail,
        }
        data = b"ok\n" + line[where] + b"\nlast ERRORS\n"
        path = tmp_path / "long.log"
        path.write_bytes(data)
        expected = reference(data, DEFAULT_ERROR_PATTERN)
        assert expected.error_lines == 1
        for chunk_size in (1, 4, 7, 4096):
            assert count_path(str(path), matcher, chunk_size=chunk_size) == expected

    @pytest.mark.parametrize("cut", range(1, 8))
    def test_match_split_across_chunks(self, matcher: ErrorMatcher, cut: int) -> None:
        data = b"ok\nsome CRITICAL thing\n"
        at = data.index(b"CRITICAL") + cut
        assert count_chunks([data[:at], data[at:]], matcher).error_lines == 1
        bad = b"ok\nsome CRITICALS thing\n"
        assert count_chunks([bad[:at], bad[at:]], matcher).error_lines == 0

    def test_samples_are_the_first_error_lines_truncated(
        self, count: Callable[..., Counts], matcher: ErrorMatcher
    ) -> None:
        long = b"ERROR " + b"y" * 300
        data = b"ok\n" + long + b"\r\nFATAL\r\nok\nCRITICAL " + b"z" * 194 + b"\r\nERROR 4\n"
        counts = count(data, matcher)
        assert counts.error_lines == 4
        assert counts.samples == (long[:SAMPLE_BYTES], b"FATAL", b"CRITICAL " + b"z" * 191)
        assert all(len(s) <= SAMPLE_BYTES for s in counts.samples)

    def test_sample_of_a_line_just_over_the_sample_size(
        self, count: Callable[..., Counts], matcher: ErrorMatcher
    ) -> None:
        line = b"ERROR " + b"w" * (SAMPLE_BYTES - 6)
        assert len(line) == SAMPLE_BYTES
        assert count(line + b"\r\n" + line + b"\r", matcher).samples == (line, line)
        assert count(line + b"v\r\n", matcher).samples == (line,)


def test_dollar_sees_the_line_without_its_cr(count: Callable[..., Counts]) -> None:
    counts = count(b"x ERROR\r\ny ERROR \r\nERROR\r\r\n", ErrorMatcher(rb"ERROR$"))
    assert (counts.lines, counts.error_lines) == (3, 1)
    assert counts.samples == (b"x ERROR",)


def test_custom_general_regex(count: Callable[..., Counts]) -> None:
    data = b"timeout after 250ms\ntimeout after ms\nTimeout after 1ms\nok timeout after 3ms ok"
    counts = count(data, ErrorMatcher(rb"timeout after \d+ms"))
    assert (counts.lines, counts.error_lines, counts.long_lines) == (4, 2, 0)
    assert counts.samples == (b"timeout after 250ms", b"ok timeout after 3ms ok")


def test_plain_literal_alternation_matches_inside_words(count: Callable[..., Counts]) -> None:
    counts = count(b"MYERROR\nERRORS\nerror\nFATALITY\n", ErrorMatcher(rb"ERROR|FATAL"))
    assert (counts.lines, counts.error_lines) == (4, 3)


def test_general_regex_sees_only_the_start_of_a_long_line(count: Callable[..., Counts]) -> None:
    matcher = ErrorMatcher(FORCED_GENERAL, long_line_limit=10)
    data = (
        b"0123 ERROR\n"  # 10 bytes: not long
        b"0123 ERROR\r\n"  # 10 bytes once the "\r" is gone: not long
        b"01234 ERROR\n"  # 11 bytes: long, and the match is cut off
        b"01234ERROR\n"  # 10 bytes, \b at the end of the line
        b"012345ERROR x\n"  # long, and the cut makes a false \b: the cut is what is searched
        b"ERROR " + b"x" * 1000 + b"\r\n"  # long, match at the start
    )
    counts = count(data, matcher)
    assert counts == reference(data, FORCED_GENERAL, long_line_limit=10)
    assert (counts.lines, counts.error_lines, counts.long_lines) == (6, 3, 3)
    assert counts.samples == (b"0123 ERROR", b"0123 ERROR", b"ERROR " + b"x" * 194)


@LITERAL_ENGINES
def test_literal_path_matches_a_long_line_exactly(tmp_path: Path, engine: str) -> None:
    matcher = ErrorMatcher(long_line_limit=10, engine=engine)
    data = b"0123456789 ERROR\n" + b"y" * 100 + b" FATAL\r\n" + b"z" * 50 + b"_FATAL\n"
    path = tmp_path / "long.log"
    path.write_bytes(data)
    for chunk_size in (1, 3, 7, CHUNK_SIZE):
        counts = count_path(str(path), matcher, chunk_size=chunk_size)
        assert (counts.lines, counts.error_lines, counts.long_lines) == (3, 2, 0)


def test_huge_line_longer_than_a_read(tmp_path: Path) -> None:
    """A line of several reads: counted exactly on the literal path, cut on the general one."""
    path = tmp_path / "huge.log"
    data = b"start\n" + b"a " * (3 * 1024 * 1024) + b"FATAL\nERROR\n"
    path.write_bytes(data)
    for literal_matcher in (DEFAULT, HYPERSCAN):
        literal = count_path(str(path), literal_matcher, chunk_size=1024 * 1024)
        assert literal == Counts(3, 2, len(data), samples=(b"a " * 100, b"ERROR"))
    general = count_path(str(path), ErrorMatcher(FORCED_GENERAL), chunk_size=1024 * 1024)
    assert general == Counts(3, 1, len(data), long_lines=1, samples=(b"ERROR",))


@EVERY_PATH
def test_memory_stays_bounded_on_a_huge_line(matcher: ErrorMatcher) -> None:
    piece = b"x" * (1024 * 1024)
    chunks = itertools.chain([b"ok\n"], itertools.repeat(piece, 64), [b" ERROR\n"])
    tracemalloc.start()
    try:
        counts = count_chunks(chunks, matcher)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (counts.lines, counts.error_lines) == (2, 0 if matcher is GENERAL else 1)
    # One read chunk plus the long-line limit, with room to spare, not the 64 MiB line.
    assert peak < 8 * 1024 * 1024


LOG = b"".join(
    b"2024-05-01 12:00:%02d %s request %d\r\n" % (i % 60, level, i)
    for i, level in enumerate([b"INFO", b"ERROR", b"WARN", b"FATAL", b"DEBUG", b"ERRORS"] * 50)
)


@pytest.mark.parametrize(
    ("suffix", "compress", "compression"),
    [
        (".gz", gzip.compress, "gzip"),
        (".bz2", bz2.compress, "bzip2"),
        (".xz", lzma.compress, "xz"),
        (".gz", lambda d: gzip.compress(d[:1000]) + gzip.compress(d[1000:]), "gzip"),
        (".log", lambda d: bz2.compress(d[:999]) + bz2.compress(d[999:]), "bzip2"),
    ],
    ids=["gzip", "bzip2", "xz", "gzip-multi-member", "bzip2-multi-stream-no-suffix"],
)
def test_archives_count_like_their_content(
    tmp_path: Path, suffix: str, compress: Callable[[bytes], bytes], compression: str
) -> None:
    plain = tmp_path / "app.log"
    plain.write_bytes(LOG)
    archive = tmp_path / f"app.1{suffix}"
    archive.write_bytes(compress(LOG))
    expected = count_path(str(plain), DEFAULT)
    assert (expected.lines, expected.error_lines) == (300, 100)
    assert count_path(str(archive), DEFAULT) == Counts(
        300, 100, len(LOG), compression=compression, samples=expected.samples
    )
    general = count_path(str(archive), GENERAL, chunk_size=777)
    assert general == dataclasses.replace(
        count_path(str(plain), GENERAL, chunk_size=777), compression=compression
    )


MiB = 1024 * 1024


@pytest.mark.parametrize("compression", ["gzip", "bzip2", "xz"])
def test_a_decompression_bomb_is_refused_once_past_the_limit(
    tmp_path: Path, compression: str
) -> None:
    bomb = tmp_path / "bomb.log"
    assert write_bomb(bomb, compression, 1024 * MiB) < 2 * MiB
    started: list[bool] = []
    expansion = Expansion(64 * MiB, on_start=lambda: started.append(True))
    with pytest.raises(CountError) as caught:
        count_path(str(bomb), DEFAULT, expansion=expansion)
    assert str(caught.value) == (
        f"{compression} data expands past 64 MiB (--max-expanded): refused as a decompression bomb"
    )
    assert started == [True]  # the caller heard before the decompression began


def test_a_single_stream_bomb_is_refused_too(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.gz"
    with gzip.open(bomb, "wb") as f:
        for _ in range(32):
            f.write(bytes(4 * MiB))
    with pytest.raises(CountError, match=r"^gzip data expands past 100 MiB \(--max-expanded\)"):
        count_path(str(bomb), GENERAL, expansion=Expansion(100 * MiB))


@EVERY_PATH
@pytest.mark.parametrize("chunk_size", [777, CHUNK_SIZE])
def test_content_of_exactly_the_limit_counts_as_before(
    tmp_path: Path, matcher: ErrorMatcher, chunk_size: int
) -> None:
    archive = tmp_path / "app.log.bz2"
    archive.write_bytes(bz2.compress(LOG[:1000]) + bz2.compress(LOG[1000:]))
    expected = count_path(str(archive), matcher, chunk_size)
    assert expected.compression == "bzip2" and expected.bytes_read == len(LOG)
    exact = count_path(str(archive), matcher, chunk_size, expansion=Expansion(len(LOG)))
    assert exact == expected
    with pytest.raises(CountError, match="expands past"):
        count_path(str(archive), matcher, chunk_size, expansion=Expansion(len(LOG) - 1))


def test_plain_files_have_no_expansion_limit_nor_call_it_a_start(tmp_path: Path) -> None:
    plain = tmp_path / "app.log"
    plain.write_bytes(LOG)
    started: list[bool] = []
    expansion = Expansion(10, on_start=lambda: started.append(True))
    assert count_path(str(plain), DEFAULT, expansion=expansion) == count_path(str(plain), DEFAULT)
    assert started == []
    assert Expansion().limit == MAX_EXPANDED_BYTES == 64 * 1024 * MiB


@pytest.mark.parametrize(
    ("text", "size", "shown"),
    [
        ("10G", 10 * 1024 * MiB, "10 GiB"),
        ("500M", 500 * MiB, "500 MiB"),
        ("1.5GiB", 1536 * MiB, "1.5 GiB"),
        ("64k", 65536, "64 KiB"),
        (" 2 tb ", 2 * 1024**4, "2 TiB"),
        ("4096", 4096, "4 KiB"),
        ("100", 100, "100 bytes"),
    ],
)
def test_sizes_are_read_and_shown_in_units_of_1024(text: str, size: int, shown: str) -> None:
    assert parse_size(text) == size
    assert format_size(size) == shown


@pytest.mark.parametrize("text", ["", "G", "10Q", "-1G", "0", "1..5G", "ten"])
def test_a_bad_size_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_magic_bytes_decide_not_the_name(tmp_path: Path) -> None:
    text = tmp_path / "looks.gz"
    text.write_bytes(b"plain ERROR\n")
    assert count_path(str(text), DEFAULT) == Counts(1, 1, 12, samples=(b"plain ERROR",))
    short = tmp_path / "short.xz"
    short.write_bytes(b"\x1f")  # shorter than any magic
    assert count_path(str(short), DEFAULT) == Counts(1, 0, 1)


@pytest.mark.parametrize(
    ("compress", "damage", "compression"),
    [
        (gzip.compress, lambda d: d[:-12], "gzip"),
        (gzip.compress, lambda d: d[:20] + bytes(b ^ 0x55 for b in d[20:40]) + d[40:], "gzip"),
        (gzip.compress, lambda d: d[:-8] + b"\0\0\0\0" + d[-4:], "gzip"),  # bad CRC
        (gzip.compress, lambda d: d + b"garbage!", "gzip"),
        (gzip.compress, lambda d: d[:2], "gzip"),
        (bz2.compress, lambda d: d[: len(d) // 2], "bzip2"),
        (bz2.compress, lambda d: d[:10] + b"\xff" * 30 + d[40:], "bzip2"),
        (lzma.compress, lambda d: d[: len(d) // 2], "xz"),
        (lzma.compress, lambda d: d[:30] + b"\xff" * 30 + d[60:], "xz"),
    ],
)
def test_corrupt_or_truncated_archive_is_a_count_error(
    tmp_path: Path,
    compress: Callable[[bytes], bytes],
    damage: Callable[[bytes], bytes],
    compression: str,
) -> None:
    path = tmp_path / "broken"
    path.write_bytes(damage(compress(LOG)))
    with pytest.raises(CountError, match=f"^corrupt {compression} data: ") as caught:
        count_path(str(path), DEFAULT)
    assert "\n" not in str(caught.value)


def test_truncated_gzip_message(tmp_path: Path) -> None:
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(LOG)[:-20])
    with pytest.raises(CountError) as caught:
        count_path(str(path), DEFAULT)
    assert str(caught.value) == (
        "corrupt gzip data: Compressed file ended before the end-of-stream marker was reached"
    )


def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def attempt() -> None:
        try:
            count_path(str(fifo), DEFAULT)
        except BaseException as e:
            outcome.append(e)

    started = time.monotonic()
    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        # Unblock the stuck open so the thread ends, then fail.
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("count_path blocked on a FIFO")
    assert time.monotonic() - started < 2
    assert len(outcome) == 1
    assert isinstance(outcome[0], CountError)
    assert str(outcome[0]) == "not a regular file"


def test_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CountError, match="not a regular file"):
        count_path(str(tmp_path), DEFAULT)


def test_symlink_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "real.log"
    target.write_bytes(b"ERROR\n")
    link = tmp_path / "link.log"
    link.symlink_to(target)
    with pytest.raises(OSError) as caught:
        count_path(str(link), DEFAULT)
    assert caught.value.errno == errno.ELOOP
    assert not isinstance(caught.value, CountError)


def test_missing_and_unreadable_files_propagate(public_dir: Path) -> None:
    with pytest.raises(FileNotFoundError):
        count_path(str(public_dir / "gone.log"), DEFAULT)
    secret = public_dir / "secret.log"
    secret.write_bytes(b"x\n")
    secret.chmod(0)

    def attempt() -> str:
        try:
            count_path(str(secret), DEFAULT)
        except PermissionError:
            return "PermissionError"
        return "counted"

    assert as_unprivileged(attempt) == "PermissionError"


def test_bytes_path_that_is_not_utf8(tmp_path: Path) -> None:
    path = os.path.join(os.fsencode(tmp_path), b"caf\xe9.log")
    with open(path, "wb") as f:
        f.write(b"ERROR\n")
    assert count_path(path, DEFAULT).error_lines == 1


def test_reading_stops_at_the_given_size(tmp_path: Path) -> None:
    """What grew past the queued size is not read: the worker's fstat after counting sees it."""
    path = tmp_path / "app.log"
    path.write_bytes(b"ok\nERROR\nFATAL late\n")
    for chunk_size in (1, 4, CHUNK_SIZE):
        with open(path, "rb") as f:
            counts = count_fd(f.fileno(), HYPERSCAN, chunk_size=chunk_size, size=9)
        assert counts == Counts(2, 1, 9, samples=(b"ERROR",)), chunk_size


def test_archive_read_by_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "app.log.gz"
    path.write_bytes(gzip.compress(LOG))
    with open(path, "rb") as f:
        counts = count_fd(f.fileno(), HYPERSCAN, size=path.stat().st_size)
    assert counts == dataclasses.replace(count_chunks([LOG], DEFAULT), compression="gzip")


def test_count_fileobj_rewinds_after_sniffing() -> None:
    data = gzip.compress(b"a\nFATAL b\n")
    assert count_fileobj(io.BytesIO(data), DEFAULT) == Counts(
        2, 1, 10, compression="gzip", samples=(b"FATAL b",)
    )
    assert count_fileobj(io.BytesIO(b"BZ but not bzip2\n"), DEFAULT) == Counts(1, 0, 17)


def test_sample_logs_match_expected() -> None:
    expected = json.loads((SAMPLE_LOGS / "EXPECTED.json").read_text())
    for name, want in expected["files"].items():
        for matcher in (DEFAULT, HYPERSCAN, GENERAL):
            counts = count_path(str(SAMPLE_LOGS / name), matcher)
            assert (counts.lines, counts.error_lines) == (want["lines"], want["error_lines"]), name


TRICKY = [
    b"ok\nxERROR    y\nCRITICAL\n",
    b"a\n_FATAL_\nMYCRITICAL x\n(CRITICAL)",
    b"\r\nERRORS ERROR\r\nxCRITICAL_ CRITICALx FATAL",
    b"ERROR\xffFATAL\x00\nERRORERROR\n",
]


@pytest.mark.parametrize("data", TRICKY)
@pytest.mark.parametrize("pattern", [DEFAULT_ERROR_PATTERN, FORCED_GENERAL, rb"ERROR|FATAL"])
@LITERAL_ENGINES
def test_every_three_way_split(data: bytes, pattern: bytes, engine: str) -> None:
    """Cut points at every pair of offsets: words and their boundary bytes split every way."""
    matcher = ErrorMatcher(pattern, engine=engine)
    expected = reference(data, pattern)
    for a, b in itertools.combinations_with_replacement(range(len(data) + 1), 2):
        assert count_chunks([data[:a], data[a:b], data[b:]], matcher) == expected, (a, b)


# Property tests: count_chunks over random chunkings equals the plain reference.

TOKENS = [
    b"ERROR", b"FATAL", b"CRITICAL", b"\n", b"\r", b"_", b"x", b" ", b"S", b"\xff", b"\x00",
    b"MY", b"ERR", b"\r\n", b"y" * 120,
]  # fmt: skip


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = b"".join(draw(st.lists(st.sampled_from(TOKENS), max_size=60)))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in itertools.pairwise(bounds)]


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(
    st.binary(max_size=5000)
    | st.lists(st.sampled_from([b"\n", b"\r\n", b"x" * 31, b"\n" * 65])).map(b"".join)
)
def test_newline_counters_agree(data: bytes) -> None:
    """stringzilla's SIMD count against bytes.count, on lengths across its block sizes."""
    for start in (0, 1, 15, 33):
        piece = data[start:]
        assert matching._count_newlines_simd(piece) == matching._count_newlines(piece)


@PROPERTY
@given(chunked())
def test_default_pattern_fast_path(case: tuple[bytes, list[bytes]]) -> None:
    data, chunks = case
    assert count_chunks(chunks, DEFAULT) == reference(data, DEFAULT_ERROR_PATTERN)


@PROPERTY
@given(chunked())
def test_default_pattern_hyperscan(case: tuple[bytes, list[bytes]]) -> None:
    data, chunks = case
    expected = reference(data, DEFAULT_ERROR_PATTERN)
    assert count_chunks(chunks, HYPERSCAN) == HYPERSCAN.count_whole(data) == expected


@PROPERTY
@given(
    st.lists(st.one_of(st.binary(max_size=6), st.sampled_from(TOKENS)), max_size=40),
    st.lists(st.integers(0, 400), max_size=8),
)
def test_engines_agree_on_random_bytes(pieces: list[bytes], cuts: list[int]) -> None:
    data = b"".join(pieces)
    bounds = [0, *sorted(min(c, len(data)) for c in cuts), len(data)]
    chunks = [data[a:b] for a, b in itertools.pairwise(bounds)]
    expected = reference(data, DEFAULT_ERROR_PATTERN)
    assert count_chunks(chunks, DEFAULT) == count_chunks(chunks, HYPERSCAN) == expected
    assert DEFAULT.count_whole(data) == HYPERSCAN.count_whole(data) == expected


@PROPERTY
@given(chunked())
def test_default_pattern_general_path(case: tuple[bytes, list[bytes]]) -> None:
    data, chunks = case
    assert count_chunks(chunks, GENERAL) == reference(data, DEFAULT_ERROR_PATTERN, 1024 * 1024)


@PROPERTY
@given(
    chunked(),
    st.sampled_from([rb"ERROR|FATAL", rb"\bERR\b", rb"\b(ERR|ERROR|S)\b", rb"MY"]),
    st.sampled_from(["python", "hyperscan"]),
)
def test_other_literal_patterns(
    case: tuple[bytes, list[bytes]], pattern: bytes, engine: str
) -> None:
    data, chunks = case
    matcher = ErrorMatcher(pattern, engine=engine)
    assert matcher.literal_words is not None
    expected = reference(data, pattern)
    assert count_chunks(chunks, matcher) == matcher.count_whole(data) == expected


@PROPERTY
@given(
    chunked(),
    st.sampled_from(
        [
            FORCED_GENERAL,
            rb"ERROR$|^S|x\r",
            rb"\bERROR(?!_)",
            rb"(?:FATAL|CRITICAL)\Z",
            rb"y{50,}",
        ]
    ),
    st.integers(1, 40),
)
def test_general_regex_with_small_limit(
    case: tuple[bytes, list[bytes]], pattern: bytes, limit: int
) -> None:
    data, chunks = case
    matcher = ErrorMatcher(pattern, long_line_limit=limit)
    assert matcher.literal_words is None
    assert count_chunks(chunks, matcher) == reference(data, pattern, limit)


@settings(max_examples=30, deadline=None)
@given(chunked(), st.sampled_from([gzip.compress, bz2.compress, lzma.compress]))
def test_archives_match_plain(
    case: tuple[bytes, list[bytes]], compress: Callable[[bytes], bytes]
) -> None:
    data, _ = case
    counts = count_fileobj(io.BytesIO(compress(data)), DEFAULT, chunk_size=5)
    assert counts.compression is not None
    expected = reference(data, DEFAULT_ERROR_PATTERN)
    assert counts == dataclasses.replace(expected, compression=counts.compression)
