"""The counting rules written as plainly as possible: what every fast path is checked against."""

from __future__ import annotations

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
