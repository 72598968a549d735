"""The fingerprint of content: its length, a hash of its first bytes and one of its last.

``struct.pack(">Q", len(C)) + blake2b(C[:EDGE_BYTES]) + blake2b(C[-EDGE_BYTES:])``, each hash
of HASH_BYTES: the same content gives the same fingerprint whatever file or compression it
came in. The three parts are kept apart rather than hashed together so that a version that
grew can be told to extend an earlier one: its head hash is the earlier head hash, and the
bytes before the earlier end hash to the earlier tail hash. Only the edges are hashed, so
fingerprinting costs the same for any size of content; what that cannot see is in
docs/counting.md ("Fingerprint").
"""

from __future__ import annotations

import hashlib
import struct
from collections import deque
from collections.abc import Iterable, Iterator

# Bytes hashed at each end of the content: the whole of a small log, and enough of a big one's
# start (headers, first timestamps) and end to tell it from another of the same length.
EDGE_BYTES = 64 * 1024
HASH_BYTES = 16
_LENGTH = struct.Struct(">Q")
FINGERPRINT_BYTES = _LENGTH.size + 2 * HASH_BYTES


class Fingerprint:
    """The fingerprint of content fed in order, a chunk at a time, in chunks of any sizes.

    The head is hashed as it comes; the tail is hashed at the end, from the last chunks, kept
    by reference (never copied) as long as they hold bytes of the last EDGE_BYTES.
    """

    __slots__ = ("_head", "_head_room", "_size", "_tail", "_tail_size")

    def __init__(self) -> None:
        self._size = 0
        self._head = hashlib.blake2b(digest_size=HASH_BYTES)
        self._head_room = EDGE_BYTES  # bytes the head hash still takes
        self._tail: deque[bytes] = deque()
        self._tail_size = 0  # bytes in self._tail

    def feed(self, chunk: bytes) -> None:
        size = len(chunk)
        if not size:
            return
        self._size += size
        room = self._head_room
        if room:
            if size <= room:
                self._head.update(chunk)
                self._head_room = room - size
            else:
                self._head.update(memoryview(chunk)[:room])
                self._head_room = 0
        tail = self._tail
        tail.append(chunk)
        self._tail_size += size
        # The oldest chunk goes once the others hold the last EDGE_BYTES without it.
        while self._tail_size - len(tail[0]) >= EDGE_BYTES:
            self._tail_size -= len(tail.popleft())

    def fed(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """``chunks`` passed on unchanged, each fed first."""
        for chunk in chunks:
            self.feed(chunk)
            yield chunk

    def digest(self) -> bytes:
        """The FINGERPRINT_BYTES fingerprint of all content fed so far."""
        head = self._head.digest()
        if self._size <= EDGE_BYTES:
            tail = head  # both edges are the whole content
        else:
            hashed = hashlib.blake2b(digest_size=HASH_BYTES)
            skip = self._tail_size - EDGE_BYTES  # less than the first chunk's length
            for chunk in self._tail:
                hashed.update(memoryview(chunk)[skip:] if skip else chunk)
                skip = 0
            tail = hashed.digest()
        return _LENGTH.pack(self._size) + head + tail


def edge_hash(data: bytes | memoryview) -> bytes:
    """The hash of one edge of content, as a fingerprint holds it."""
    return hashlib.blake2b(data, digest_size=HASH_BYTES).digest()


def join(length: int, head: bytes, tail: bytes) -> bytes:
    """The fingerprint of content of ``length`` bytes, from the hashes of its two edges."""
    return _LENGTH.pack(length) + head + tail


def split(fingerprint: bytes) -> tuple[int, bytes, bytes] | None:
    """A fingerprint's (length, head hash, tail hash); None when it is not one."""
    if type(fingerprint) is not bytes or len(fingerprint) != FINGERPRINT_BYTES:
        return None
    (length,) = _LENGTH.unpack_from(fingerprint)
    head = fingerprint[_LENGTH.size : _LENGTH.size + HASH_BYTES]
    return length, head, fingerprint[_LENGTH.size + HASH_BYTES :]


def extends(head: bytes | memoryview, window: bytes | memoryview, fingerprint: bytes) -> bool:
    """Whether content extends the content whose fingerprint is given (docs/counting.md,
    "Extending an earlier version"), from its first min(L, EDGE_BYTES) bytes (``head``) and
    the EDGE_BYTES or fewer ending at L (``window``), L being the earlier length."""
    parts = split(fingerprint)
    if parts is None:
        return False
    length, head_hash, tail_hash = parts
    return (
        length >= 1
        and len(head) == min(length, EDGE_BYTES)
        and len(window) == min(length, EDGE_BYTES)
        and edge_hash(head) == head_hash
        and edge_hash(window) == tail_hash
    )


class Extension:
    """Which of some earlier contents the content fed in order extends, a chunk at a time.

    Fed the same chunks as a ``Fingerprint``: it keeps the content's first EDGE_BYTES, and
    hashes for each earlier content the EDGE_BYTES ending at its length L as the stream
    passes them, whatever the chunks (a window may span several).
    """

    __slots__ = ("_head", "_size", "_windows")

    def __init__(self, bases: Iterable[tuple[int, bytes]]) -> None:
        """``bases``: (version id, fingerprint) pairs; those that are no fingerprint of
        content of at least one byte are left out."""
        self._size = 0
        self._head = bytearray()
        # Per base: its id, fingerprint, window start and end, and the window's running hash.
        self._windows: list[tuple[int, bytes, int, int, hashlib.blake2b]] = []
        for version_id, fingerprint in bases:
            parts = split(fingerprint)
            if parts is None or parts[0] < 1:
                continue
            length = parts[0]
            hashed = hashlib.blake2b(digest_size=HASH_BYTES)
            self._windows.append(
                (version_id, fingerprint, max(0, length - EDGE_BYTES), length, hashed)
            )

    def feed(self, chunk: bytes) -> None:
        size = len(chunk)
        if not size:
            return
        start = self._size
        end = start + size
        if start < EDGE_BYTES:
            self._head += chunk[: EDGE_BYTES - start]
        view = memoryview(chunk)
        for _id, _fingerprint, low, high, hashed in self._windows:
            lo = max(low, start)
            hi = min(high, end)
            if lo < hi:
                hashed.update(view[lo - start : hi - start])
        self._size = end

    def fed(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """``chunks`` passed on unchanged, each fed first."""
        for chunk in chunks:
            self.feed(chunk)
            yield chunk

    def extended(self) -> int:
        """The version id of the longest earlier content that all content fed so far extends
        (the first given among equals), 0 for none."""
        best = 0
        best_length = 0
        for version_id, fingerprint, _low, length, hashed in self._windows:
            if length > self._size or length <= best_length:
                continue
            parts = split(fingerprint)
            assert parts is not None
            _length, head_hash, tail_hash = parts
            head = bytes(self._head[: min(length, EDGE_BYTES)])
            if edge_hash(head) == head_hash and hashed.digest() == tail_hash:
                best, best_length = version_id, length
        return best
