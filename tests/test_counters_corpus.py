"""Named counters over a random corpus, as it will be checked: `run --once --count ...` with
real processes, then `summary --format json`, every file's counts and the totals against the
line-by-line reference, with each engine. Lines are kept under 1 MiB, where every pattern
sees the whole line (tests/test_counters.py covers longer ones)."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import random
from pathlib import Path

import pytest
from conftest import logdispatch
from reference import reference_counts, reference_line_counts

COUNTERS = {
    "warn": rb"\bWARN\b",  # a literal word
    "db": rb"db|database",  # a literal alternation that matches twice on a line
    "slow": rb"took [0-9]{4,}ms",  # a general regex
    "caseless": rb"(?i)timeout",
    "ends": rb"done$",  # sees the line without its \r
    "starts": rb"^\[",
    "http5xx": rb'" 5[0-9][0-9] ',
}
WORDS = [
    b"WARN", b"WARNING", b"warn", b"ERROR", b"db", b"database", b"took", b"1234ms", b"99ms",
    b"Timeout", b"TIMEOUT", b"done", b"[", b"\" 503 ", b"\" 200 ", b"x", b"\xff\xfe", b"\t",
    b"", b"db1", b"_WARN", b"FATAL",
]  # fmt: skip
COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


def _content(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randrange(0, 400)):
        line = b" ".join(rng.choice(WORDS) for _ in range(rng.randrange(0, 12)))
        if rng.random() < 0.1:
            line += b"\r"
        if rng.random() < 0.01:
            line += b"y" * rng.randrange(1000, 200_000)
        lines.append(line)
    data = b"\n".join(lines)
    return data + b"\n" if rng.random() < 0.8 else data


def _corpus(root: Path, seed: int) -> dict[str, bytes]:
    """Random logs, some compressed, some copies of others: path -> content counted."""
    rng = random.Random(seed)
    contents: dict[str, bytes] = {}
    for n in range(40):
        folder = root / f"host-{n % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        if contents and rng.random() < 0.15:
            data = rng.choice(list(contents.values()))  # the same content under another name
        else:
            data = _content(rng)
        suffix = rng.choice(["", "", ".gz", ".bz2", ".xz"])
        name = f"f{n:02}.log{suffix}"
        written = COMPRESS[suffix](data) if suffix else data
        (folder / name).write_bytes(written)
        contents[f"{folder.name}/{name}"] = data
    return contents


@pytest.mark.parametrize(
    ("seed", "engine"), [(1, "auto"), (2, "python"), (3, "auto"), (4, "python")]
)
def test_random_corpus_against_the_reference(tmp_path: Path, seed: int, engine: str) -> None:
    root = tmp_path / "root"
    contents = _corpus(root, seed)
    state = tmp_path / "state"
    args = [arg for name, p in COUNTERS.items() for arg in ("--count", f"{name}={p.decode()}")]
    run = logdispatch(
        "run", str(root), "--once", "--workers", "2", "--state", str(state), "--settle", "0",
        "--engine", engine, *args, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    shown = logdispatch("summary", "--state", str(state), "--format", "json")
    document = json.loads(shown.stdout)
    files = {entry["path"]: entry for entry in document["files"]}
    assert set(files) == set(contents)
    names = list(COUNTERS)
    expected_totals = dict.fromkeys(names, 0)
    lines = errors = 0
    for data in set(contents.values()):  # each piece of content once
        for name, count in zip(
            names, reference_line_counts(data, list(COUNTERS.values())), strict=True
        ):
            expected_totals[name] += count
        file_lines, file_errors = reference_counts(data)
        lines, errors = lines + file_lines, errors + file_errors
    for path, data in contents.items():
        entry = files[path]
        expected = dict(
            zip(names, reference_line_counts(data, list(COUNTERS.values())), strict=True)
        )
        assert entry["counts"] == expected, path
        assert (entry["lines"], entry["error_lines"]) == reference_counts(data), path
    totals = document["totals"]
    assert totals["counts"] == expected_totals
    assert (totals["lines"], totals["error_lines"]) == (lines, errors)
    assert totals["lacking"] == dict.fromkeys(names, 0)
