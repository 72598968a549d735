"""Compressed content: told by its magic bytes, decompressed as a stream, bounded against bombs.

gzip, bzip2, xz and zstd are counted as their decompressed content (docs/counting.md, "Compressed
files"), which may expand to at most ``Expansion.limit`` bytes (--max-expanded).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import sys
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import BinaryIO

from workers.common import MAX_EXPANDED_BYTES, format_size
from workers.errors import CountError
from workers.fingerprint import Extension, Fingerprint
from workers.matching import ErrorMatcher, count_chunks
from workers.scans import Counts

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    from backports import zstd

# The largest window a zstd frame may ask for: 2**27 bytes (128 MiB), libzstd's and the zstd
# tool's default. A frame's header declares its window (a single-segment frame's is its whole
# content size); one declaring more is refused as corrupt before anything is allocated, so a
# frame claiming a huge window or content size costs no more memory than this.
_ZSTD_WINDOW_LOG_MAX = 27

_DECOMPRESSORS: dict[str, Callable[[BinaryIO], io.BufferedIOBase]] = {
    "gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"),
    "bzip2": bz2.BZ2File,
    "xz": lzma.LZMAFile,
    "zstd": lambda f: zstd.ZstdFile(
        f, options={zstd.DecompressionParameter.window_log_max: _ZSTD_WINDOW_LOG_MAX}
    ),
}
_COMPRESSION_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
# zstd's skippable frames (magic 50..5f 2a 4d 18, then a length and that many bytes of
# metadata) hold no content: libzstd skips them wherever they are. A file may begin with one
# (pzstd puts one before each frame), so its magic tells zstd too.
_ZSTD_SKIPPABLE_MAGIC = b"\x2a\x4d\x18"
# What the decompressors raise on damaged or truncated input.
_CORRUPT_ERRORS = (EOFError, zlib.error, lzma.LZMAError, zstd.ZstdError, OSError)
# How many first bytes tell every format above.
MAGIC_BYTES = max(len(magic) for magic, _ in _COMPRESSION_MAGIC)


@dataclass(frozen=True, slots=True)
class Expansion:
    """How far compressed content may expand, and who hears when it is about to.

    ``limit``: the most decompressed bytes of one file; more is refused as a decompression bomb.
    ``on_start``: called once content is found compressed, before it is decompressed: its
    counting may take long, so a caller holding results of other files sends them first.
    """

    limit: int = MAX_EXPANDED_BYTES
    on_start: Callable[[], None] | None = None


def detect_compression(magic: bytes) -> str | None:
    for prefix, name in _COMPRESSION_MAGIC:
        if magic.startswith(prefix):
            return name
    if len(magic) >= 4 and magic[0] & 0xF0 == 0x50 and magic[1:4] == _ZSTD_SKIPPABLE_MAGIC:
        return "zstd"
    return None


def count_compressed(
    f: BinaryIO,
    compression: str,
    matcher: ErrorMatcher,
    chunk_size: int,
    limit: int,
    bases: Sequence[tuple[int, bytes]] = (),
) -> Counts:
    """Count the decompressed content of ``f``, read from its start; CountError when it is
    corrupt or expands past ``limit`` bytes. ``bases``: (version id, fingerprint) of earlier
    contents it may extend, checked on the way (Counts.extends)."""
    fingerprint = Fingerprint()
    extension = Extension(bases) if bases else None
    try:
        with _DECOMPRESSORS[compression](f) as stream:
            chunks = fingerprint.fed(_expanded_chunks(stream, chunk_size, limit, compression))
            if extension is not None:
                chunks = extension.fed(chunks)
            counts = count_chunks(chunks, matcher)
    except _CORRUPT_ERRORS as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise  # a real I/O error of the underlying file, not bad data
        reason = " ".join(str(e).split()) or type(e).__name__
        raise CountError(f"corrupt {compression} data: {reason}") from None
    extends = 0 if extension is None else extension.extended()
    return replace(
        counts, compression=compression, fingerprint=fingerprint.digest(), extends=extends
    )


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
