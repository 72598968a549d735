"""zstd files: counted as their decompressed content, with gzip's guarantees (docs/counting.md)."""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import COUNT_HEADER, logdispatch, write_bomb
from reference import reference_counts

from dispatcher.transport.weight import work_weight
from workers.counting import CHUNK_SIZE, count_fd, count_fileobj, count_path
from workers.errors import CountError
from workers.expansion import Expansion, detect_compression
from workers.matching import DEFAULT_ERROR_PATTERN, ErrorMatcher

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

MiB = 1024 * 1024
DEFAULT = ErrorMatcher(engine="python")
# A comment changes nothing a regex matches but takes the pattern off the literal fast path.
GENERAL = ErrorMatcher(DEFAULT_ERROR_PATTERN + rb"(?#general)")
LOG = (
    b"".join(
        b"2026-11-27 10:00:%02d %s [worker-%d] request %d\r\n" % (i % 60, level, i % 7, i)
        for i, level in enumerate([b"INFO", b"ERROR", b"WARN", b"FATAL", b"DEBUG", b"ERRORS"] * 400)
    )
    + b"no final newline ERROR"
)
TRUNCATED = "corrupt zstd data: Compressed file ended before the end-of-stream marker was reached"


def skippable(payload: bytes, magic: int = 0x184D2A50) -> bytes:
    """A skippable frame: metadata that holds no content, as pzstd writes before each frame."""
    return struct.pack("<II", magic, len(payload)) + payload


def counted(path: Path, matcher: ErrorMatcher, chunk_size: int = CHUNK_SIZE) -> tuple[int, int]:
    counts = count_path(str(path), matcher, chunk_size)
    assert counts.compression == "zstd"
    return counts.lines, counts.error_lines


@pytest.mark.parametrize("matcher", [DEFAULT, GENERAL], ids=["literal", "general"])
@pytest.mark.parametrize("chunk_size", [1, 7, 777, 64 * 1024, CHUNK_SIZE])
def test_counts_are_those_of_the_content(
    tmp_path: Path, matcher: ErrorMatcher, chunk_size: int
) -> None:
    archive = tmp_path / "app.log.zst"
    archive.write_bytes(zstd.compress(LOG))
    plain = tmp_path / "app.log"
    plain.write_bytes(LOG)
    assert counted(archive, matcher, chunk_size) == reference_counts(LOG) == (2401, 801)
    expected = count_path(str(plain), matcher, chunk_size)
    counts = count_path(str(archive), matcher, chunk_size)
    assert counts.bytes_read == len(LOG)
    assert (counts.samples, counts.long_lines) == (expected.samples, expected.long_lines)
    # From a descriptor and from a file object, the size on disk known or not.
    with open(archive, "rb") as f:
        assert count_fd(f.fileno(), matcher, chunk_size) == counts
        f.seek(0)
        size = os.fstat(f.fileno()).st_size
        assert count_fileobj(f, matcher, chunk_size, size=size) == counts


def test_several_frames_count_as_their_concatenated_content(tmp_path: Path) -> None:
    frames = [LOG[:1000], LOG[1000:1001], LOG[1001:5000], LOG[5000:]]
    archive = tmp_path / "app.log.zst"
    archive.write_bytes(b"".join(zstd.compress(frame) for frame in frames))
    assert counted(archive, DEFAULT) == counted(archive, GENERAL, 777) == reference_counts(LOG)

    # Skippable frames, before the first frame (as pzstd writes them) and between, add nothing.
    pzstd_like = tmp_path / "pzstd.zst"
    pzstd_like.write_bytes(
        b"".join(skippable(b"meta") + zstd.compress(frame) for frame in frames)
        + skippable(b"", magic=0x184D2A5F)
    )
    assert counted(pzstd_like, DEFAULT, 7) == reference_counts(LOG)
    assert count_path(str(pzstd_like), DEFAULT).bytes_read == len(LOG)

    # An empty frame is empty content; so is a file of skippable frames alone.
    for data in (zstd.compress(b""), skippable(b"index")):
        empty = tmp_path / "empty.zst"
        empty.write_bytes(data)
        assert counted(empty, DEFAULT) == (0, 0)


def test_the_magic_bytes_tell_zstd_not_the_name(tmp_path: Path) -> None:
    assert detect_compression(b"\x28\xb5\x2f\xfd\x04\x58") == "zstd"
    assert detect_compression(b"\x5a\x2a\x4d\x18\x00\x00") == "zstd"  # a skippable frame
    assert detect_compression(b"\x60\x2a\x4d\x18\x00\x00") is None
    named = tmp_path / "app.log"
    named.write_bytes(zstd.compress(LOG))
    assert counted(named, DEFAULT) == reference_counts(LOG)
    plain = tmp_path / "plain.zst"
    plain.write_bytes(b"plain ERROR\n")
    assert count_path(str(plain), DEFAULT).compression is None
    short = tmp_path / "short.zst"
    short.write_bytes(b"\x28\xb5\x2f")  # shorter than the magic: plain
    assert count_path(str(short), DEFAULT).lines == 1


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: d[:-10], TRUNCATED),
        (lambda d: d[: len(d) // 2], TRUNCATED),
        (lambda d: d[:4], TRUNCATED),
        (lambda d: d[:20] + bytes(b ^ 0x55 for b in d[20:60]) + d[60:], None),
        (lambda d: d[:-4] + bytes(b ^ 0xFF for b in d[-4:]), None),  # bad checksum
        (lambda d: d + b"garbage!", None),
        (lambda d: skippable(b"meta") + b"garbage!", None),
    ],
    ids=["cut-end", "cut-half", "magic-only", "flipped", "checksum", "trailing", "no-frame"],
)
def test_truncated_or_corrupt_data_fails_that_file_with_the_reason(
    tmp_path: Path, damage: Callable[[bytes], bytes], reason: str | None
) -> None:
    checked = zstd.compress(LOG, options={zstd.CompressionParameter.checksum_flag: 1})
    broken = tmp_path / "broken.zst"
    broken.write_bytes(damage(checked))
    for chunk_size in (1, 777, CHUNK_SIZE):
        with pytest.raises(CountError, match=r"^corrupt zstd data: ") as caught:
            count_path(str(broken), DEFAULT, chunk_size)
        message = str(caught.value)
        assert "\n" not in message
        if reason is not None:
            assert message == reason
    # The files beside it count as before.
    good = tmp_path / "good.zst"
    good.write_bytes(zstd.compress(LOG))
    assert counted(good, DEFAULT) == reference_counts(LOG)


def test_a_frame_asking_for_a_huge_window_is_refused_before_it_is_allocated(
    tmp_path: Path,
) -> None:
    # Streamed without a known size, the frame's header declares a 1 GiB window.
    compressor = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: 30})
    wide = compressor.compress(LOG) + compressor.flush()
    # A single-segment frame declaring 1 TiB of content, holding a 5-byte raw block.
    header = b"\x28\xb5\x2f\xfd\xe0" + struct.pack("<Q", 1 << 40)
    claimed = header + struct.pack("<I", (5 << 3) | 1)[:3] + b"hello"
    for data in (wide, claimed):
        archive = tmp_path / "wide.zst"
        archive.write_bytes(data)
        with pytest.raises(CountError, match=r"^corrupt zstd data: .*too much memory"):
            count_path(str(archive), DEFAULT)
    # A window of 128 MiB, as `zstd --long` writes, is decompressed.
    compressor = zstd.ZstdCompressor(options={zstd.CompressionParameter.window_log: 27})
    archive = tmp_path / "long.zst"
    archive.write_bytes(compressor.compress(LOG) + compressor.flush())
    assert counted(archive, DEFAULT) == reference_counts(LOG)


def test_a_zstd_bomb_is_refused_once_past_the_limit(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.log"
    assert write_bomb(bomb, "zstd", 1024 * MiB) < 1 * MiB  # many frames
    started: list[bool] = []
    expansion = Expansion(64 * MiB, on_start=lambda: started.append(True))
    with pytest.raises(CountError) as caught:
        count_path(str(bomb), DEFAULT, expansion=expansion)
    assert str(caught.value) == (
        "zstd data expands past 64 MiB (--max-expanded): refused as a decompression bomb"
    )
    assert started == [True]

    single = tmp_path / "single.zst"  # one frame
    with zstd.open(single, "wb") as f:
        for _ in range(64):
            f.write(bytes(4 * MiB))
    assert single.stat().st_size < 1 * MiB
    with pytest.raises(CountError, match=r"^zstd data expands past 100 MiB \(--max-expanded\)"):
        count_path(str(single), GENERAL, expansion=Expansion(100 * MiB))


@pytest.mark.parametrize("chunk_size", [777, CHUNK_SIZE])
def test_content_of_exactly_the_limit_counts(tmp_path: Path, chunk_size: int) -> None:
    archive = tmp_path / "app.log.zst"
    archive.write_bytes(zstd.compress(LOG[:1000]) + zstd.compress(LOG[1000:]))
    expected = count_path(str(archive), DEFAULT, chunk_size)
    exact = count_path(str(archive), DEFAULT, chunk_size, expansion=Expansion(len(LOG)))
    assert exact == expected and exact.bytes_read == len(LOG)
    with pytest.raises(CountError, match=r"^zstd data expands past"):
        count_path(str(archive), DEFAULT, chunk_size, expansion=Expansion(len(LOG) - 1))


class _FailingDisk(io.BytesIO):
    """A file whose reads past its first bytes fail as a failing disk's do."""

    def read(self, size: int | None = -1, /) -> bytes:
        if self.tell() >= 16:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return super().read(size if size is None or size < 0 else min(size, 16 - self.tell()))


def test_an_io_error_is_not_called_corrupt_data() -> None:
    with pytest.raises(OSError) as caught:
        count_fileobj(_FailingDisk(zstd.compress(LOG)), DEFAULT)
    assert caught.value.errno == errno.EIO
    assert not isinstance(caught.value, CountError)


def test_zst_files_weigh_in_batches_like_compressed_ones() -> None:
    assert work_weight(b"app.log.zst", 100) == work_weight(b"x.TZST", 100) == 1600
    assert work_weight(b"app.log.gz", 100) == 3200
    assert work_weight(b"app.zst.log", 100) == 100


def test_count_shows_zstd_end_to_end(tmp_path: Path) -> None:
    archive = tmp_path / "app.log.zst"
    archive.write_bytes(zstd.compress(LOG[:3000]) + zstd.compress(LOG[3000:]))
    broken = tmp_path / "broken.zst"
    broken.write_bytes(zstd.compress(LOG)[:-10])
    lines, errors = reference_counts(LOG)

    result = logdispatch("count", "--json", str(archive))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    [entry] = document["files"]
    assert (entry["lines"], entry["error_lines"]) == (lines, errors)
    assert (entry["compression"], entry["bytes"]) == ("zstd", len(LOG))

    text = logdispatch("count", str(archive), str(broken))
    assert text.returncode == 1
    totals = [str(lines), str(errors), "total"]
    assert text.stdout.split() == [*COUNT_HEADER, str(lines), str(errors), str(archive), *totals]
    assert text.stderr == f"logdispatch count: {broken}: {TRUNCATED}\n"


def test_run_once_counts_a_zst_file_in_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "plain.log").write_bytes(LOG)
    (root / "app.log.zst").write_bytes(zstd.compress(LOG))
    (root / "pzstd.log.zst").write_bytes(skippable(b"meta") + zstd.compress(LOG[:100]))
    state = str(tmp_path / "state")
    run = logdispatch("run", str(root), "--once", "--workers", "2", "--state", state)
    assert run.returncode == 0, run.stderr
    document = json.loads(logdispatch("summary", "--state", state, "--format", "json").stdout)
    files = {f["path"]: f for f in document["files"]}
    assert {path: (f["status"], f["lines"], f["error_lines"]) for path, f in files.items()} == {
        "plain.log": ("done", *reference_counts(LOG)),
        "app.log.zst": ("done", *reference_counts(LOG)),
        "pzstd.log.zst": ("done", *reference_counts(LOG[:100])),
    }
