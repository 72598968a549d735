"""How much counting work a queued file is, for sizing the batches workers take.

A batch holds files up to a worker's byte budget; a compressed file costs far more than its
size on disk (it is decompressed, then its larger content counted), so it weighs its size times
a factor. The master does not read files: the name's suffix is the only hint it has, and a
wrong guess only changes how many files share a batch, never what is counted.
"""

from __future__ import annotations

# Work per byte on disk against a plain file's, a low estimate for each format: decompressing
# is slower than counting, zstd about half as costly as gzip per byte on disk, bzip2 and xz far
# costlier, and logs that compress better cost more per byte still.
COMPRESSED_WEIGHTS = {
    b".gz": 32,
    b".tgz": 32,
    b".zst": 16,
    b".tzst": 16,
    b".xz": 128,
    b".txz": 128,
    b".bz2": 256,
}
_LONGEST_SUFFIX = max(map(len, COMPRESSED_WEIGHTS))


def work_weight(path: bytes, size: int) -> int:
    """The weight of ``path`` of ``size`` bytes against a batch's byte budget."""
    dot = path.rfind(b".", -_LONGEST_SUFFIX)
    if dot == -1:
        return size
    return size * COMPRESSED_WEIGHTS.get(path[dot:].lower(), 1)
