"""Speed figures for logdispatch, each measured beside its baseline in the same run.

``python -m benchmarks [--quick] [--out FILE]`` generates its data under a temporary folder
(deleted afterwards), runs every figure and prints a markdown table. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import datetime
import gzip
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from dispatcher.ledger import sums

CLI = [sys.executable, "-c", "import sys; from dispatcher.cli.main import main; sys.exit(main())"]
GREP_RE = r"\b(ERROR|FATAL|CRITICAL)\b"
MB = 1 << 20
OLD_AGE = 3600.0  # seconds: mtimes this far in the past are taken at once
C_ENV = {**os.environ, "LC_ALL": "C"}
_STARTED: list[subprocess.Popen[bytes]] = []


class BenchError(Exception):
    """A figure could not be measured; the message goes into its row."""


@dataclass(frozen=True)
class Sizes:
    quick: bool
    log_mb: int
    repeats: int
    small_files: int
    big_files: int
    big_mb: int
    tiny_files: int
    latency_files: int
    sparse_bytes: int
    spin_loops: int = 10_000_000  # figure 3b's reference loop: about a second here
    grow_steps: int = 12  # figure 9a: appends to one log
    grow_step_kb: int = 4 * 1024
    rotations: int = 24  # figure 9b: an hourly rotation's day
    rotated_kb: int = 2 * 1024  # each fresh app.log
    archives: int = 7


def sizes(quick: bool) -> Sizes:
    if quick:
        return Sizes(
            True, 50, 2, 3_000, 2, 40, 0, 5, 256 * MB, spin_loops=2_000_000, grow_step_kb=256,
            rotations=4, rotated_kb=128,
        )  # fmt: skip
    # Five repeats: on a shared 2-core VM a single run of the same command varies by 30%, and
    # the best of five on each side is a steadier ratio than the best of three.
    return Sizes(False, 400, 5, 20_000, 8, 256, 100_000, 20, 1 << 30)


@dataclass
class Row:
    figure: str
    ours: str = "—"
    baseline: str = "—"
    ratio: str = "—"
    target: str = "—"
    met: str = "—"


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def yes_no(ok: bool) -> str:
    return "yes" if ok else "**no**"


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Chunk:
    data: bytes
    lines: int
    errors: int


def _log_line(rng: random.Random, second: int) -> tuple[str, bool]:
    ts = f"2026-11-20 {second // 3600 % 24:02d}:{second // 60 % 60:02d}:{second % 60:02d}"
    ts += f",{rng.randrange(1000):03d}"
    n = rng.randrange(100_000)
    r = rng.random()
    if r < 0.01:
        return f"{ts} ERROR {n} payments.db: query failed after {n % 90} ms", True
    if r < 0.02:
        return f"{ts} ERROR payments.gateway: upstream returned 502 for ch_{n}", True
    if r < 0.025:
        return f"{ts} CRITICAL payments.main: worker {n % 8} lost its database pool", True
    if r < 0.03:
        return f"{ts} FATAL payments.main: cannot bind port {n % 65535}, exiting", True
    if r < 0.04:
        return f"{ts} INFO payments.report: {n % 50} ERRORS reported by upstream batch {n}", False
    if r < 0.05:
        return f"{ts} DEBUG payments.parse: field MYERROR_{n} ignored in payload", False
    if r < 0.06:
        return f"{ts} WARNING payments.retry: recovered from error {n} on attempt 2", False
    if r < 0.35:
        return f"{ts} DEBUG payments.cache: cache miss for key rate:EUR:USD:{n}, fetching", False
    if r < 0.45:
        return f"{ts} WARNING payments.gateway: retrying request (attempt 1/3) id={n}", False
    return f"{ts} INFO payments.api: GET /v1/charges/ch_{n} 200 in {n % 900}ms", False


def make_chunks(rng: random.Random, count: int, size: int) -> list[Chunk]:
    chunks = []
    second = 0
    for _ in range(count):
        parts: list[str] = []
        total = errors = 0
        while total < size:
            line, is_error = _log_line(rng, second)
            second += rng.randrange(3)
            parts.append(line)
            total += len(line) + 1
            errors += is_error
        data = ("\n".join(parts) + "\n").encode()
        chunks.append(Chunk(data, len(parts), errors))
    return chunks


def write_log(path: Path, chunks: Sequence[Chunk], size: int, rng: random.Random) -> Chunk:
    """Write whole chunks in random order until *size*; return the totals (no data)."""
    lines = errors = written = 0
    with open(path, "wb") as f:
        while written < size:
            chunk = rng.choice(chunks)
            f.write(chunk.data)
            written += len(chunk.data)
            lines += chunk.lines
            errors += chunk.errors
    return Chunk(b"", lines, errors)


def paired(ours: Sequence[float], base: Sequence[float]) -> float:
    """The median of ``ours[i] / base[i]``: each pair ran back to back, so a slow spell of a
    shared machine (they last seconds and change a time by 30 %) is in both or in neither."""
    return statistics.median(a / b for a, b in zip(ours, base, strict=True))


def make_old(path: Path) -> None:
    old = time.time() - OLD_AGE
    os.utime(path, (old, old))


def warm(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(8 * MB):
            pass


# ---------------------------------------------------------------------- processes


def cli(*args: str | Path) -> list[str]:
    return [*CLI, *(str(a) for a in args)]


def spawn(command: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    _STARTED.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not gone within 10 s."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop_all(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        stop(proc)


def timed(
    command: Sequence[str], ok: Sequence[int] = (0,), shell: bool = False
) -> tuple[float, str]:
    start = time.perf_counter()
    if shell:
        done = subprocess.run(command[0], shell=True, capture_output=True, env=C_ENV)
    else:
        done = subprocess.run(list(command), capture_output=True, env=C_ENV)
    seconds = time.perf_counter() - start
    if done.returncode not in ok:
        err = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"`{' '.join(command)[:80]}` exited {done.returncode}: {err}")
    return seconds, done.stdout.decode(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_key(folder: Path) -> Path:
    key = folder / "authkey"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(os.urandom(24).hex() + "\n")
    return key


def wait_for(check: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> float:
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)
    return time.perf_counter() - start


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise BenchError(f"no VmHWM for pid {pid}")


def log_tail(log: Path) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-2:])[-300:]
    except OSError:
        return ""


class Master:
    """A ``serve`` process on a fresh port and state directory (a context manager)."""

    def __init__(self, work: Path, root: Path, settle: str, *extra: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        self.state = work / "state"
        self.key = write_key(work)
        self.port = free_port()
        self.log = work / "serve.log"
        self.db = self.state / "ledger.sqlite3"
        self.procs: list[subprocess.Popen[bytes]] = []
        self._reader: sqlite3.Connection | None = None
        address = f"127.0.0.1:{self.port}"
        self.command = cli(
            "serve", root, "--address", address, "--authkey-file", self.key,
            "--state", self.state, "--settle", settle, *extra,
        )  # fmt: skip

    def __enter__(self) -> Master:
        self.spawned = time.perf_counter()
        self.proc = spawn(self.command, self.log)
        self.procs.append(self.proc)
        wait_for(lambda: self._alive() and port_open(self.port), 30, "the master's port")
        return self

    def __exit__(self, *exc: object) -> None:
        self._close_reader()
        stop_all(self.procs)

    def _alive(self) -> bool:
        if self.proc.poll() is not None:
            raise BenchError(f"master exited {self.proc.returncode}: {log_tail(self.log)}")
        return True

    def worker(self, processes: int) -> subprocess.Popen[bytes]:
        command = cli(
            "work", "--address", f"127.0.0.1:{self.port}", "--authkey-file", self.key,
            "--processes", str(processes),
        )  # fmt: skip
        proc = spawn(command, self.log.with_name("work.log"))
        self.procs.append(proc)
        return proc

    def query(self, sql: str, *params: object) -> list[tuple[object, ...]]:
        """Rows from the ledger, or none yet. One read-only connection is kept open: figures
        poll every 20 ms, and a connection a poll took about a millisecond of CPU from the
        processes being measured, on a machine with as many cores as they use."""
        if self._reader is None:
            if not self.db.exists():
                return []
            self._reader = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=2)
        try:
            return self._reader.execute(sql, params).fetchall()
        except sqlite3.Error:
            self._close_reader()  # connected before the schema was there, say: start again
            return []

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def statuses(self) -> dict[str, int]:
        rows = self.query("SELECT status, count(*) FROM versions GROUP BY status")
        return {str(s): int(str(n)) for s, n in rows}

    def count(self, status: str) -> int:
        self._alive()
        return self.statuses().get(status, 0)

    def done_totals(self) -> tuple[int, int]:
        rows = self.query("SELECT sum(lines), sum(error_lines) FROM versions WHERE status='done'")
        lines, errors = rows[0] if rows else (0, 0)
        return int(str(lines or 0)), int(str(errors or 0))


# ------------------------------------------------------------------------ figures


def count_output(out: str) -> tuple[int, int]:
    """Lines and error lines from what `count FILE` prints: a header row, then the file's."""
    row = out.splitlines()[-1].split()
    return int(row[0]), int(row[1])


def fig_count(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    name = f"1. count one {sz.log_mb} MB log, 1 process (best of {sz.repeats})"
    path = tmp / "big.log"
    try:
        expected = write_log(path, chunks, sz.log_mb * MB, rng)
        warm(path)
        ours, grep, wc, python = [], [], [], []
        for i in range(sz.repeats):
            progress(f"figure 1: repeat {i + 1}/{sz.repeats}")
            warm(path)  # the page cache may have let it go since (on some VMs it does)
            t, out = timed(cli("count", "--engine", "hyperscan", path))
            ours.append(t)
            lines, errors = count_output(out)
            t, out = timed(cli("count", "--engine", "python", path))
            python.append(t)
            if count_output(out) != (lines, errors):
                raise BenchError(f"the engines disagree: {count_output(out)} vs {lines} {errors}")
            t, out = timed(["grep", "-c", "-E", GREP_RE, str(path)])
            grep.append(t)
            grep_errors = int(out.strip())
            t, out = timed(["wc", "-l", str(path)])
            wc.append(t)
            wc_lines = int(out.split()[0])
            if errors != grep_errors or lines != wc_lines:
                raise BenchError(
                    f"counts disagree: ours {lines} lines / {errors} errors, "
                    f"wc -l {wc_lines}, grep -c {grep_errors}"
                )
        agree = errors == expected.errors and lines == expected.lines
        note = f"{errors:,} error lines: ours = grep -c{' = generated' if agree else ''}"
        return [
            Row(
                name, f"{min(ours):.3f} s ({sz.log_mb / min(ours):,.0f} MB/s), [fast] extra",
                f"grep -c -E: {min(grep):.3f} s", f"{paired(ours, grep):.2f}",
                "ratio <= 1.0", f"{yes_no(paired(ours, grep) <= 1.0)}; {note}",
            ),
            Row(
                "1a. same file, `--engine python` (the default install, no [fast] extra)",
                f"{min(python):.3f} s ({sz.log_mb / min(python):,.0f} MB/s)",
                f"grep -c -E: {min(grep):.3f} s", f"{paired(python, grep):.2f}",
                met="same counts as hyperscan",
            ),
            Row(
                f"1b. same file, line count only (reference, {lines:,} lines agree)",
                f"{min(ours):.3f} s", f"wc -l: {min(wc):.3f} s", f"{paired(ours, wc):.2f}",
            ),
        ]  # fmt: skip
    finally:
        path.unlink(missing_ok=True)


# Logs of other shapes than figure 1's (3 % error lines): what grep's speed depends on.
SHAPES = {
    "clean": "a {mb} MB log with no error word at all (grep's literal search skips most of it)",
    "dense": "a {mb} MB log with every third line an error line",
}


def reshaped(chunks: Sequence[Chunk], shape: str) -> list[Chunk]:
    """Figure 1's chunks without a single error word ("clean") or with every third line an
    error line ("dense"); only their data is used."""
    out = []
    for chunk in chunks:
        lines = chunk.data.splitlines(keepends=True)
        if shape == "clean":
            lines = [x for x in lines if not re.search(rb"ERROR|FATAL|CRITICAL", x)]
        else:
            lines = [x if i % 3 else x[:24] + b"ERROR " + x[24:] for i, x in enumerate(lines)]
        out.append(Chunk(b"".join(lines), 0, 0))
    return out


def fig_shapes(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    rows = []
    for shape, what in SHAPES.items():
        path = tmp / f"{shape}.log"
        try:
            write_log(path, reshaped(chunks, shape), sz.log_mb * MB, rng)
            ours, grep = [], []
            for i in range(sz.repeats):
                progress(f"figure 1 ({shape}): repeat {i + 1}/{sz.repeats}")
                warm(path)
                t, out = timed(cli("count", "--engine", "hyperscan", path))
                ours.append(t)
                errors = count_output(out)[1]
                t, out = timed(["grep", "-c", "-E", GREP_RE, str(path)], ok=(0, 1))
                grep.append(t)
                if errors != int(out.strip()):
                    raise BenchError(f"{shape}: ours {errors} error lines, grep -c {out.strip()}")
        finally:
            path.unlink(missing_ok=True)
        rows.append(
            Row(
                f"1{'c' if shape == 'clean' else 'd'}. {what.format(mb=sz.log_mb)} "
                f"(best of {sz.repeats})",
                f"{min(ours):.3f} s",
                f"grep -c -E: {min(grep):.3f} s",
                f"{paired(ours, grep):.2f}",
                met=f"{errors:,} error lines: ours = grep -c",
            )
        )
    return rows


# Figure 1e's counters: level words at the frequencies figure 1's log has them, and words
# of a few messages, which match few lines.
LEVEL_COUNTERS = (
    ("warn", rb"\b(?:WARN|WARNING)\b"),
    ("info", rb"\bINFO\b"),
    ("debug", rb"\bDEBUG\b"),
)
RARE_COUNTERS = (
    ("query", rb"\bquery\b"),
    ("upstream", rb"\bupstream\b"),
    ("recovered", rb"\brecovered\b"),
)
# One child per repeat counts the file with the error pattern alone and then with the
# counters, timing the count itself (start-up and imports are the same for both).
_COUNTERS_CHILD = """
import json, sys, time
from workers.counting import count_path
from workers.matching import ErrorMatcher
path, engine, counters = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
alone = ErrorMatcher(engine=engine)
both = ErrorMatcher(engine=engine, counters=[(n, p.encode()) for n, p in counters])
start = time.perf_counter()
a = count_path(path, alone)
middle = time.perf_counter()
b = count_path(path, both)
end = time.perf_counter()
assert (a.lines, a.error_lines) == (b.lines, b.error_lines)
print(json.dumps([middle - start, end - middle, a.lines, a.error_lines, list(b.counts)]))
"""


def fig_counters(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    path = tmp / "levels.log"
    try:
        expected = write_log(path, chunks, sz.log_mb * MB, rng)
        rows = []
        for label, counters in (("level", LEVEL_COUNTERS), ("message", RARE_COUNTERS)):
            rows += _counters_rows(path, sz, expected, label, counters)
        return rows
    finally:
        path.unlink(missing_ok=True)


def _counters_rows(
    path: Path, sz: Sizes, expected: Chunk, label: str, counters: Sequence[tuple[str, bytes]]
) -> list[Row]:
    argument = json.dumps([(name, pattern.decode()) for name, pattern in counters])
    rows = []
    found: dict[str, list[int]] = {}
    for engine in ("hyperscan", "python"):
        alone, both = [], []
        for i in range(sz.repeats):
            progress(f"figure 1e ({label}, {engine}): repeat {i + 1}/{sz.repeats}")
            warm(path)
            _, out = timed([sys.executable, "-c", _COUNTERS_CHILD, str(path), engine, argument])
            a, b, lines, errors, counts = json.loads(out)
            if (lines, errors) != (expected.lines, expected.errors):
                raise BenchError(f"{engine}: {lines} lines, {errors} error lines, generated "
                                 f"{expected.lines}, {expected.errors}")  # fmt: skip
            found[engine] = counts
            alone.append(a)
            both.append(b)
        ratio = paired(both, alone)
        shares = ", ".join(
            f"{name} {count / lines:.1%}" for (name, _), count in zip(counters, counts, strict=True)
        )
        fast = engine == "hyperscan"
        rows.append(
            Row(
                f"1e. figure 1's {sz.log_mb} MB log counted in-process, error pattern and 3 "
                f"literal {label} counters ({shares} of lines) vs the error pattern alone, "
                f"`--engine {engine}` (best of {sz.repeats})",
                f"{min(both):.3f} s", f"alone: {min(alone):.3f} s", f"{ratio:.2f}",
                "ratio <= 1.25" if fast else "—",
                (f"{yes_no(ratio <= 1.25)}; " if fast else "") + "same counts on both engines",
            )
        )  # fmt: skip
    if found["hyperscan"] != found["python"]:
        raise BenchError(f"the engines disagree: {found}")
    return rows


def make_small_files(root: Path, count: int, rng: random.Random, chunks: list[Chunk]) -> None:
    lines = [line for chunk in chunks[:2] for line in chunk.data.splitlines(keepends=True)]
    for h in range(20):
        (root / f"host-{h:02d}").mkdir(parents=True)
    for i in range(count):
        target = rng.randrange(500, 2001)
        start = rng.randrange(len(lines) - 40)
        parts: list[bytes] = []
        size = 0
        for line in lines[start:]:
            if size + len(line) > target and size >= 500:
                break
            parts.append(line)
            size += len(line)
        (root / f"host-{i % 20:02d}" / f"app-{i:06d}.log").write_bytes(b"".join(parts))


def fig_small(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    n = sz.small_files
    name = f"2. {n:,} small files in 20 folders, 2 workers (best of {sz.repeats})"
    root = tmp / "small"
    make_small_files(root, n, rng, chunks)
    pipeline = f"find {root} -type f -print0 | xargs -0 -P2 -n200 grep -c -E '{GREP_RE}'"
    ours, base = [], []
    grep_total = -1
    try:
        distinct_total = distinct_errors(root)
        for i in range(sz.repeats):
            progress(f"figure 2: repeat {i + 1}/{sz.repeats}")
            state = tmp / f"small-state-{i}"
            t, _ = timed(cli("run", root, "--once", "--workers", "2", "--state", state))
            ours.append(t)
            _, out = timed(cli("summary", "--state", state, "--format", "json"))
            check_small_ledger(out, n, grep_total, distinct_total)
            t, out = timed([pipeline], ok=(0, 1, 123), shell=True)
            base.append(t)
            grep_total = sum(int(line.rsplit(":", 1)[1]) for line in out.splitlines())
            _, out = timed(cli("summary", "--state", state, "--format", "json"))
            check_small_ledger(out, n, grep_total, distinct_total)
            shutil.rmtree(state)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rate = n / min(ours)
    return [
        Row(
            name, f"{min(ours):.2f} s = {rate:,.0f} files/s", f"find|xargs -P2 grep: "
            f"{min(base):.2f} s = {n / min(base):,.0f} files/s", f"{min(ours) / min(base):.2f}",
            ">= 10,000 files/s", f"{yes_no(rate >= 10_000)}; ledger: {n:,} files done, "
            f"{grep_total:,} error lines = grep; totals {distinct_total:,} = grep's over the "
            "distinct contents",
        )
    ]  # fmt: skip


def distinct_errors(root: Path) -> int:
    """grep's error lines over the distinct contents under *root*: the totals count each
    content once, and a few of the small files, cut from the same lines, hold the same."""
    first: dict[bytes, Path] = {}
    for path in sorted(root.rglob("*.log")):
        first.setdefault(path.read_bytes(), path)
    done = subprocess.run(
        ["xargs", "-0", "-n200", "grep", "-c", "-h", "-E", GREP_RE],
        input=b"\0".join(os.fsencode(p) for p in first.values()),
        capture_output=True, env=C_ENV,
    )  # fmt: skip
    if done.returncode not in (0, 1, 123):
        raise BenchError(f"grep over the distinct contents exited {done.returncode}")
    return sum(int(line) for line in done.stdout.split())


def check_small_ledger(
    text: str, files: int, grep_total: int = -1, distinct_total: int = -1
) -> None:
    summary = json.loads(text)
    totals = summary["totals"]
    if totals["files"] != files or totals["done"] != files:
        raise BenchError(f"ledger totals {totals} != {files} files done")
    if grep_total < 0:
        return
    per_file = sum(entry["error_lines"] for entry in summary["files"])
    if per_file != grep_total:
        raise BenchError(f"ledger files' error lines {per_file} != grep {grep_total}")
    if totals["error_lines"] != distinct_total:
        raise BenchError(
            f"ledger total error lines {totals['error_lines']} != grep's over the distinct "
            f"contents {distinct_total}"
        )


def cores_run(
    tmp: Path, root: Path, files: int, processes: int, timeout: float
) -> tuple[float, float, tuple[int, int]]:
    """Wall time from spawning `work` to every file done; the span from the first file's
    start to the last one's end, from the ledger's timings; the totals."""
    with Master(tmp / f"cores-{processes}", root, "0") as m:
        wait_for(lambda: m.count("queued") >= files, 60, "the master to queue the files")
        m.worker(processes)
        seconds = wait_for(
            lambda: m.count("done") >= files, timeout, "the files to be done", every=0.02
        )
        ((first, last),) = m.query(
            "SELECT min(finished_at - seconds), max(finished_at) FROM versions "
            "WHERE status = 'done'"
        )
        return seconds, float(str(last)) - float(str(first)), m.done_totals()


def fig_cores(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    n = sz.big_files
    name = (
        f"3. {n} x {sz.big_mb} MB, default pattern: `work --processes 2` vs 1, with start-up "
        f"(best of {sz.repeats})"
    )
    root = tmp / "cores"
    root.mkdir()
    try:
        for i in range(n):
            path = root / f"big-{i}.log"
            write_log(path, chunks, sz.big_mb * MB, rng)
            make_old(path)
            warm(path)
        paths = sorted(str(p) for p in root.iterdir())
        half = len(paths) // 2
        times: dict[str, list[float]] = {
            k: [] for k in ("one", "two", "span1", "span2", "c1", "c2", "s1", "s2")
        }
        for i in range(sz.repeats):  # interleaved: all see the same machine
            progress(f"figure 3: repeat {i + 1}/{sz.repeats}, --processes 1 then 2")
            seconds, span, totals_one = cores_run(tmp / f"r{i}", root, n, 1, 600)
            times["one"].append(seconds)
            times["span1"].append(span)
            seconds, span, totals_two = cores_run(tmp / f"r{i}", root, n, 2, 600)
            times["two"].append(seconds)
            times["span2"].append(span)
            # The same files counted without a master, then the machine alone.
            times["c1"].append(concurrently([cli("count", *paths)]))
            times["c2"].append(
                concurrently([cli("count", *paths[:half]), cli("count", *paths[half:])])
            )
            loop = spin(sz.spin_loops)
            times["s1"].append(concurrently([loop]))
            times["s2"].append(concurrently([loop, loop]))
        best = {k: min(v) for k, v in times.items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if totals_one != totals_two:
        raise BenchError(f"totals differ between runs: {totals_one} vs {totals_two}")
    speedup = paired(times["one"], times["two"])
    ceiling = 2 * paired(times["s1"], times["s2"])
    return [
        Row(
            name, f"2 processes: {best['two']:.2f} s", f"1 process: {best['one']:.2f} s",
            f"{speedup:.2f}x", "speed-up >= 1.8x", f"{yes_no(speedup >= 1.8)}; "
            f"same totals ({totals_two[1]:,} error lines)",
        ),
        Row(
            f"3a. the same {n} files, `count` without a master: 2 processes of {half} files "
            "vs 1 of all",
            f"2 processes: {best['c2']:.2f} s", f"1 process: {best['c1']:.2f} s",
            f"{paired(times['c1'], times['c2']):.2f}x",
        ),
        Row(
            "3b. this machine's own ceiling: a CPU-bound Python loop, 2 copies at once vs 1 "
            "(throughput)",
            f"2 at once: {best['s2']:.2f} s", f"1 alone: {best['s1']:.2f} s", f"{ceiling:.2f}x",
            met="what this machine gives two CPU-bound processes",
        ),
        Row(
            "3c. figure 3's runs without start-up: from the first file started to the last one "
            "counted (the ledger's timings)",
            f"2 processes: {best['span2']:.2f} s", f"1 process: {best['span1']:.2f} s",
            f"{paired(times['span1'], times['span2']):.2f}x",
        ),
    ]  # fmt: skip


def spin(loops: int) -> list[str]:
    """Pure interpreter work: what two cores give two such processes at once."""
    return [sys.executable, "-c", f"x = 0\nfor i in range({loops}): x += i"]


def concurrently(commands: Sequence[Sequence[str]]) -> float:
    """Wall time of running ``commands`` all at once, until the last one ends."""
    start = time.perf_counter()
    procs = [
        subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=C_ENV)
        for c in commands
    ]
    for proc, command in zip(procs, commands, strict=True):
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise BenchError(f"`{' '.join(command)[:80]}` exited {proc.returncode}: {err[-200:]!r}")
    return time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def grow_ledger(state: Path, rows: int) -> None:
    """Add done rows to a stopped master's ledger, written by SQLite itself (no Python loop)."""
    db = sqlite3.connect(state / "ledger.sqlite3")
    try:
        db.execute(
            "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?) "
            "INSERT INTO versions (path, size, mtime_ns, status, attempts, worker, lines, "
            "error_lines, bytes_read, long_lines, seconds, seen_at, finished_at) "
            "SELECT CAST('synthetic/h' || (i % 300) || '/f' || i || '.log' AS BLOB), 1000, 0, "
            "'done', 1, 'bench:1', 10, i % 3, 1000, 0, 0.001, 0, 0 FROM seq",
            (rows,),
        )
        sums.rebuild(db)  # rows written by SQL, not through the writer
        db.commit()
    finally:
        db.close()


def fig_scale(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    name_a = "4a. master queues 100,000 files (no worker): time; peak RSS"
    name_c = "4c. `--poll 2` at 100,000 files: CPU per poll"
    name_b = "4b. `summary` (table) over a 1,000,000-row ledger"
    if sz.quick:
        return [Row(n, "skipped (quick)") for n in (name_a, name_c, name_b)]
    n = sz.tiny_files
    root = tmp / "scale"
    old = time.time() - OLD_AGE
    for d in range(200):
        (root / f"d{d:03d}").mkdir(parents=True)
    for i in range(n):
        path = root / f"d{i % 200:03d}" / f"f{i:06d}.log"
        path.write_bytes(b"ERROR x\n" if i % 10 == 0 else b"ok\n")
        os.utime(path, (old, old))
    progress(f"figure 4: {n:,} files written; starting the master")
    try:
        with Master(tmp / "scale-master", root, "0") as m:
            wait_for(lambda: m.count("queued") >= n, 300, f"{n:,} queued rows")
            seconds = time.perf_counter() - m.spawned
            rss_mb = vm_hwm_kb(m.proc.pid) / 1024
            state = m.state
            status_ms, status_cli = status_cost(m, n)
        progress("figure 4: polling")
        with Master(tmp / "poll-master", root, "0", "--poll", "2") as m:
            wait_for(lambda: m.count("queued") >= n, 300, f"{n:,} queued rows (polling)")
            time.sleep(3)  # the polling observer's first snapshot is done
            cpu, start = cpu_seconds(m.proc.pid), time.perf_counter()
            time.sleep(20)
            polls = (time.perf_counter() - start) / 2
            per_poll = (cpu_seconds(m.proc.pid) - cpu) / polls
        find, _ = timed([f"find {root} -type f -printf '%s %T@\\n' > /dev/null"], shell=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    progress("figure 4: a 1,000,000-row ledger")
    grow_ledger(state, 1_000_000 - n)
    rows = {}
    for fmt in ("table", "json", "csv"):
        t, out = timed(cli("summary", "--state", state, "--format", fmt))
        rows[fmt] = t
        if fmt == "json" and json.loads(out)["totals"]["files"] != 1_000_000:
            raise BenchError(f"summary shows {json.loads(out)['totals']['files']:,} files")
    return [
        Row(
            name_a, f"{seconds:.1f} s from spawning `serve`; VmHWM {rss_mb:.0f} MB",
            target="RSS < 200 MB", met=yes_no(rss_mb < 200),
        ),
        Row(
            name_c, f"{per_poll:.2f} s CPU per poll ({per_poll / 2:.0%} of a core)",
            f"find -printf size,mtime: {find:.2f} s", f"{per_poll / find:.2f}",
        ),
        Row(
            name_b, f"{rows['table']:.2f} s", target="< 2 s", met=yes_no(rows["table"] < 2),
        ),
        Row(
            f"4e. `status` of that master, {n:,} files queued",
            f"{status_ms:.1f} ms a request (median of 20); `status --json` {status_cli:.2f} s",
        ),
        Row(
            "4d. the same ledger, `--format json` / `--format csv` (every row)",
            f"json {rows['json']:.1f} s, csv {rows['csv']:.1f} s",
            met="the 2 s target is met by the table only",
        ),
    ]  # fmt: skip


def status_cost(m: Master, queued: int) -> tuple[float, float]:
    """Median milliseconds of one status request, and the whole `status --json` command."""
    from dispatcher.views.status import fetch

    key = m.key.read_text().strip().encode()
    times = []
    for _ in range(20):
        start = time.perf_counter()
        doc = fetch(("127.0.0.1", m.port), key)
        times.append(time.perf_counter() - start)
    if doc["files"]["queued"] != queued:
        raise BenchError(f"status shows {doc['files']['queued']:,} queued, not {queued:,}")
    command = cli("status", "--json", "--address", f"127.0.0.1:{m.port}", "--authkey-file", m.key)
    seconds, _ = timed(command)
    return statistics.median(times) * 1000, seconds


# A ledger for the summary views: 300 source folders, 8 hosts of 3 workers, a month of
# finishing days, a failed file in 997 and a vanished one in 1,009; a third of the files have
# one error line, a third two. Their samples: a query failing with other numbers, and a request
# rejected with its own hex id (no two alike: the worst case for masking).
_VIEWS_ROWS = """
WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?),
files AS (
    SELECT i, CASE WHEN i % 997 = 0 THEN 'failed' WHEN i % 1009 = 0 THEN 'vanished'
                   ELSE 'done' END AS status,
        printf('2026-11-%02d %02d:%02d:%02d,%03d ERROR payments.db: query %d failed after %d ms',
               1 + i % 28, i % 24, i % 60, i / 7 % 60, i % 1000, i, i % 900) AS query,
        printf('2026-11-20T10:00:00Z ERROR request %08x%08x from 10.0.%d.%d rejected',
               i * 2654435761 % 4294967296, (i * 40503 + 12345) % 4294967296, i % 256, i % 7)
            AS rejected
    FROM seq
)
INSERT INTO versions (path, size, mtime_ns, status, attempts, worker, lines, error_lines,
                      bytes_read, long_lines, seconds, error, samples, seen_at, finished_at)
SELECT CAST('host-' || (i % 300) || '/app/' || (i % 7) || '/f' || i || '.log' AS BLOB), 1000, 0,
    status, 1, 'worker-' || (i % 8) || ':' || (1000 + i % 3),
    CASE WHEN status = 'done' THEN 10 END, CASE WHEN status = 'done' THEN i % 3 END,
    CASE WHEN status = 'done' THEN 1000 END, 0, 0.001,
    CASE status WHEN 'failed' THEN 'corrupt gzip data' WHEN 'vanished' THEN 'gone' END,
    CASE WHEN status != 'done' OR i % 3 = 0 THEN NULL WHEN i % 3 = 1 THEN CAST(query AS BLOB)
         ELSE CAST(query || char(10) || rejected AS BLOB) END,
    0, 1763600000 + i * 2.6
FROM files
"""


def fig_views(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    rows = 100_000 if sz.quick else 1_000_000
    root, state = tmp / "views-root", tmp / "views-state"
    root.mkdir()
    timed(cli("run", root, "--once", "--state", state))  # an empty ledger of this version
    db = sqlite3.connect(state / "ledger.sqlite3")
    try:
        db.execute(_VIEWS_ROWS, (rows,))
        sums.rebuild(db)  # rows written by SQL, not through the writer
        db.commit()
    finally:
        db.close()
    progress(f"figure 7: a {rows:,}-row ledger with samples")
    seconds: dict[str, float] = {}
    views = [(), ("--by", "dir"), ("--by", "dir", "--depth", "2"), ("--by", "worker")]
    views += [("--by", "host"), ("--by", "day"), ("--sort", "errors", "--top", "10")]
    views += [("--failed",), ("--errors",), ("--by", "dir", "--format", "json")]
    for view in views:
        seconds[" ".join(view)], out = timed(cli("summary", "--state", state, *view))
    groups = json.loads(out)
    if sum(g["files"] for g in groups["groups"]) != rows:
        raise BenchError(f"--by dir groups hold {sum(g['files'] for g in groups['groups'])} files")
    page = tmp / "views-report.html"
    report, _ = timed(cli("report", "--state", state, "--out", page))
    if f"{rows:,}" not in page.read_text(encoding="utf-8"):
        raise BenchError(f"the report does not show {rows:,} files")
    plain = seconds.pop("")
    return [
        *(
            Row(
                f"7{chr(ord('a') + n)}. `summary {view}` over a {rows:,}-row ledger", f"{t:.2f} s",
                f"plain table: {plain:.2f} s", f"{t / plain:.2f}",
            )
            for n, (view, t) in enumerate(seconds.items())
        ),
        Row(
            f"7{chr(ord('a') + len(seconds))}. `report --out FILE` over a {rows:,}-row ledger",
            f"{report:.2f} s, a page of {page.stat().st_size / 1000:.0f} kB",
            f"plain table: {plain:.2f} s", f"{report / plain:.2f}",
        ),
    ]  # fmt: skip


# A ledger for the exports: a file in 997 failed and one in 1,009 vanished, the others done with
# two named counters; a file in 50 has content counted before under another path (same_as,
# nothing of its own), one in 40 is gone from the root, one in 1,000 has an undecodable name.
_EXPORT_ROWS = """
WITH RECURSIVE seq(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM seq WHERE i < ?),
files AS (
    SELECT i, CASE WHEN i % 997 = 0 THEN 'failed' WHEN i % 1009 = 0 THEN 'vanished'
                   ELSE 'done' END AS status,
        printf('{"warn":%d,"slow":%d}', i % 5, i % 2) AS counts
    FROM seq
)
INSERT INTO versions (path, size, mtime_ns, status, attempts, worker, lines, error_lines,
                      bytes_read, long_lines, seconds, error, seen_at, finished_at, gone_at,
                      own_lines, own_error_lines, own_bytes, same_as, counts, own_counts)
SELECT CAST('host-' || (i % 300) || '/app/' || (i % 7) || '/f' || i || '.log'
            || CASE WHEN i % 1000 = 0 THEN X'FF' ELSE X'' END AS BLOB),
    1000 + i % 10, 0, status, 1, 'worker-' || (i % 8) || ':' || (1000 + i % 3),
    CASE WHEN status = 'done' THEN 10 + i % 90 END, CASE WHEN status = 'done' THEN i % 3 END,
    CASE WHEN status = 'done' THEN 1000 END, 0, 0.001,
    CASE status WHEN 'failed' THEN 'corrupt gzip data' WHEN 'vanished' THEN 'gone' END,
    0, 1763600000 + i * 2.6,
    CASE WHEN status = 'done' AND i % 40 = 0 THEN 1763700000 + i END,
    CASE WHEN status = 'done' THEN CASE WHEN i % 50 = 0 THEN 0 ELSE 10 + i % 90 END END,
    CASE WHEN status = 'done' THEN CASE WHEN i % 50 = 0 THEN 0 ELSE i % 3 END END,
    CASE WHEN status = 'done' THEN CASE WHEN i % 50 = 0 THEN 0 ELSE 1000 END END,
    CASE WHEN status = 'done' AND i % 50 = 0 THEN CAST('host-0/app/first-' || i AS BLOB) END,
    CASE WHEN status = 'done' THEN counts END,
    CASE WHEN status = 'done' AND i % 50 != 0 THEN counts END
FROM files
"""


def run_export(state: Path, fmt: str, out: Path) -> tuple[float, float]:
    """Seconds and peak RSS (MB, the child's own) of `summary --format FMT` into ``out``."""
    start = time.perf_counter()
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            cli("summary", "--state", state, "--format", fmt), stdout=sink,
            stderr=subprocess.PIPE, env=C_ENV,
        )  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise BenchError(f"summary --format {fmt} exited {proc.returncode}: {err[-200:]}")
    if proc.stderr:
        proc.stderr.close()
    return seconds, usage.ru_maxrss / 1024


def fig_export(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    steps = (20_000, 100_000) if sz.quick else (200_000, 1_000_000)
    root, state = tmp / "export-root", tmp / "export-state"
    root.mkdir()
    timed(cli("run", root, "--once", "--state", state))  # an empty ledger of this version
    rows: list[Row] = []
    made = 0
    for count in steps:
        db = sqlite3.connect(state / "ledger.sqlite3")
        try:
            db.execute(_EXPORT_ROWS, (made + 1, count))
            sums.rebuild(db)  # rows written by SQL, not through the writer
            db.commit()
        finally:
            db.close()
        made = count
        progress(f"figure 10: a {count:,}-row ledger")
        for fmt in ("json", "csv"):
            out = tmp / f"export.{fmt}"
            runs = [run_export(state, fmt, out) for _ in range(sz.repeats)]
            best, rss = min(t for t, _ in runs), max(r for _, r in runs)
            with open(out, "rb") as f:
                lines = sum(block.count(b"\n") for block in iter(partial(f.read, MB), b""))
            # JSON: an entry a line and 4 more (with 2 lines of totals); CSV: a header.
            expected = count + (5 if fmt == "json" else 1)
            if lines != expected:
                raise BenchError(f"{fmt}: {lines:,} lines, not {expected:,}")
            rows.append(
                Row(
                    f"10{'abcd'[len(rows)]}. `summary --format {fmt}` over a "
                    f"{count:,}-row ledger, into a file (best of {sz.repeats})",
                    f"{best:.2f} s; peak RSS {rss:.0f} MB, {out.stat().st_size / MB:.0f} MB out",
                    target="< 3 s" if count == 1_000_000 else "—",
                    met=yes_no(best < 3) if count == 1_000_000 else "—",
                )
            )
            out.unlink()
    return rows


def fig_latency(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    n = sz.latency_files
    name = f"5. latency, inotify, --settle 1: rename -> done (median of {n})"
    root, staging = tmp / "lat-root", tmp / "lat-staging"
    root.mkdir()
    staging.mkdir()
    data = chunks[0].data[:4000]
    latencies = []
    with Master(tmp / "lat-master", root, "1") as m:
        m.worker(1)
        for i in range(-1, n):  # -1: a warm-up file, not counted in the figure
            path = staging / f"f{i + 1:03d}.log"
            path.write_bytes(data)
            os.rename(path, root / path.name)  # the clock starts in wait_for, right after
            key = os.fsencode(path.name)

            def done(key: bytes = key) -> bool:
                rows = m.query(
                    "SELECT status FROM versions WHERE path = ? ORDER BY id DESC LIMIT 1", key
                )
                return bool(rows) and rows[0][0] == "done"

            seconds = wait_for(done, 30, f"{path.name} to be done", every=0.01)
            if i >= 0:
                latencies.append(seconds)
    median = statistics.median(latencies)
    return [
        Row(
            name, f"median {median:.2f} s (min {min(latencies):.2f}, max {max(latencies):.2f})",
            target="<= settle + 0.3 = 1.3 s", met=yes_no(median <= 1.3),
        )
    ]  # fmt: skip


def fig_memory(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    size = sz.sparse_bytes
    name = f"6. worker peak RSS, {size // MB:,} MiB single-line sparse file"
    root = tmp / "mem-root"
    root.mkdir()
    path = root / "sparse.log"
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(size)
        f.write(b" ERROR")
    make_old(path)
    try:
        with Master(tmp / "mem-master", root, "0") as m:
            wait_for(lambda: m.count("queued") >= 1, 60, "the master to queue the file")
            worker = m.worker(1)
            seconds = wait_for(lambda: m.count("done") >= 1, 300, "the sparse file to be done")
            if worker.poll() is not None:
                raise BenchError("the worker exited before its RSS could be read")
            rss_mb = vm_hwm_kb(worker.pid) / 1024
            lines, errors = m.done_totals()
    finally:
        path.unlink(missing_ok=True)
    if (lines, errors) != (1, 1):
        raise BenchError(f"expected 1 line / 1 error line, ledger has {lines} / {errors}")
    return [
        Row(
            name, f"VmHWM {rss_mb:.0f} MB (counted in {seconds:.1f} s, 1 line, 1 error)",
            target="< 100 MB", met=yes_no(rss_mb < 100),
        )
    ]  # fmt: skip


def _empty_tree(tmp: Path, name: str, files: int, per_folder: int) -> tuple[Path, Path, int]:
    """A folder (in a tmpfs where there is one; the caller removes it) whose ``root`` holds
    ``files`` empty files, ``per_folder`` a folder under 20 hosts, all with one old mtime:
    (the folder, its root, that mtime in ns)."""
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else tmp
    work = Path(tempfile.mkdtemp(prefix=f"logdispatch-{name}-", dir=base))
    root = work / "root"
    mtime = int(time.time() - OLD_AGE) * 1_000_000_000
    for folder in range(files // per_folder):
        where = root / f"host-{folder % 20:02}" / f"app-{folder:05}"
        where.mkdir(parents=True)
        for i in range(per_folder):
            path = where / f"f{i:03}.log"
            path.touch()
            os.utime(path, ns=(mtime, mtime))
    return work, root, mtime


def fig_known(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    """The master's memory with a big ledger: N counted files, all still in the root (empty
    files in a tmpfs where there is one), and the ledger made by bulk SQL rather than by
    counting them, then `serve` started on both until its start-up scan is over."""
    from dispatcher.ledger.writer import Ledger
    from workers.matching import DEFAULT_ERROR_PATTERN

    n = 100_000 if sz.quick else 1_000_000
    work, root, mtime = _empty_tree(tmp, "known", n, 200)
    try:
        state = work / "master" / "state"
        ledger = Ledger(state, root)
        ledger.count_with(DEFAULT_ERROR_PATTERN)
        ledger.close()
        with sqlite3.connect(state / "ledger.sqlite3") as db:
            db.execute(
                "WITH RECURSIVE d(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM d WHERE n < ?), "
                "i(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM i WHERE k < 199) "
                "INSERT INTO versions (path, size, mtime_ns, status, attempts, worker, lines, "
                "error_lines, bytes_read, seen_at, finished_at, own_lines, own_error_lines, "
                "own_bytes, rules) SELECT CAST(printf('host-%02d/app-%05d/f%03d.log', n % 20, n, "
                "k) AS BLOB), 0, ?, 'done', 1, 'w:1', 0, 0, 0, 0, 0, 0, 0, 0, "
                "(SELECT value FROM meta WHERE key = 'rules') FROM d, i",
                (n // 200 - 1, mtime),
            )
            sums.rebuild(db)  # rows written by SQL, not through the writer
        with Master(work / "master", root, "2") as m:
            pid = m.proc.pid
            started = time.perf_counter()
            # The start-up scan is over when the master's CPU time stops growing.
            idle, last = 0, -1.0
            while idle < 3:
                time.sleep(1.0)
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                idle = idle + 1 if cpu - last < 0.05 else 0
                last = cpu
                if time.perf_counter() - started > 600:
                    raise BenchError("the master's start-up scan did not end in 10 minutes")
            rss_mb = vm_rss_kb(pid) / 1024
            peak_mb = vm_hwm_kb(pid) / 1024
            queued = m.count("queued")
            overflowed = "overflow" in m.log.read_text(errors="replace")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if queued or overflowed:
        raise BenchError(f"{queued} files queued, overflow logged: {overflowed}")
    return [
        Row(
            f"6b. master RSS with {n:,} counted files in the root, after its start-up scan",
            f"VmRSS {rss_mb:.0f} MB, VmHWM {peak_mb:.0f} MB ({last:.1f} s of CPU)",
            target="VmHWM < 400 MB", met=yes_no(peak_mb < 400),
        )
    ]  # fmt: skip


# A worker that answers every task at once, done (a line if it has a byte), reading no file:
# the real worker's loop, connection, batches, heartbeats and results, so that what limits
# the results a second is the master alone. argv: port, key file.
_INSTANT_WORKER = """
import sys
from workers.common import load_authkey
from workers.protocol import Result, Status
from workers.worker import Worker, WorkerConfig

class Instant(Worker):
    def count(self, task):
        return Result(task.id, task.attempt, self.id, Status.DONE, min(task.size, 1), 0,
                      task.size, lease=task.lease)

config = WorkerConfig(("127.0.0.1", int(sys.argv[1])), load_authkey(sys.argv[2]))
sys.exit(Instant(config).run())
"""


def fig_ceiling(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    """How many results a second one master records, its ledger synced as in production,
    with workers that are never the limit: all files queued first, then answered at once."""
    n = 10_000 if sz.quick else 300_000
    workers = 2
    work, root, _ = _empty_tree(tmp, "ceiling", n, 500)
    try:
        with Master(work / "master", root, "0") as m:
            wait_for(lambda: m.count("queued") == n, 300, f"the master to queue {n:,} files")
            started = time.perf_counter()
            for _ in range(workers):
                command = [sys.executable, "-c", _INSTANT_WORKER, str(m.port), str(m.key)]
                m.procs.append(spawn(command, m.log))
            # Polled twice a second: each poll reads the whole ledger, beside the master.
            seconds = wait_for(lambda: m.count("done") == n, 300, f"{n:,} results", every=0.5)
            elapsed = time.perf_counter() - started
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rate = n / elapsed
    return [
        Row(
            f"2c. results one master records a second, {workers} workers that read nothing, "
            f"{n:,} files queued first",
            f"{rate:,.0f} results/s ({n:,} in {seconds:.1f} s)",
            target="≥ 50,000/s", met=yes_no(rate >= 50_000),
        )
    ]  # fmt: skip


def fig_on_done(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    n = sz.small_files
    archive = tmp / "on-done-archive"
    modes = {"keep": "keep", "delete": "delete", "move": f"move:{archive}"}
    best = dict.fromkeys(modes, float("inf"))
    find_delete = float("inf")
    seed = rng.randrange(1 << 30)
    root = tmp / "on-done"
    state = tmp / "on-done-state"
    repeats = 1 if sz.quick else sz.repeats  # each mode starts from fresh files

    def fresh_files() -> None:
        for folder in (root, archive, state):
            shutil.rmtree(folder, ignore_errors=True)
        make_small_files(root, n, random.Random(seed), chunks)  # the same files each time
        for path in root.rglob("*.log"):
            make_old(path)  # settled: no --settle wait in any mode
        if not sz.quick:  # on disk, as logs are long before they are counted: unlinks then
            os.sync()  # free blocks (seconds on this VM, so not when quick)

    try:
        for i in range(repeats):
            progress(f"figure 8: repeat {i + 1}/{repeats}, find -delete")
            fresh_files()
            t, _ = timed(["find", str(root), "-type", "f", "-delete"])
            find_delete = min(find_delete, t)
            for mode, value in modes.items():  # interleaved: each mode meets the same load
                progress(f"figure 8: repeat {i + 1}/{repeats}, --on-done {mode}")
                fresh_files()
                command = cli("run", root, "--once", "--workers", "2", "--state", state)
                t, _ = timed([*command, "--on-done", value])
                best[mode] = min(best[mode], t)
                _, out = timed(cli("summary", "--state", state, "--format", "json"))
                check_small_ledger(out, n)
                left = sum(1 for p in root.rglob("*") if p.is_file())
                archived = sum(1 for p in archive.rglob("*") if p.is_file())
                expected = {"keep": (n, 0), "delete": (0, 0), "move": (0, n)}[mode]
                if (left, archived) != expected:
                    raise BenchError(f"--on-done {mode}: {left} files left, {archived} archived")
    finally:
        for folder in (root, archive, state):
            shutil.rmtree(folder, ignore_errors=True)
    keep = best["keep"]
    name = f"8{{}}. {n:,} small files, 2 workers, `--on-done {{}}` (best of {repeats})"
    note = {
        "delete": f"none left in ROOT; `find -type f -delete` alone: {find_delete:.2f} s",
        "move": "all in DIR, none left in ROOT",
    }
    return [
        Row(
            name.format(letter, mode), f"{best[mode]:.2f} s = {n / best[mode]:,.0f} files/s",
            f"--on-done keep: {keep:.2f} s = {n / keep:,.0f} files/s", f"{best[mode] / keep:.2f}",
            met=f"{n:,} files done; {note[mode]}",
        )
        for letter, mode in (("a", "delete"), ("b", "move"))
    ]  # fmt: skip


# Logs as they live: appended to in place, and renamed along a numbered rotation.
ROTATION_SETTLE = "0.3"
ERROR_LINE = re.compile(rb"\b(?:ERROR|FATAL|CRITICAL)\b")


def log_piece(chunks: Sequence[Chunk], part: int, size: int) -> Chunk:
    """About *size* bytes of whole lines from the chunks, opened by a line naming *part*: no
    two parts are alike, even where they draw on the same chunk."""
    head = f"2026-11-20 00:00:00,000 INFO bench.part: part {part} begins\n".encode()
    data = head
    index = part
    while len(data) < size:
        data += chunks[index % len(chunks)].data
        index += 1
    data = data[: data.rfind(b"\n", 0, size) + 1]
    errors = sum(1 for line in data.split(b"\n") if ERROR_LINE.search(line))
    return Chunk(data, data.count(b"\n"), errors)


def latest(m: Master, path: bytes) -> tuple[object, ...] | None:
    rows = m.query(
        "SELECT status, size, mtime_ns, lines, error_lines FROM versions WHERE path = ? "
        "ORDER BY id DESC LIMIT 1",
        path,
    )
    return rows[0] if rows else None


def counted(m: Master, root: Path, names: Sequence[str], expected: Sequence[Chunk]) -> bool:
    """Whether the latest version of each file is done as it is on disk now, its counts
    checked against what was written to it."""
    m._alive()
    for name, chunk in zip(names, expected, strict=True):
        row = latest(m, os.fsencode(name))
        st = (root / name).stat()
        if row is None or row[:3] != ("done", st.st_size, st.st_mtime_ns):
            return False
        if row[3:] != (chunk.lines, chunk.errors):
            raise BenchError(
                f"{name}: ledger has {row[3]} lines / {row[4]} errors, "
                f"written {chunk.lines} / {chunk.errors}"
            )
    return True


def check_totals(m: Master, lines: int, errors: int, what: str) -> None:
    """Raise BenchError unless the totals count what was written once: the ledger's own counts
    of the done versions (what each added) and ``summary``'s totals both."""
    ((own_lines, own_errors),) = m.query(
        "SELECT coalesce(sum(own_lines), 0), coalesce(sum(own_error_lines), 0) FROM versions "
        "WHERE status = 'done'"
    )
    _, out = timed(cli("summary", "--state", m.state, "--format", "json"))
    totals = json.loads(out)["totals"]
    sides = {
        "ledger": (int(str(own_lines)), int(str(own_errors))),
        "summary": (totals["lines"], totals["error_lines"]),
    }
    for side, got in sides.items():
        if got != (lines, errors):
            raise BenchError(
                f"{side} totals {got[0]:,} lines / {got[1]:,} errors, {what} {lines:,} / {errors:,}"
            )


def fig_rotation(tmp: Path, sz: Sizes, rng: random.Random, chunks: list[Chunk]) -> list[Row]:
    return [grow_row(tmp, sz, chunks), rotate_row(tmp, sz, chunks)]


def grow_row(tmp: Path, sz: Sizes, chunks: list[Chunk]) -> Row:
    steps, step = sz.grow_steps, sz.grow_step_kb * 1024
    name = (
        f"9a. a log growing in {steps} equal appends to {steps * step // MB} MiB, each counted "
        f"before the next (`serve --settle {ROTATION_SETTLE}`, 1 worker): bytes read per byte"
    )
    root = tmp / "grow-root"
    root.mkdir()
    path = root / "app.log"
    total = Chunk(b"", 0, 0)
    with Master(tmp / "grow-master", root, ROTATION_SETTLE) as m:
        m.worker(1)
        start = time.perf_counter()
        for i in range(steps):
            progress(f"figure 9a: append {i + 1}/{steps}")
            piece = log_piece(chunks, i, step)
            with open(path, "ab") as f:
                f.write(piece.data)
            total = Chunk(b"", total.lines + piece.lines, total.errors + piece.errors)
            wait_for(
                partial(counted, m, root, ["app.log"], [total]), 60,
                "the append to be counted", every=0.02,
            )  # fmt: skip
        seconds = time.perf_counter() - start
        ((read, done, versions),) = m.query(
            "SELECT sum(bytes_read), count(*) FILTER (WHERE status = 'done'), count(*) "
            "FROM versions WHERE path = ?",
            b"app.log",
        )
        check_totals(m, total.lines, total.errors, "written")
    size = path.stat().st_size
    per_byte = int(str(read)) / size
    return Row(
        name, f"read {per_byte:.2f} bytes per byte of log ({int(str(read)) / MB:,.1f} MiB "
        f"for {size / MB:,.1f} MiB; {done} versions counted of {versions}; {seconds:.1f} s)",
        f"the final size read once: 1.0 ({size / MB:,.1f} MiB)", f"{per_byte:.2f}", "≤ 1.2",
        f"{yes_no(per_byte <= 1.2)}; last version: {total.lines:,} lines, {total.errors:,} "
        "error lines = written; totals (ledger and `summary`) = written",
    )  # fmt: skip


def rotate(root: Path, names: Sequence[str], fresh: bytes) -> None:
    """One rotation as logrotate's numbered scheme with compress and delaycompress makes it."""
    for i in range(len(names) - 1, 2, -1):
        os.replace(root / names[i - 1], root / names[i])  # the oldest is replaced: deleted
    with open(root / names[1], "rb") as src, gzip.open(root / names[2], "wb", 6) as dst:
        shutil.copyfileobj(src, dst)  # gzip(1)'s default level
    os.unlink(root / names[1])
    os.rename(root / names[0], root / names[1])
    (root / names[0]).write_bytes(fresh)


def rotate_row(tmp: Path, sz: Sizes, chunks: list[Chunk]) -> Row:
    k, rotations, size = sz.archives, sz.rotations, sz.rotated_kb * 1024
    name = (
        f"9b. numbered rotation, `app.log` of {size // 1024:,} KiB and {k} archives "
        f"(`.1`, `.2.gz` ... `.{k}.gz`), rotated {rotations} times, each counted before the "
        f"next (`serve --settle {ROTATION_SETTLE}`, `work --processes 2`): files read per "
        "rotation"
    )
    root = tmp / "rotate-root"
    root.mkdir()
    names = ["app.log", "app.log.1", *(f"app.log.{i}.gz" for i in range(2, k + 1))]
    # ring[i]: what names[i] holds, newest first; the first k + 1 parts were rotated before.
    ring = [log_piece(chunks, part, size) for part in range(k, -1, -1)]
    written = list(ring)  # every part written, the deleted ones included
    for i, (file, chunk) in enumerate(zip(names, ring, strict=True)):
        if i < 2:
            (root / file).write_bytes(chunk.data)
        else:
            with gzip.open(root / file, "wb", 6) as f:
                f.write(chunk.data)
        make_old(root / file)
    with Master(tmp / "rotate-master", root, ROTATION_SETTLE) as m:
        m.worker(2)
        wait_for(lambda: counted(m, root, names, ring), 60, "the first files to be counted")
        ((before,),) = m.query("SELECT max(id) FROM versions")
        start = time.perf_counter()
        for r in range(rotations):
            progress(f"figure 9b: rotation {r + 1}/{rotations}")
            fresh = log_piece(chunks, k + 1 + r, size)
            rotate(root, names, fresh.data)
            ring = [fresh, *ring[:-1]]
            written.append(fresh)
            wait_for(
                partial(counted, m, root, names, ring), 60, "the rotation to be counted",
                every=0.02,
            )  # fmt: skip
        seconds = time.perf_counter() - start
        ((read_files, read, unread, same, others),) = m.query(
            "SELECT count(*) FILTER (WHERE status = 'done' AND bytes_read > 0), "
            "coalesce(sum(bytes_read) FILTER (WHERE status = 'done'), 0), "
            "count(*) FILTER (WHERE status = 'done' AND bytes_read = 0), "
            "count(*) FILTER (WHERE status = 'done' AND bytes_read > 0 AND same_as IS NOT NULL), "
            "count(*) FILTER (WHERE status != 'done') FROM versions WHERE id > ?",
            before,
        )
        lines = sum(chunk.lines for chunk in written)
        errors = sum(chunk.errors for chunk in written)
        check_totals(m, lines, errors, "written in all")
    files = int(str(read_files)) / rotations
    read_mib = int(str(read)) / rotations / MB
    new_mib = size / MB
    return Row(
        name, f"{files:.1f} files read per rotation ({int(str(same)) / rotations:.1f} of them "
        f"content counted before), {read_mib:,.2f} MiB read, {read_mib / new_mib:.1f} times "
        f"what is new; {int(str(unread)) / rotations:.1f} versions per rotation taken without "
        f"a read ({seconds:.1f} s in all)",
        f"what is new: 1 file, {new_mib:,.2f} MiB", f"{files:.1f}",
        "1 file read per rotation, or close",
        f"{yes_no(files <= 1.1)}; every file's last version = written; totals (ledger and "
        f"`summary`) = all {len(written)} parts written, once; {others} versions not counted "
        "(superseded or gone before)",
    )  # fmt: skip


FIGURES = [
    fig_count, fig_shapes, fig_counters, fig_small, fig_ceiling, fig_cores, fig_scale,
    fig_latency, fig_memory, fig_known, fig_views, fig_on_done, fig_rotation, fig_export,
]  # fmt: skip


# --------------------------------------------------------------------------- main


def table(rows: Sequence[Row]) -> list[str]:
    lines = ["| figure | ours | baseline | ratio | target | met? |", "|---|---|---|---|---|---|"]
    for r in rows:
        cells = (r.figure, r.ours, r.baseline, r.ratio, r.target, r.met)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def compile_package() -> None:
    """Write the package's bytecode, as installing it does: with an editable install and
    PYTHONDONTWRITEBYTECODE set, every command would otherwise compile its modules at start-up."""
    import dispatcher
    import workers

    for package in (dispatcher, workers):
        for folder in package.__path__:
            compileall.compile_dir(folder, quiet=1)


def run_figures(tmp: Path, sz: Sizes, only: Sequence[str] = ()) -> list[Row]:
    rng = random.Random(20261120)
    progress("generating log chunks")
    chunks = make_chunks(rng, 16, 2 * MB)
    rows: list[Row] = []
    for figure in FIGURES:
        label = figure.__name__
        if only and label.removeprefix("fig_") not in only:
            continue
        progress(f"{label}: start")
        start = time.perf_counter()
        try:
            rows += figure(tmp, sz, rng, chunks)
        except Exception as e:  # a failing figure must not stop the others
            reason = f"{type(e).__name__}: {e}" if not isinstance(e, BenchError) else str(e)
            rows.append(Row(f"{label}", f"error: {reason}"))
        progress(f"{label}: {time.perf_counter() - start:.1f} s")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small data, < 1 minute")
    parser.add_argument("--out", type=Path, help="also write the markdown to FILE")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=[f.__name__.removeprefix("fig_") for f in FIGURES],
        help="run this figure only (repeatable)",
    )
    args = parser.parse_args(argv)
    sz = sizes(args.quick)
    compile_package()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="logdispatch-bench-"))
    try:
        rows = run_figures(tmp, sz, args.only)
    finally:
        stop_all([p for p in _STARTED if p.returncode is None])
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        f"- cores (os.cpu_count()): {os.cpu_count()} ({cpu_model()})",
        f"- Python: {platform.python_version()} ({sys.executable})",
        f"- date: {now}",
        f"- quick: {'yes' if args.quick else 'no'}",
        *([f"- only: {', '.join(args.only)}"] if args.only else []),
        f"- total run time: {elapsed:.0f} s",
        "",
    ]
    text = "\n".join([*header, *table(rows)]) + "\n"
    print(text, end="")
    if args.out:
        note = (
            f"Produced by `python -m benchmarks{' --quick' if args.quick else ''} --out "
            f"{args.out}` on a {os.cpu_count()}-core {cpu_model()} machine "
            f"({platform.system()} {platform.release()}), Python {platform.python_version()}. "
            "Every figure ran beside its baseline in the same run, on the same files, "
            "generated under a temporary folder that was deleted afterwards; timings are "
            "wall-clock (time.perf_counter) and include process start-up. A figure repeated N "
            "times shows the best time of each side, and as its ratio the median of the N "
            "ratios of runs made back to back.\n\n"
        )
        args.out.write_text(note + text)
    return 0
