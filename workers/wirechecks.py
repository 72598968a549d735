"""The checks of what arrives over the wire, which both ends share.

The limits of what a worker may send, which the master checks every request against
(``dispatcher.transport.requests``) and a correct worker keeps within, and the restricted
unpickling both ends read messages with, each end saying what its messages may name
(``workers.protocol.REPLY_TYPES`` for replies). Together they bound what a message can make
the other end do, whoever sent it; the wire's types themselves are ``workers.protocol``'s.
"""

from __future__ import annotations

import io
import pickle
from typing import Any

from workers.common import printable
from workers.errors import MessageRefused

# The most a worker may send: the master checks every request against these on its server
# thread before anything reaches the master loop or the ledger, so that a key holder cannot
# crash the master, poison the ledger (an integer SQLite cannot hold, a string where a count
# belongs) or fill its memory. A correct worker keeps within them.
MAX_WORKER_ID = 255  # characters; ids are host:pid
MAX_TASK_IDS = 10_000  # ids in one heartbeat or hand-back; a worker holds at most a batch
MAX_RESULTS = 10_000  # results in one put; a worker sends at most a batch
MAX_COUNT = 1 << 53  # lines or bytes of one file: 8 PiB, and exact in a float
MAX_ATTEMPT = 1 << 20
MAX_ERROR_CHARS = 4096
MAX_SAMPLES = 16
MAX_SAMPLE_BYTES = 4096
MAX_LEASE_BYTES = 64
MAX_SECONDS = 1e9
MAX_INODE = (1 << 64) - 1  # st_dev and st_ino are 64-bit; SQLite stores them as written
# A fingerprint is b"" or exactly workers.fingerprint.FINGERPRINT_BYTES long. Counts: one per
# counter of the task, at most workers.common.MAX_COUNTERS.
# Bases offered with one task: each costs the worker up to two 64 KiB reads to check. Tasks
# come from the master, which offers no more than this; a worker looks at no more either.
MAX_BASES = 8


class _WireUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, allowed: dict[tuple[str, str], Any]) -> None:
        super().__init__(io.BytesIO(data))
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[module, name]
        except KeyError:
            name = printable(f"{module}.{name}")
            raise MessageRefused(f"the message names {name}, which is not allowed") from None


def load_message(data: bytes, allowed: dict[tuple[str, str], Any]) -> Any:
    """Unpickle ``data``, refusing any class or function not in ``allowed``."""
    try:
        return _WireUnpickler(data, allowed).load()
    except MessageRefused:
        raise
    except Exception as e:  # a truncated or malformed pickle, or a type given bad arguments
        raise MessageRefused(f"malformed message: {printable(str(e))}") from None
