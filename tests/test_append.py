"""Counting content that may extend earlier versions (docs/counting.md, "Extending an earlier
version"): the base reported and the counts against a plain recount, on real files plain and
compressed, read whole or only past the base; the wire; and a real worker."""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import os
import pickle
import random
import re
import struct
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from reference import reference_counts

from dispatcher.transport.requests import REQUEST_TYPES, check_results
from workers.counting import APPEND_MIN_BYTES, CHUNK_SIZE, count_fd, count_fileobj
from workers.errors import BadRequest, MessageRefused
from workers.fingerprint import EDGE_BYTES, Extension
from workers.matching import DEFAULT_ERROR_PATTERN, ErrorMatcher, hyperscan
from workers.protocol import REPLY_TYPES, Base, Result, Status, Task
from workers.scans import SAMPLE_BYTES, SAMPLE_LINES, Counts
from workers.wirechecks import MAX_BASES, load_message
from workers.worker import Worker, WorkerConfig

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

KiB = 1024
MiB = 1024 * KiB
GENERAL_PATTERN = DEFAULT_ERROR_PATTERN + rb"(?#general)"  # the same words, on the regex path
# (pattern, engine): the literal path on bytes.find and on hyperscan, and the general path.
MATCHERS = [
    (DEFAULT_ERROR_PATTERN, "python"),
    (rb"ERROR|FATAL", "python"),
    (GENERAL_PATTERN, "python"),
    (rb"ERROR$|^FATAL", "python"),
]
if hyperscan is not None:
    MATCHERS += [(DEFAULT_ERROR_PATTERN, "hyperscan"), (rb"ERROR|FATAL", "hyperscan")]
COMPILED = {key: ErrorMatcher(key[0], engine=key[1]) for key in MATCHERS}
CONTAINERS: dict[str, Callable[[bytes], bytes]] = {
    "plain": lambda content: content,
    "gzip": lambda content: gzip.compress(content, compresslevel=1),
    "zstd": lambda content: zstd.compress(content),
}


def formula(content: bytes) -> bytes:
    """The fingerprint as defined, on the whole content at once."""
    return (
        struct.pack(">Q", len(content))
        + hashlib.blake2b(content[:EDGE_BYTES], digest_size=16).digest()
        + hashlib.blake2b(content[-EDGE_BYTES:], digest_size=16).digest()
    )


def rule_extends(content: bytes, base: bytes) -> bool:
    """The rule as written, on the base's content: its fingerprint's parts are its hashes."""
    length = len(base)
    blake = hashlib.blake2b
    return (
        length >= 1
        and len(content) >= length
        and blake(content[: min(length, EDGE_BYTES)], digest_size=16).digest()
        == blake(base[:EDGE_BYTES], digest_size=16).digest()
        and blake(content[max(0, length - EDGE_BYTES) : length], digest_size=16).digest()
        == blake(base[-EDGE_BYTES:], digest_size=16).digest()
    )


def chosen(content: bytes, bases: Sequence[tuple[int, bytes]]) -> tuple[int, bytes]:
    """The (version id, content) of the longest base ``content`` extends, the first given
    among equals; (0, b"") for none."""
    best: tuple[int, bytes] = (0, b"")
    for version_id, base in bases:
        if len(base) > len(best[1]) and rule_extends(content, base):
            best = (version_id, base)
    return best


def samples(data: bytes, pattern: bytes) -> tuple[bytes, ...]:
    """The samples of ``data`` by the rules: its first error lines, cut."""
    regex = re.compile(pattern)
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    found = (line.removesuffix(b"\r") for line in lines)
    errors = (line[:SAMPLE_BYTES] for line in found if regex.search(line))
    return tuple(itertools.islice(errors, SAMPLE_LINES))


def base_of(version_id: int, content: bytes, pattern: bytes) -> Base:
    return Base(version_id, formula(content), *reference_counts(content, pattern))


def log_lines(count: int, seed: int) -> bytes:
    """Log lines that all differ, with some errors."""
    rng = random.Random(seed)
    return b"".join(
        b"2026-12-03 10:%02d:%02d line %07d %s\n"
        % (i // 60 % 60, i % 60, i, b"ERROR failed" if rng.random() < 0.02 else b"INFO ok")
        for i in range(count)
    )


FILLER = [log_lines(800, seed) for seed in range(4)]  # about 36 KiB each, all different
LONG_LINE = b"z" * (EDGE_BYTES + 3000)  # a line longer than a window
TOKENS = [
    b"ERROR", b"FATAL", b"CRITICAL", b"ERR", b"OR", b"FAT", b"AL", b"\n", b"\r\n", b"\r",
    b"\n\n", b" ", b"x", b"_", b"\xff", b"\x00", b"ok\n", b"y" * 300,
]  # fmt: skip
# Mostly short tokens; now and then log lines, or a line longer than a window.
PIECE = st.sampled_from(TOKENS * 2 + FILLER + [LONG_LINE] * 2)
pieces = st.lists(PIECE, max_size=14).map(b"".join)
some = st.lists(PIECE, min_size=1, max_size=14).map(b"".join)


@st.composite
def base_content(draw: st.DrawFn) -> bytes:
    """Up to about 500 KiB: past the read-past length, past both edges, or within them."""
    fillers = draw(st.integers(0, 4) | st.integers(8, 13))  # 8 and more: past 256 KiB
    middle = b"".join(FILLER[i % len(FILLER)] for i in range(fillers))
    content = draw(pieces) + middle + draw(pieces)
    assume(content)
    return content


def flip(content: bytes, at: int) -> bytes:
    return content[:at] + bytes([content[at] ^ 1]) + content[at + 1 :]


@st.composite
def case(draw: st.DrawFn) -> tuple[str, bytes, bytes, bool]:
    """(how the content came, the base's content, the content counted, a change unseen)."""
    base = draw(base_content())
    length = len(base)
    how = draw(
        st.sampled_from(["appended", "identical", "truncated", "rewritten", "shorter", "middle"])
    )
    unseen = False
    if how == "appended":
        content = base + draw(some)
    elif how == "identical":
        content = base
    elif how == "truncated":
        content = base[: draw(st.integers(0, length - 1))]
    elif how == "rewritten":  # a byte changed where a hash sees it, then maybe appended to
        edges = [i for i in (0, length - 1, min(EDGE_BYTES, length) - 1) if i < length]
        at = draw(st.sampled_from(edges) | st.integers(max(0, length - EDGE_BYTES), length - 1))
        content = flip(base, at) + draw(pieces)
    elif how == "shorter":
        content = draw(pieces)[: length - 1]
    else:  # a byte changed between the edges: only a base over 128 KiB has such bytes
        assume(length > 2 * EDGE_BYTES)
        at = draw(st.integers(EDGE_BYTES, length - EDGE_BYTES - 1))
        content = flip(base, at) + draw(pieces)
        unseen = True
    return how, base, content, unseen


@st.composite
def offered(draw: st.DrawFn, base: bytes, content: bytes) -> list[tuple[int, bytes]]:
    """The base, and maybe others: a shorter one it extends, one of other content, one of the
    same length that differs (before it) and its twin (after it)."""
    bases = [(11, base)]
    if draw(st.booleans()):
        bases.append((12, base[: draw(st.integers(1, len(base)))]))
    if draw(st.booleans()) and content:
        other = random.Random(len(content)).randbytes(draw(st.integers(1, len(content))))
        bases.append((13, other))
    if draw(st.booleans()):
        bases.insert(0, (14, flip(base, len(base) - 1)))
        bases.append((15, base))
    return draw(st.permutations(bases))


def fast_path(content: bytes, bases: Sequence[tuple[int, bytes]], pick: bytes) -> int | None:
    """The bytes a plain file is read with when it is read only past ``pick``, or None when it
    is read whole: its first EDGE_BYTES, a window per base checked (the longest first, until
    one holds) and what follows ``pick``."""
    length = len(pick)
    if length < APPEND_MIN_BYTES or b"\n" not in content[length - EDGE_BYTES : length]:
        return None
    eligible = [b for _, b in bases if APPEND_MIN_BYTES <= len(b) <= len(content)]
    order = sorted(eligible, key=len, reverse=True)  # stable: the order given among equals
    checked = next(i for i, b in enumerate(order) if rule_extends(content, b)) + 1
    return EDGE_BYTES * (1 + checked) + len(content) - length


PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@PROPERTY
@given(
    case().flatmap(lambda c: st.tuples(st.just(c), offered(c[1], c[2]))),
    st.sampled_from(MATCHERS),
    st.sampled_from(["plain", "plain", "gzip", "zstd"]),
    st.sampled_from([CHUNK_SIZE, EDGE_BYTES, 10_007, 3_001]),
)
def test_counts_with_bases_are_the_full_counts_of_the_content(
    tmp_path_factory: pytest.TempPathFactory,
    drawn: tuple[tuple[str, bytes, bytes, bool], list[tuple[int, bytes]]],
    key: tuple[bytes, str],
    container: str,
    chunk_size: int,
) -> None:
    (how, base, content, unseen), offers = drawn
    pattern = key[0]
    matcher = COMPILED[key]
    bases = [base_of(version_id, b, pattern) for version_id, b in offers]
    version_id, pick = chosen(content, offers)
    if how in ("appended", "identical"):
        assert version_id and len(pick) == len(base)
    if how in ("truncated", "shorter"):
        assert len(pick) < len(base)
    if unseen:  # what the hashes cannot see: still taken to extend the base
        assert version_id and len(pick) == len(base)
    path = tmp_path_factory.mktemp("append") / "app.log"
    path.write_bytes(CONTAINERS[container](content))
    fd = os.open(path, os.O_RDONLY)
    try:
        counts = count_fd(fd, matcher, chunk_size, size=os.fstat(fd).st_size, bases=bases)
    finally:
        os.close(fd)
    assert counts.extends == version_id
    assert counts.fingerprint == formula(content)
    assert counts.compression == (None if container == "plain" else container)
    read = fast_path(content, offers, pick) if container == "plain" and version_id else None
    event(f"{how}, {container}, " + ("read past a base" if read is not None else "read whole"))
    if read is None:  # read whole: exact, whatever the base
        assert (counts.lines, counts.error_lines) == reference_counts(content, pattern)
        assert counts.samples == samples(content, pattern)
        assert counts.bytes_read == len(content)
        return
    # Read past the base: the base's counts carried on, which are the content's own unless
    # it differs from the base between the base's edges.
    carried = pick + content[len(pick) :]
    assert (counts.lines, counts.error_lines) == reference_counts(carried, pattern)
    if pick == content[: len(pick)]:
        assert (counts.lines, counts.error_lines) == reference_counts(content, pattern)
    else:
        assert unseen
    start = content.rfind(b"\n", 0, len(pick)) + 1
    assert counts.samples == samples(content[start:], pattern)
    assert counts.bytes_read == read


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case(), st.sampled_from(MATCHERS))
def test_a_file_object_checks_bases_while_reading_it_whole(
    drawn: tuple[str, bytes, bytes, bool], key: tuple[bytes, str]
) -> None:
    _how, base, content, _unseen = drawn
    pattern = key[0]
    offers = [(11, base), (12, base[: len(base) // 2])]
    bases = [base_of(version_id, b, pattern) for version_id, b in offers]
    counts = count_fileobj(io.BytesIO(content), COMPILED[key], 10_007, bases=bases)
    assert counts.extends == chosen(content, offers)[0]
    assert (counts.lines, counts.error_lines) == reference_counts(content, pattern)
    assert counts.bytes_read == len(content)
    assert counts.fingerprint == formula(content)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from(TOKENS), max_size=30).map(b"".join),
    st.integers(0, 3 * EDGE_BYTES),
    st.lists(st.integers(1, 3 * EDGE_BYTES), min_size=1, max_size=8),
    st.lists(st.integers(0, 3 * EDGE_BYTES), min_size=1, max_size=8),
    st.integers(0, 2**32),
)
def test_the_stream_check_keeps_to_the_rule_in_chunks_of_any_sizes(
    prefix: bytes, more: int, sizes: list[int], cuts: list[int], seed: int
) -> None:
    rng = random.Random(seed)
    content = prefix + rng.randbytes(more)
    offers = [(i + 1, content[:cut]) for i, cut in enumerate(cuts)]
    offers.append((99, flip(content, len(content) - 1) if content else b"x"))
    extension = Extension((version_id, formula(b)) for version_id, b in offers)
    at = 0
    for size in itertools.cycle(sizes):
        if at >= len(content):
            break
        extension.feed(content[at : at + size])
        at += size
    assert extension.extended() == chosen(content, offers)[0]


def test_the_blind_spot_as_documented(tmp_path: Path) -> None:
    """A byte changed between the base's edges: extended all the same; read past the base, its
    counts are the base's carried on, not its own; read whole (compressed), they are its own."""
    base = log_lines(20_000, 1)
    assert len(base) > APPEND_MIN_BYTES + 2 * EDGE_BYTES
    at = base.index(b"\n", len(base) // 2)  # a newline in the middle becomes "\x0b"
    appended = b"FATAL appended\n"
    content = flip(base, at) + appended
    bases = [base_of(7, base, DEFAULT_ERROR_PATTERN)]
    matcher = COMPILED[DEFAULT_ERROR_PATTERN, "python"]
    found = {}
    for name, data in (("plain", content), ("gz", gzip.compress(content))):
        path = tmp_path / name
        path.write_bytes(data)
        with open(path, "rb") as f:
            counts = count_fd(f.fileno(), matcher, size=len(data), bases=bases)
        assert counts.extends == 7
        assert counts.fingerprint == formula(content)
        found[name] = (counts.lines, counts.error_lines)
    assert found["plain"] == reference_counts(base + appended) != reference_counts(content)
    assert found["gz"] == reference_counts(content)


@pytest.mark.parametrize(
    "added", [0, 1, 100, EDGE_BYTES - 1, EDGE_BYTES, EDGE_BYTES + 1, 3 * EDGE_BYTES]
)
@pytest.mark.parametrize("last_line", [b"", b"an unfinished ERR", LONG_LINE])
def test_the_fingerprint_read_past_a_base_is_the_whole_one(
    tmp_path: Path, added: int, last_line: bytes
) -> None:
    """Whatever is appended, from nothing to more than the tail: the fingerprint's tail comes
    from the window, from what follows it, or from both. A last line longer than the window
    leaves where it starts unknown: the file is read whole."""
    base = log_lines(8000, 6) + last_line
    content = base + (b"OR x\n" + log_lines(added // 40 + 1, 7))[:added]
    path = tmp_path / "app.log"
    path.write_bytes(content)
    with open(path, "rb") as f:
        bases = [base_of(9, base, DEFAULT_ERROR_PATTERN)]
        counts = count_fd(f.fileno(), COMPILED[DEFAULT_ERROR_PATTERN, "python"], bases=bases,
                          size=len(content))  # fmt: skip
    assert counts.extends == 9
    assert counts.fingerprint == formula(content)
    assert (counts.lines, counts.error_lines) == reference_counts(content)
    whole = last_line == LONG_LINE
    assert counts.bytes_read == (len(content) if whole else 2 * EDGE_BYTES + added)


def test_a_grown_file_is_read_past_its_base(tmp_path: Path) -> None:
    """8 MiB that extend a 7 MiB base: about 1 MiB read, not 8."""
    content = log_lines(8 * MiB // 38, 3)[: 8 * MiB]
    assert len(content) == 8 * MiB
    base = content[: 7 * MiB]
    path = tmp_path / "app.log"
    path.write_bytes(content)
    for key in MATCHERS:
        with open(path, "rb") as f:
            counts = count_fd(
                f.fileno(), COMPILED[key], size=len(content), bases=[base_of(3, base, key[0])]
            )
        assert counts.extends == 3
        assert counts.bytes_read < 1.3 * MiB
        assert (counts.lines, counts.error_lines) == reference_counts(content, key[0]), key
        assert counts.fingerprint == formula(content)


def test_a_grown_file_is_read_about_once_in_all(tmp_path: Path) -> None:
    """A log that grows in 12 steps, each counted from the last: about once its size read."""
    content = log_lines(100_000, 5)
    path = tmp_path / "app.log"
    matcher = COMPILED[DEFAULT_ERROR_PATTERN, "python"]
    previous: Base | None = None
    total = 0
    for step in range(1, 13):
        now = content[: len(content) * step // 12]
        path.write_bytes(now)
        with open(path, "rb") as f:
            bases = () if previous is None else (previous,)
            counts = count_fd(f.fileno(), matcher, size=len(now), bases=bases)
        assert (counts.lines, counts.error_lines) == reference_counts(now)
        assert counts.extends == (0 if previous is None else step - 1)
        total += counts.bytes_read
        previous = Base(step, counts.fingerprint, counts.lines, counts.error_lines)
    assert total < 1.5 * len(content)


@pytest.mark.parametrize(
    "base",
    [
        Base(0, formula(b"ok\n"), 1, 0),  # 0 is no version
        Base(1, b"x" * 39, 1, 0),
        Base(1, formula(b""), 0, 0),
        Base(1, formula(b"ok\n"), 1, 2),  # more error lines than lines
        Base(1, formula(b"ok\n"), 5, 0),  # more lines than bytes
        Base(True, formula(b"ok\n"), 1, 0),
    ],
)
def test_a_base_that_cannot_be_one_is_left_out(tmp_path: Path, base: Base) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"ok\nERROR x\n")
    with open(path, "rb") as f:
        counts = count_fd(f.fileno(), COMPILED[DEFAULT_ERROR_PATTERN, "python"], bases=[base])
    assert (counts.extends, counts.lines, counts.error_lines) == (0, 2, 1)


def test_counts_left_out_of_equality() -> None:
    assert Counts(1, 0, 1, extends=3) == Counts(1, 0, 1)


# The wire.


def _result(**fields: object) -> Result:
    counts: dict[str, object] = {"lines": 2, "error_lines": 1, "bytes_read": 10, **fields}
    return Result(1, 1, "w:1", Status.DONE, **counts)  # type: ignore[arg-type]


def test_bases_and_extends_travel_and_an_older_worker_sends_no_extends() -> None:
    task = Task(
        5, b"a.log", 9, 1, 1, DEFAULT_ERROR_PATTERN, b"sig", (Base(3, formula(b"x"), 1, 0),)
    )
    assert load_message(pickle.dumps(task), REPLY_TYPES) == task
    assert load_message(pickle.dumps(Task(5, b"a", 9, 1, 1, b"x")), REPLY_TYPES).bases == ()
    sent = _result(fingerprint=formula(b"ERROR x\nok\n"), extends=12)
    received = load_message(pickle.dumps(sent), REQUEST_TYPES)
    assert received == sent and received.extends == 12

    class Older:
        """A result as a worker from before bases pickles it."""

        def __reduce__(self) -> tuple[object, ...]:
            args = (1, 1, "w:1", "done", 2, 1, 10, 0, 0.5, None, (), b"", 3, 4, formula(b"a\nb\n"))
            return Result, args

    older = load_message(pickle.dumps(Older()), REQUEST_TYPES)
    assert (older.extends, older.fingerprint) == (0, formula(b"a\nb\n"))
    assert check_results([older, received]) == [older, received]
    with pytest.raises(MessageRefused, match=r"names workers\.protocol\.Base"):
        load_message(pickle.dumps(_result(samples=(Base(1, b"", 0, 0),))), REQUEST_TYPES)


def test_lines_are_bounded_by_the_content_not_the_bytes_read() -> None:
    fingerprint = struct.pack(">Q", 1000) + bytes(32)
    ok = _result(lines=900, error_lines=3, bytes_read=200, fingerprint=fingerprint, extends=4)
    assert check_results([ok]) == [ok]
    for bad in (
        _result(lines=1001, bytes_read=2000, fingerprint=fingerprint),
        _result(lines=11, bytes_read=10),  # no fingerprint: bytes_read bounds them
    ):
        with pytest.raises(BadRequest, match="lines must be an integer from 0 to the content"):
            check_results([bad])


@pytest.mark.parametrize("extends", [-1, 1 << 53, 1.0, "3", True, None])
def test_extends_must_be_a_version_id_or_0(extends: object) -> None:
    with pytest.raises(BadRequest, match="extends must be a version id or 0"):
        check_results([_result(extends=extends)])


def test_only_a_done_result_extends() -> None:
    changed = Result(1, 1, "w:1", Status.CHANGED, extends=3)
    with pytest.raises(BadRequest, match="only a done result has counts"):
        check_results([changed])


# A real worker.


def _worker(root: Path) -> Worker:
    return Worker(WorkerConfig(("127.0.0.1", 1), b"k", root=os.fsencode(root)))


def test_a_worker_counts_with_the_bases_of_its_task(tmp_path: Path) -> None:
    base = log_lines(12_000, 2) + b"partial line ERR"
    content = base + b"OR and more\n" + log_lines(3000, 4)
    (tmp_path / "app.log").write_bytes(content)
    st = os.stat(tmp_path / "app.log")
    bases = (
        base_of(40, base[:1000], DEFAULT_ERROR_PATTERN),
        base_of(41, base, DEFAULT_ERROR_PATTERN),
        base_of(42, b"another log\n" * 40_000, DEFAULT_ERROR_PATTERN),
    )
    task = Task(1, b"app.log", st.st_size, st.st_mtime_ns, 1, DEFAULT_ERROR_PATTERN, b"", bases)
    result = _worker(tmp_path).count(task)
    assert result.status is Status.DONE
    assert result.extends == 41
    assert (result.lines, result.error_lines) == reference_counts(content)
    assert result.fingerprint == formula(content)
    assert result.bytes_read < len(content) - len(base) + 4 * EDGE_BYTES
    assert load_message(pickle.dumps(result), REQUEST_TYPES) == result
    assert check_results([result]) == [result]
    # More than MAX_BASES: those past it are not looked at.
    padding = tuple(base_of(50 + i, b"other\n" * (i + 1), DEFAULT_ERROR_PATTERN) for i in range(8))
    crowded = padding[:MAX_BASES] + bases
    task_args = (b"app.log", st.st_size, st.st_mtime_ns, 1, DEFAULT_ERROR_PATTERN, b"")
    late = _worker(tmp_path).count(Task(2, *task_args, crowded))
    assert (late.extends, late.lines) == (0, result.lines)
    # A file that changed since it was queued is reported so, bases or not.
    (tmp_path / "app.log").write_bytes(content + b"more\n")
    assert _worker(tmp_path).count(task).status is Status.CHANGED
