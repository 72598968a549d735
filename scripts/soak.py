"""Soak: drop files for a while, kill workers and the master at random, then audit the ledger.

    .venv/bin/python scripts/soak.py --seconds 180 --files 3000

Every file is written once (directly, or under a .tmp name then renamed, some gzip-compressed)
and its counts are computed here by the plain reference rules. At the end the ledger must hold
exactly one `done` version per file with those counts; the last line printed is
`lost: N, counted twice: N, wrong: N` and the exit status is 0 only when all three are 0.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from reference import reference_counts

WORDS = [b"INFO", b"WARN", b"ERROR", b"FATAL", b"CRITICAL", b"ERRORS", b"MYERROR", b"debug"]


def make_content(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randint(0, 400)):
        words = b" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 6)))
        lines.append(b"2026-11-27 10:00:00 " + words + rng.choice([b"\n", b"\r\n"]))
    content = b"".join(lines)
    if content and rng.random() < 0.2:
        content = content.rstrip(b"\n")  # no final newline
    return content


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.base = Path(tempfile.mkdtemp(prefix="logdispatch-soak-"))
        self.root = self.base / "root"
        self.root.mkdir()
        self.state = self.base / "state"
        self.key = self.base / "key"
        self.key.write_text(secrets.token_hex(16))
        self.key.chmod(0o600)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.expected: dict[str, tuple[int, int]] = {}
        self.master: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.log = open(self.base / "processes.log", "ab")  # noqa: SIM115
        self.kills = {"worker": 0, "master": 0}

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", *args], stdout=self.log, stderr=subprocess.STDOUT
        )

    def start_master(self) -> None:
        self.master = self._spawn(
            [
                "dispatcher",
                str(self.root),
                "--address",
                f"127.0.0.1:{self.port}",
                "--authkey-file",
                str(self.key),
                "--state",
                str(self.state),
                "--settle",
                "0.5",
                "--lease",
                "3",
                "--rescan",
                "5",
            ]
        )

    def start_worker(self) -> None:
        self.workers.append(
            self._spawn(
                ["workers", "--address", f"127.0.0.1:{self.port}", "--authkey-file", str(self.key)]
            )
        )

    def write_files(self, stop_at: float) -> None:
        rng = random.Random(self.args.seed + 1)
        for i in range(self.args.files):
            host = f"host-{rng.randint(1, 8):02}"
            name = f"{host}/app-{i:05}.log"
            content = make_content(rng)
            self.expected[name] = reference_counts(content)
            on_disk = gzip.compress(content, mtime=0) if rng.random() < 0.15 else content
            target = self.root / name
            target.parent.mkdir(exist_ok=True)
            if rng.random() < 0.5:
                staging = target.with_name(target.name + ".tmp")
                staging.write_bytes(on_disk)
                os.rename(staging, target)
            else:
                target.write_bytes(on_disk)
            remaining = max(stop_at - time.monotonic(), 0)
            time.sleep(remaining / max(self.args.files - i, 1))

    def chaos(self, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            time.sleep(self.rng.uniform(0.5, 3.0))
            roll = self.rng.random()
            live = [w for w in self.workers if w.poll() is None]
            if roll < 0.15 and self.master is not None:
                self.master.send_signal(signal.SIGKILL)
                self.master.wait()
                self.kills["master"] += 1
                time.sleep(self.rng.uniform(0.2, 2.0))
                self.start_master()
            elif roll < 0.7 and live:
                victim = self.rng.choice(live)
                victim.send_signal(self.rng.choice([signal.SIGKILL, signal.SIGTERM]))
                self.kills["worker"] += 1
                self.start_worker()

    def run(self) -> int:
        self.start_master()
        for _ in range(self.args.workers):
            self.start_worker()
        stop_at = time.monotonic() + self.args.seconds
        writer = threading.Thread(target=self.write_files, args=(stop_at,))
        writer.start()
        self.chaos(stop_at)
        writer.join()
        print(
            f"wrote {len(self.expected)} files; killed {self.kills['worker']} workers and "
            f"the master {self.kills['master']} times; waiting for the ledger to settle"
        )
        deadline = time.monotonic() + self.args.drain
        while time.monotonic() < deadline and not self.settled():
            time.sleep(1)
        self.stop()
        return self.audit()

    def versions(self) -> dict[str, list[tuple[str, int | None, int | None]]]:
        found: dict[str, list[tuple[str, int | None, int | None]]] = {}
        if not (self.state / "ledger.sqlite3").exists():
            return found
        with sqlite3.connect(f"file:{self.state / 'ledger.sqlite3'}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT path, status, lines, error_lines FROM versions ORDER BY id")
            for path, status, lines, errors in rows:
                found.setdefault(os.fsdecode(path), []).append((status, lines, errors))
        return found

    def settled(self) -> bool:
        versions = self.versions()
        return all(
            any(status == "done" for status, _, _ in versions.get(name, []))
            for name in self.expected
        )

    def stop(self) -> None:
        for proc in [*self.workers, self.master]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [*self.workers, self.master]:
            if proc is not None:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.log.close()

    def audit(self) -> int:
        versions = self.versions()
        lost = twice = wrong = 0
        for name, counts in self.expected.items():
            done = [
                (lines, errors)
                for status, lines, errors in versions.get(name, [])
                if status == "done"
            ]
            if not done:
                lost += 1
                print(f"lost: {name} {versions.get(name)}")
            elif len(done) > 1:
                twice += 1
                print(f"counted twice: {name} {done}")
            elif done[0] != counts:
                wrong += 1
                print(f"wrong: {name} counted {done[0]}, expected {counts}")
        extra = set(versions) - set(self.expected)
        if extra:
            print(f"unexpected paths in the ledger: {sorted(extra)[:10]}")
        print(f"lost: {lost}, counted twice: {twice}, wrong: {wrong}")
        ok = not (lost or twice or wrong or extra)
        if ok and not self.args.keep:
            shutil.rmtree(self.base)
        else:
            print(f"kept for inspection: {self.base}")
        return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180, help="how long files keep coming")
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--drain", type=float, default=120, help="max wait for the last files")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--keep", action="store_true", help="keep the folder even when clean")
    args = parser.parse_args()
    print(f"seed {args.seed}")
    return Soak(args).run()


if __name__ == "__main__":
    sys.exit(main())
