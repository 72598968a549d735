"""Ledgers written by the master's own Ledger class, with files finished over hours or days:
what a run of the real pipeline in a test cannot give (it finishes everything in a second)."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from dispatcher.ledger.writer import Ledger
from dispatcher.versions import VersionStatus
from workers.protocol import Result, Status

# Names and log lines that must stay text in every view: markup, quotes, ampersands, bytes
# that are not UTF-8, a newline.
HOSTILE_NAMES = (
    b"<script>alert(1)</script>.log",
    b'edge/"quoted" & <b>bold</b>.log',
    b"edge/bad-\xff\xfe-utf8.log",
    b"edge/new\nline.log",
)
HOSTILE_LINE = b'ERROR <img src=x onerror=alert(2)> & "quoted" \xff'


@dataclass(frozen=True)
class Finished:
    """One file's latest version as the ledger will hold it."""

    path: bytes
    finished_at: float
    status: str = "done"  # done, failed or vanished
    lines: int = 0
    error_lines: int = 0
    samples: tuple[bytes, ...] = ()
    worker: str = "host-a:100"
    error: str | None = None
    attempts: int = 1
    size: int = field(default=1000)


def write_ledger(state: Path, root: Path, files: Iterable[Finished]) -> None:
    """A ledger in ``state`` for ``root`` holding ``files``, as a master would have written it."""
    ledger = Ledger(state, root)
    try:
        for file in files:
            version = ledger.add_version(file.path, file.size, 1, file.finished_at - 1)
            if file.status == "done":
                result = Result(
                    version, file.attempts, file.worker, Status.DONE, file.lines,
                    file.error_lines, file.size, samples=file.samples,
                )  # fmt: skip
                ledger.record_result(result, file.finished_at)
            else:
                ledger.record_end(
                    version, VersionStatus(file.status), file.error, file.finished_at,
                    file.worker, file.attempts,
                )  # fmt: skip
    finally:
        ledger.close()


_MESSAGES = (
    b"%s ERROR payments.db: query %d failed after %d ms",
    b"%s ERROR upstream timed out after %d ms (attempt %d)",
    b"%s FATAL disk /var/lib/data full: %d bytes left of %d",
    b"%s CRITICAL cache node 10.0.%d.%d evicted",
)


def busy_day(
    start: float, files: int = 300, hours: float = 10, seed: int = 20261120
) -> list[Finished]:
    """``files`` files from six hosts finished over ``hours`` from ``start``, busier at midday;
    one host much worse than the others, some failed or vanished, and the hostile names."""
    rng = random.Random(seed)
    hosts = {"web-01": 0.01, "web-02": 0.012, "app-01": 0.03, "app-02": 0.11, "db-01": 0.004}
    hosts["batch-01"] = 0.02
    found = []
    for i in range(files):
        host = rng.choice(list(hosts))
        when = start + hours * 3600 * rng.betavariate(2.2, 2.2)
        path = f"{host}/{rng.choice(('app', 'nginx', 'jobs'))}/{i:04d}.log".encode()
        if i % 97 == 13:
            found.append(
                Finished(path, when, "failed", error="gzip: unexpected end of stream", attempts=3)
            )
            continue
        if i % 89 == 7:
            found.append(Finished(path, when, "vanished", error="deleted before it was counted"))
            continue
        lines = rng.randrange(200, 20_000)
        errors = round(lines * hosts[host] * rng.uniform(0, 2))
        samples = tuple(
            rng.choice(_MESSAGES) % (b"2026-11-20 10:00:00", rng.randrange(900), rng.randrange(9))
            for _ in range(min(errors, 3))
        )
        found.append(Finished(path, when, "done", lines, errors, samples, f"{host}-w:{i % 3}"))
    for n, name in enumerate(HOSTILE_NAMES):
        found.append(
            Finished(name, start + 3600 * (n + 1), "done", 50, 30 + n, (HOSTILE_LINE,), "h:1")
        )
    found.append(
        Finished(b"edge/<i>gone</i>.log", start + 60, "failed", error="<script>x</script> & more")
    )
    return found
