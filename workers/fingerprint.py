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
