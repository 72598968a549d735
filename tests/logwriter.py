"""A small application that logs, for the rotation tests: run as a program, it appends lines to
one log file for a given time and keeps a copy of every byte it wrote in a record file outside
the watched root, so that what it wrote is known whatever became of the log.

    python tests/logwriter.py LOG RECORD --mode hup|per-write|append --seconds S --seed N

Modes, one for each way an application meets its log's rotation:

- ``hup``: keeps the log open and reopens it, between two lines, after a SIGHUP (what
  logrotate's ``postrotate`` sends once it created the new log).
- ``per-write``: opens, appends and closes the log for every line, so it never holds a file
  that logrotate may be compressing.
- ``append``: opens the log once with O_APPEND and never reopens it (``copytruncate``): after
  the truncation its writes land at the new end of the same file.

The log is opened without O_CREAT: logrotate's ``create`` makes the new log, and an
application that created it itself between logrotate's rename and its create would have its
file set aside by logrotate. Lines come in bursts with pauses longer than the master's settle
time, so that the log is counted while it grows and archives are made of content already
counted under another name. Some lines end in CRLF, and some are written in two writes.
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import signal
import time

# (level word, share of lines): the default error pattern takes ERROR, FATAL and CRITICAL as
# whole words, so `[ERROR]` and `x-FATAL-x` are error lines, `ERRORS` and `error` are not.
LEVELS = [
    (b"INFO", 40),
    (b"DEBUG", 15),
    (b"WARN", 10),
    (b"ERROR", 8),
    (b"[ERROR]", 3),
    (b"FATAL", 2),
    (b"x-FATAL-x", 2),
    (b"CRITICAL", 2),
    (b"ERRORS", 4),
    (b"error", 4),
]
LINE_GAP = 0.003
BURST = 1.2
PAUSE = 0.7  # above the tests' --settle of 0.5 s
HALF_GAP = 0.002


class Log:
    """The log file as the application holds it."""

    def __init__(self, path: str, mode: str) -> None:
        self.path = path
        self.mode = mode
        self.fd: int | None = None
        self.reopen = False
        self.reopened = 0
        if mode != "per-write":
            self.fd = self._open()

    def _open(self) -> int:
        # Between logrotate's rename and its create there is no log for a moment.
        deadline = time.monotonic() + 5
        while True:
            try:
                return os.open(self.path, os.O_WRONLY | os.O_APPEND)
            except FileNotFoundError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.001)

    def write_line(self, pieces: list[bytes]) -> None:
        """Write one line, in one write per piece; a rotation may fall between two pieces only
        in ``append`` mode, as with a real application under ``copytruncate``."""
        if self.mode == "per-write":
            fd = self._open()
            try:
                for piece in pieces:
                    _write_all(fd, piece)
            finally:
                os.close(fd)
            return
        if self.reopen:
            self.reopen = False
            assert self.fd is not None
            os.close(self.fd)
            self.fd = self._open()
            self.reopened += 1
        assert self.fd is not None
        for i, piece in enumerate(pieces):
            if i:
                time.sleep(HALF_GAP)
            _write_all(self.fd, piece)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except OSError as e:
            if e.errno == errno.EINTR:
                continue
            raise
        view = view[written:]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("record")
    parser.add_argument("--mode", choices=["hup", "per-write", "append"], required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    log = Log(args.log, args.mode)
    if args.mode == "hup":

        def on_hup(signum: int, frame: object) -> None:
            log.reopen = True

        signal.signal(signal.SIGHUP, on_hup)
    else:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    words = [w for w, _ in LEVELS]
    weights = [n for _, n in LEVELS]
    lines = 0
    with open(args.record, "wb") as record:
        start = time.monotonic()
        burst_end = start + BURST
        while time.monotonic() - start < args.seconds:
            level = rng.choices(words, weights)[0]
            text = b"2026-12-03T10:00:%02d.%06d %s request %d served by app-%d in %dms" % (
                lines // 200 % 60,
                lines,
                level,
                lines,
                rng.randrange(8),
                rng.randrange(1, 900),
            )
            line = text + (b"\r\n" if rng.random() < 0.1 else b"\n")
            if rng.random() < 0.1:
                cut = rng.randrange(1, len(line))
                pieces = [line[:cut], line[cut:]]
            else:
                pieces = [line]
            log.write_line(pieces)
            record.write(line)
            lines += 1
            now = time.monotonic()
            if now >= burst_end:
                time.sleep(PAUSE)
                burst_end = time.monotonic() + BURST
            else:
                time.sleep(LINE_GAP)
    print(f"wrote {lines} lines, reopened {log.reopened} times", flush=True)


if __name__ == "__main__":
    main()
