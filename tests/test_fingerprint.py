"""The fingerprint of counted content: the accumulator against its formula, on real files plain
and compressed, on the wire, and in the ledger of a real `run --once`."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import io
import itertools
import lzma
import pickle
import random
import sqlite3
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import logdispatch
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.transport.requests import REQUEST_TYPES, check_results
from workers.counting import count_fd, count_fileobj, count_path
from workers.errors import BadRequest
from workers.fingerprint import EDGE_BYTES, FINGERPRINT_BYTES, Fingerprint
from workers.matching import ErrorMatcher
from workers.protocol import Result, Status
from workers.wirechecks import load_message

KiB = 1024
MiB = 1024 * KiB
MATCHER = ErrorMatcher(engine="python")
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "bzip2": bz2.compress,
    "xz": lzma.compress,
}
# Lengths where the head and the tail start or stop overlapping.
EDGE_LENGTHS = [0, 1, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1, 128 * KiB - 1, 128 * KiB, 128 * KiB + 1]


def formula(content: bytes) -> bytes:
    """The fingerprint as defined, on the whole content at once."""
    return (
        struct.pack(">Q", len(content))
        + hashlib.blake2b(content[: 64 * KiB], digest_size=16).digest()
        + hashlib.blake2b(content[-64 * KiB :], digest_size=16).digest()
    )


def log_content(lines: int, seed: int = 0) -> bytes:
    """Log lines that all differ, so that any two regions of the content differ."""
    rng = random.Random(seed)
    return b"".join(
        b"2026-12-03 10:%02d:%02d line %08d %s\n"
        % (i // 60 % 60, i % 60, i, b"ERROR failed" if rng.random() < 0.01 else b"INFO ok")
        for i in range(lines)
    )


def test_the_edge_and_the_size_are_as_documented() -> None:
    assert 64 * KiB == EDGE_BYTES
    assert len(Fingerprint().digest()) == FINGERPRINT_BYTES == 40


@settings(max_examples=80, deadline=None)
@given(
    length=st.one_of(st.sampled_from(EDGE_LENGTHS), st.integers(0, 3 * MiB)),
    seed=st.integers(0, 2**32),
    sizes=st.one_of(
        st.sampled_from([1, 7, 65535, 65536, 65537, MiB]).map(lambda size: [size]),
        st.lists(st.integers(1, 200 * KiB), min_size=1, max_size=12),  # chunks of random sizes
    ),
)
def test_the_accumulator_keeps_to_the_formula(length: int, seed: int, sizes: list[int]) -> None:
    if sizes[0] < 64:  # so many tiny chunks would be slow, not more telling
        length = min(length, 300 * KiB)
    content = random.Random(seed).randbytes(length)
    fingerprint = Fingerprint()
    chunks = []
    at = 0
    for size in itertools.cycle(sizes):
        if at >= length:
            break
        chunks.append(content[at : at + size])
        at += size
    assert list(fingerprint.fed(chunks)) == chunks  # passed on unchanged
    assert fingerprint.digest() == formula(content)
    assert fingerprint.digest() == formula(content)  # digest() ends nothing


@pytest.mark.parametrize("length", EDGE_LENGTHS)
def test_edge_lengths_fed_a_byte_at_a_time(length: int) -> None:
    content = random.Random(length).randbytes(length)
    fingerprint = Fingerprint()
    for i in range(length):
        fingerprint.feed(content[i : i + 1])
    fingerprint.feed(b"")
    assert fingerprint.digest() == formula(content)


def _write_copies(folder: Path, content: bytes) -> list[Path]:
    plain = folder / "app.log"
    plain.write_bytes(content)
    copies = [plain]
    for suffix, compress in zip((".gz", ".bz2", ".xz"), COMPRESSORS.values(), strict=True):
        copy = folder / f"app.log{suffix}"
        copy.write_bytes(compress(content))
        copies.append(copy)
    return copies


@pytest.mark.parametrize("lines", [0, 3, 2_000, 40_000], ids=["empty", "tiny", "64k+", "1M"])
def test_a_plain_file_and_its_compressed_copies_have_one_fingerprint(
    tmp_path: Path, lines: int
) -> None:
    content = log_content(lines)
    expected = formula(content)
    for path in _write_copies(tmp_path, content):
        for chunk_size in (4 * MiB, 65537, 4096):
            counts = count_path(str(path), MATCHER, chunk_size=chunk_size)
            assert counts.fingerprint == expected, (path.name, chunk_size)
            assert counts.bytes_read == len(content)
        with open(path, "rb") as f:  # as a worker counts: the size known, read whole if small
            counts = count_fd(f.fileno(), MATCHER, size=path.stat().st_size)
        assert counts.fingerprint == expected, path.name
    assert count_fileobj(io.BytesIO(gzip.compress(content)), MATCHER).fingerprint == expected


def test_the_fingerprint_tells_head_tail_and_length_apart_but_not_the_middle(
    tmp_path: Path,
) -> None:
    content = log_content(20_000)  # about 700 KB: a middle beyond both edges
    assert len(content) > 4 * EDGE_BYTES
    middle = len(content) // 2

    def flip(at: int) -> bytes:
        return content[:at] + bytes([content[at] ^ 1]) + content[at + 1 :]

    variants = {
        "head": flip(0),
        "end of the head": flip(EDGE_BYTES - 1),
        "start of the tail": flip(len(content) - EDGE_BYTES),
        "tail": flip(len(content) - 1),
        "longer": content + b"\n",
        "shorter": content[:-1],
        "same length, shifted": content[1:] + b"\n",
    }
    path = tmp_path / "app.log"
    path.write_bytes(content)
    original = count_path(str(path), MATCHER).fingerprint
    assert original == formula(content)
    for name, variant in variants.items():
        packed = tmp_path / "variant.gz"
        packed.write_bytes(gzip.compress(variant))
        assert count_path(str(packed), MATCHER).fingerprint != original, name
    # What it cannot see: the same length, head and tail, a change between them.
    for at in (EDGE_BYTES, middle, len(content) - EDGE_BYTES - 1):
        path.write_bytes(flip(at))
        assert count_path(str(path), MATCHER).fingerprint == original, at


def _result(**fields: object) -> Result:
    return Result(1, 1, "w:1", Status.DONE, 2, 1, 10, **fields)  # type: ignore[arg-type]


def test_the_fingerprint_travels_and_an_older_worker_sends_none() -> None:
    sent = _result(fingerprint=formula(b"ERROR x\nok\n"))
    received = load_message(pickle.dumps(sent), REQUEST_TYPES)
    assert received == sent

    class Older:
        """A result as a worker from before the fingerprint pickles it."""

        def __reduce__(self) -> tuple[object, ...]:
            return Result, (1, 1, "w:1", "done", 2, 1, 10, 0, 0.5, None, (b"ERROR x",), b"", 3, 4)

    older = load_message(pickle.dumps(Older()), REQUEST_TYPES)
    assert (older.fingerprint, older.inode, older.samples) == (b"", 4, (b"ERROR x",))
    assert check_results([older, received]) == [older, received]


@pytest.mark.parametrize(
    "fingerprint", [b"x" * 39, b"x" * 41, bytearray(40), "x" * 40, None, b"x" * 80]
)
def test_a_fingerprint_of_another_size_or_type_is_refused(fingerprint: object) -> None:
    with pytest.raises(BadRequest, match="fingerprint must be empty or 40 bytes"):
        check_results([_result(fingerprint=fingerprint)])


def test_run_once_stores_one_fingerprint_for_a_log_and_its_gzip_copy(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    content = log_content(160_000)  # past one 4 MiB read: counted in chunks
    assert len(content) > 4 * MiB
    (root / "app.log").write_bytes(content)
    (root / "app.log.1.gz").write_bytes(gzip.compress(content))
    (root / "other.log").write_bytes(b"ERROR other\n")
    state = tmp_path / "state"
    run = logdispatch("run", str(root), "--once", "--workers", "1", "--state", str(state))
    assert run.returncode == 0, run.stderr
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        rows = dict(db.execute("SELECT path, fingerprint FROM versions WHERE status = 'done'"))
    assert rows == {
        b"app.log": formula(content),
        b"app.log.1.gz": formula(content),
        b"other.log": formula(b"ERROR other\n"),
    }
    assert len(rows[b"app.log"]) == 40
    # Nothing shows it: the summary in every format, and `count`.
    for shown in (
        logdispatch("summary", "--state", str(state), "--format", "json"),
        logdispatch("summary", "--state", str(state), "--format", "csv"),
        logdispatch("count", "--json", str(root / "app.log"), str(root / "app.log.1.gz")),
    ):
        assert shown.returncode == 0, shown.stderr
        assert "fingerprint" not in shown.stdout
        assert formula(content).hex() not in shown.stdout
