"""The counting rules written as plainly as possible: what every fast path is checked against."""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re

DEFAULT = rb"\b(?:ERROR|FATAL|CRITICAL)\b"


def reference_counts(data: bytes, pattern: bytes = DEFAULT) -> tuple[int, int]:
    """(lines, error lines) of uncompressed content, by the rules in docs/counting.md."""
    if not data:
        return 0, 0
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the empty string after a final newline is not a line
    regex = re.compile(pattern)
    errors = sum(1 for line in lines if regex.search(line.removesuffix(b"\r")))
    return len(lines), errors


def content_of(path: str | bytes | os.PathLike[str]) -> bytes:
    """A file's content as the rules count it: decompressed when it is gzip, bzip2, xz or
    zstd (by magic bytes), every frame or stream of it."""
    with open(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\x1f\x8b"):
        return gzip.decompress(data)
    if data.startswith(b"BZh"):
        return bz2.decompress(data)
    if data.startswith(b"\xfd7zXZ\x00"):
        return lzma.decompress(data)
    if data.startswith(b"\x28\xb5\x2f\xfd"):
        try:
            from compression import zstd  # type: ignore[import-not-found]
        except ImportError:
            from backports import zstd
        decompressed: bytes = zstd.decompress(data)
        return decompressed
    return data


def reference_line_counts(
    data: bytes, patterns: list[bytes], long_line_limit: int | None = None
) -> tuple[int, ...]:
    """For each pattern, the lines of uncompressed content it matches (docs/counting.md,
    "Named counters"): a counter counts lines as the error pattern does. With
    ``long_line_limit``, a pattern sees only that many first bytes of each line."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    subjects = [line.removesuffix(b"\r") for line in lines]
    if long_line_limit is not None:
        subjects = [subject[:long_line_limit] for subject in subjects]
    return tuple(
        sum(1 for subject in subjects if re.search(pattern, subject)) for pattern in patterns
    )
