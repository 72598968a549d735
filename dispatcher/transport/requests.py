"""What the master accepts from the wire: each request checked before it reaches the master
loop or the ledger, the types a request may name, and the server side of TLS.

The wire itself (the task and result types, the manager class and the client connection) is
``workers.protocol``, which both ends speak; the limits checked here, and the restricted
unpickling, are ``workers.wirechecks``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeGuard

from workers.common import MAX_COUNTERS, TLSFiles, printable
from workers.errors import BadRequest
from workers.fingerprint import FINGERPRINT_BYTES
from workers.protocol import Result, Status, load_tls
from workers.wirechecks import (
    MAX_ATTEMPT,
    MAX_COUNT,
    MAX_ERROR_CHARS,
    MAX_INODE,
    MAX_LEASE_BYTES,
    MAX_RESULTS,
    MAX_SAMPLE_BYTES,
    MAX_SAMPLES,
    MAX_SECONDS,
    MAX_TASK_IDS,
    MAX_WORKER_ID,
)

# ssl loads only where TLS is used.
if TYPE_CHECKING:
    import ssl


def _is_int(value: object, low: int, high: int) -> TypeGuard[int]:
    # bool is an int subclass, and True is no count.
    return type(value) is int and low <= value <= high


def check_worker_id(worker_id: object) -> str:
    """``worker_id`` if it is a short printable string, else BadRequest."""
    if not _is_worker_id(worker_id):
        raise BadRequest(f"worker id must be 1 to {MAX_WORKER_ID} printable characters")
    return worker_id


def _is_worker_id(worker_id: object) -> TypeGuard[str]:
    # Printable also rules out lone surrogates, which no log line or ledger row can encode.
    return (
        type(worker_id) is str and 0 < len(worker_id) <= MAX_WORKER_ID and worker_id.isprintable()
    )


def check_int(value: object, name: str, low: int = 0, high: int = MAX_COUNT) -> int:
    if not _is_int(value, low, high):
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return value


def check_seconds(value: object, name: str) -> float:
    if not _is_seconds(value):
        raise BadRequest(f"{name} must be a number of seconds from 0 to {MAX_SECONDS:g}")
    return float(value)


def _is_seconds(value: object) -> TypeGuard[float]:
    # NaN fails the range test too.
    return type(value) in (int, float) and 0 <= value <= MAX_SECONDS  # type: ignore[operator]


def check_leases(leases: object) -> list[tuple[int, bytes]]:
    """A heartbeat's or hand-back's ``[(task id, lease), ...]``."""
    if type(leases) is not list or len(leases) > MAX_TASK_IDS:
        raise BadRequest(f"leases must be a list of at most {MAX_TASK_IDS} (id, lease) pairs")
    for pair in leases:
        if (
            type(pair) is not tuple
            or len(pair) != 2
            or not _is_int(pair[0], 0, MAX_COUNT)
            or type(pair[1]) is not bytes
            or len(pair[1]) > MAX_LEASE_BYTES
        ):
            raise BadRequest("leases must be (task id, lease bytes) pairs")
    return leases


def check_results(results: object) -> list[Result]:
    """A put's batch, every field checked for type, range and size; BadRequest names the first
    field that is wrong."""
    if type(results) is not list or len(results) > MAX_RESULTS:
        raise BadRequest(f"put() takes a list of at most {MAX_RESULTS} results")
    for result in results:
        if type(result) is not Result:
            raise BadRequest("put() takes Result objects only")
        problem = _result_problem(result)
        if problem is not None:
            task = printable(repr(result.task_id)[:40])
            raise BadRequest(f"result for task {task}: {problem}")
    return results


def _result_problem(r: Result) -> str | None:
    """What is wrong with one result, or None. Straight-line checks: a batch of thousands is
    checked on every put."""
    if not _is_int(r.task_id, 0, MAX_COUNT) or not _is_int(r.attempt, 1, MAX_ATTEMPT):
        return "task id or attempt out of range"
    if type(r.status) is not Status:
        return "bad status"
    if not _is_worker_id(r.worker):
        return "bad worker id"
    if type(r.lease) is not bytes or len(r.lease) > MAX_LEASE_BYTES:
        return "bad lease"
    if not _is_int(r.device, 0, MAX_INODE) or not _is_int(r.inode, 0, MAX_INODE):
        return "device and inode must be integers from 0 to 2**64 - 1"
    fingerprint = r.fingerprint
    if type(fingerprint) is not bytes or len(fingerprint) not in (0, FINGERPRINT_BYTES):
        return f"fingerprint must be empty or {FINGERPRINT_BYTES} bytes"
    if not _is_int(r.extends, 0, MAX_COUNT - 1):
        return "extends must be a version id or 0"
    if not _is_int(r.bytes_read, 0, MAX_COUNT):
        return "bytes_read out of range"
    # A result that extends a base read only past it: its content's length, which its
    # fingerprint opens with, bounds its lines, not the bytes it read.
    content = int.from_bytes(fingerprint[:8], "big") if fingerprint else r.bytes_read
    lines = r.lines
    if not _is_int(lines, 0, min(content, MAX_COUNT)):
        return "lines must be an integer from 0 to the content's length"
    if not _is_int(r.error_lines, 0, lines) or not _is_int(r.long_lines, 0, lines):
        return "error_lines and long_lines must be integers from 0 to lines"
    if not _is_seconds(r.seconds):
        return "seconds out of range"
    if r.error is not None and (
        type(r.error) is not str or len(r.error) > MAX_ERROR_CHARS or not r.error.isprintable()
    ):
        # Printable also means encodable: a lone surrogate would fail at the ledger's write.
        return f"error must be one line of printable text, at most {MAX_ERROR_CHARS} characters"
    samples = r.samples
    if type(samples) is not tuple or len(samples) > MAX_SAMPLES:
        return f"samples must be a tuple of at most {MAX_SAMPLES}"
    for sample in samples:
        if type(sample) is not bytes or len(sample) > MAX_SAMPLE_BYTES:
            return f"each sample must be at most {MAX_SAMPLE_BYTES} bytes"
    counts = r.counts
    if type(counts) is not tuple or len(counts) > MAX_COUNTERS:
        return f"counts must be a tuple of at most {MAX_COUNTERS}"
    for count in counts:
        if not _is_int(count, 0, lines):
            return "each of counts must be an integer from 0 to lines"
    if r.status is not Status.DONE and (lines or r.error_lines or samples or r.extends or counts):
        return "only a done result has counts"
    return None


# What an unpickled request may name. Pickle calls whatever class or function a message
# names, so a message naming anything else (``os.system``...) is refused before it runs.
# Requests name results (a result's status travels as its value); what replies may name is
# ``workers.protocol.REPLY_TYPES``.
REQUEST_TYPES: dict[tuple[str, str], Any] = {
    (t.__module__, t.__qualname__): t for t in (Result, Status)
}


def server_context(files: TLSFiles) -> ssl.SSLContext:
    """The master's TLS: its certificate, and clients' certificates required, from the CA."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_REQUIRED
    return load_tls(context, files)
