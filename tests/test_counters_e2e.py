"""Named counters end to end: `run --once --count ...` (a real master and real workers) and the
summaries, against the reference's line-by-line counts; counters from the file and the
environment; a grown log and a copy counted once per counter; a restart with other counters;
bad counters refused before anything is written."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import COUNT_HEADER, logdispatch
from reference import content_of, reference_line_counts

from dispatcher.ledger.schema import LAYOUT
from workers.levels import LEVELS

COUNTERS = {
    "warn": rb"\bWARN\b",
    "slow": rb"took [0-9]{4,}ms",  # a general regex
    "db": rb"db|database",  # a literal alternation, matching twice in some lines
}
COUNT_ARGS = [arg for name, p in COUNTERS.items() for arg in ("--count", f"{name}={p.decode()}")]
LONG = 3 * 1024 * 1024  # past the general regex's 1 MiB: the literal counters see it all


def _corpus(root: Path) -> None:
    """Logs where counters overlap on one line, match twice in one, in gzip and in a 3 MiB
    line, and a copy of one log under another name."""
    (root / "app").mkdir(parents=True)
    (root / "db").mkdir()
    (root / "app" / "app.log").write_bytes(_log(0, 3000))
    # The log's rotation before: other content, compressed.
    (root / "app" / "app.log.1.gz").write_bytes(gzip.compress(_log(3000, 1500)))
    (root / "db" / "long.log").write_bytes(
        b"WARN " + b"x" * LONG + b" db took 99999ms\nWARN short\n"
    )
    (root / "db" / "plain.log").write_bytes(b"nothing here\nlast line WARN")
    shutil.copy(root / "app" / "app.log", root / "db" / "copy.log")


def _log(first: int, count: int) -> bytes:
    lines = []
    for n in range(first, first + count):
        if n % 7 == 0:
            lines.append(b"%d WARN db slow: took %d ms on database db1" % (n, 1000 + n))
        elif n % 5 == 0:
            lines.append(b"%d ERROR request took %dms" % (n, 10 * n))
        elif n % 3 == 0:
            lines.append(b"%d INFO database db ok\r" % n)
        else:
            lines.append(b"%d DEBUG nothing to see" % n)
    return b"\n".join(lines) + b"\n"


def _run(root: Path, state: Path, *args: str, env: dict[str, str] | None = None) -> None:
    run = logdispatch(
        "run", str(root), "--once", "--workers", "2", "--state", str(state), "--settle", "0",
        *args, env=env, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr


def _summary(state: Path, *args: str) -> dict[str, Any]:
    out = logdispatch("summary", "--state", str(state), "--format", "json", *args)
    assert out.returncode == 0, out.stderr
    document: dict[str, Any] = json.loads(out.stdout)
    return document


def _expected(path: Path, names: list[str]) -> dict[str, int]:
    data = content_of(path)
    patterns = [COUNTERS[name] for name in names]
    # Literal shapes see every byte of a line; a general regex its first 1 MiB.
    literal = dict(zip(names, reference_line_counts(data, patterns), strict=True))
    limited = dict(zip(names, reference_line_counts(data, patterns, 1024 * 1024), strict=True))
    return {name: limited[name] if name == "slow" else literal[name] for name in names}


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("counters") / "root"
    _corpus(root)
    state = root.parent / "state"
    _run(root, state, *COUNT_ARGS)
    return root, state


def test_every_file_and_the_totals_match_the_reference(counted: tuple[Path, Path]) -> None:
    root, state = counted
    document = _summary(state)
    names = list(COUNTERS)
    files = {f["path"]: f for f in document["files"]}
    assert set(files) == {"app/app.log", "app/app.log.1.gz", "db/long.log", "db/plain.log",
                          "db/copy.log"}  # fmt: skip
    for shown, entry in files.items():
        assert entry["status"] == "done", entry
        assert entry["counts"] == _expected(root / shown, names), shown
        assert list(entry["counts"]) == names  # in the order they were given
    totals = document["totals"]
    # Each piece of content once: the copy adds nothing.
    # Whichever of app.log and its copy was counted first, the other is the same as it.
    copies = {files["db/copy.log"]["same_as"], files["app/app.log"]["same_as"]}
    assert copies in ({None, "app/app.log"}, {None, "db/copy.log"})
    distinct = ("app/app.log", "app/app.log.1.gz", "db/long.log", "db/plain.log")
    assert totals["counts"] == {
        name: sum(files[p]["counts"][name] for p in distinct) for name in names
    }
    assert totals["lines"] == sum(files[p]["lines"] for p in distinct)
    assert totals["lacking"] == dict.fromkeys(names, 0)


def test_counts_show_in_csv_table_groups_and_sort(counted: tuple[Path, Path]) -> None:
    _, state = counted
    document = _summary(state)
    files = {f["path"]: f for f in document["files"]}

    csv = logdispatch("summary", "--state", str(state), "--format", "csv")
    header, *rows = csv.stdout.splitlines()
    assert header.endswith(",same_as,counts")
    plain = next(row for row in rows if row.startswith("db/plain.log,"))
    assert plain.endswith(',"{""warn"":1,""slow"":0,""db"":0}"')

    table = logdispatch("summary", "--state", str(state)).stdout
    head = next(line for line in table.splitlines() if "error lines" in line)
    assert head.split()[-4:] == ["warn", "slow", "db", "status"]
    total = next(line for line in table.splitlines() if "5 files" in line)
    assert f"{document['totals']['counts']['warn']:,}" in total

    by_dir = _summary(state, "--by", "dir")
    groups = {g["key"]: g["counts"] for g in by_dir["groups"]}
    assert set(groups) == {"app", "db"}
    for name in COUNTERS:
        assert groups["app"][name] + groups["db"][name] == document["totals"]["counts"][name]

    by_warn = _summary(state, "--sort", "warn")["files"]
    assert [f["counts"]["warn"] for f in by_warn] == sorted(
        (f["counts"]["warn"] for f in files.values()), reverse=True
    )
    top = _summary(state, "--by", "dir", "--sort", "slow", "--top", "1")["groups"]
    assert [g["key"] for g in top] == [max(groups, key=lambda k: groups[k]["slow"])]

    unknown = logdispatch("summary", "--state", str(state), "--sort", "nope")
    assert unknown.returncode == 2
    assert "--sort nope: no such counter in the ledger (its counters: warn, slow, db)" in (
        unknown.stderr
    )
    bad = logdispatch("summary", "--state", str(state), "--sort", "x;drop")
    assert bad.returncode == 2 and "lines, errors, rate or a counter's name" in bad.stderr


def test_counters_from_the_file_and_the_environment_and_levels(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.log").write_bytes(
        b'WARN one\n{"level":"warn","msg":"db"}\nlevel=error took 5000ms\ninfo: fine\n'
    )
    config = tmp_path / "logdispatch.toml"
    config.write_text('[count]\nwarn = "\\\\bWARN\\\\b"\nslow = "took [0-9]{4,}ms"\n')
    _run(root, tmp_path / "a", "--config", str(config))
    assert _summary(tmp_path / "a")["files"][0]["counts"] == {"warn": 1, "slow": 1}

    _run(root, tmp_path / "b", env={"LOGDISPATCH_COUNT": "db=db,slow=took [0-9]{4,}ms"})
    assert _summary(tmp_path / "b")["files"][0]["counts"] == {"db": 1, "slow": 1}

    _run(root, tmp_path / "c", "--levels")
    levels = _summary(tmp_path / "c")["files"][0]["counts"]
    assert list(levels) == [name for name, _ in LEVELS]
    assert (levels["warn"], levels["error"], levels["info"]) == (2, 1, 0)

    count = logdispatch("count", str(root / "a.log"), "--levels", "--json")
    assert json.loads(count.stdout)["files"][0]["counts"] == levels
    table = logdispatch("count", str(root / "a.log"), "--count", "slow=took [0-9]{4,}ms")
    assert table.stdout.splitlines()[0].split() == [*COUNT_HEADER[:-1], "slow", "path"]
    assert table.stdout.splitlines()[1].split()[:3] == ["4", "0", "1"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--count", "Warn=x"], "counter name 'Warn': a name is a lower-case letter"),
        (["--count", "warn=("], "counter warn: not a valid regex"),
        (["--count", "warn=a", "--count", "warn=b"], "counter warn: given twice"),
        (["--levels", "--count", "warn=b"], "counter warn: given twice"),
        ([f"--count=c{n}=x" for n in range(33)], "counter c32: at most 32 counters"),
        (["--count", "warn"], "'warn' is not NAME=PATTERN"),
    ],
)
def test_a_bad_counter_is_refused_before_anything_is_written(
    tmp_path: Path, args: list[str], said: str
) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "a.log").write_bytes(b"WARN x\n")
    state = tmp_path / "state"
    run = logdispatch("run", str(tmp_path / "root"), "--once", "--state", str(state), *args)
    assert run.returncode == 2, run.stderr
    assert said in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("logdispatch run: error: ")
    assert "Traceback" not in run.stderr
    assert not state.exists()


def test_a_grown_log_adds_what_it_gained_to_each_counter(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    log = root / "app.log"
    first = b"".join(b"%d WARN took %dms\n" % (n, 900 + n) for n in range(20_000))
    log.write_bytes(first)
    state = tmp_path / "state"
    _run(root, state, *COUNT_ARGS)
    with open(log, "ab") as f:
        f.write(b"".join(b"%d db took %dms\n" % (n, 5000 + n) for n in range(500)))
    _run(root, state, *COUNT_ARGS)
    document = _summary(state)
    (entry,) = document["files"]
    assert entry["counts"] == _expected(log, list(COUNTERS))
    assert document["totals"]["counts"] == entry["counts"]  # the first version adds nothing now
    history = _summary(state, "--history", "app.log")["versions"]
    assert len(history) == 2 and history[1]["own_lines"] == 500


def test_a_restart_with_other_counters_says_so_and_keeps_what_was_counted(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "old.log").write_bytes(b"WARN a\nslow took 12345ms\n")
    state = tmp_path / "state"
    _run(root, state, "--count", "warn=WARN")
    (root / "new.log").write_bytes(b"WARN b\nWARN c took 99999ms\n")
    run = logdispatch(
        "run", str(root), "--once", "--workers", "1", "--state", str(state), "--settle", "0",
        "--count", "warn=WARN", "--count", "slow=took [0-9]{4,}ms",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "1 counted file(s) were counted with other rules than these" in run.stderr
    document = _summary(state)
    files = {f["path"]: f["counts"] for f in document["files"]}
    assert files == {"old.log": {"warn": 1}, "new.log": {"warn": 2, "slow": 1}}
    assert document["totals"]["counts"] == {"warn": 3, "slow": 1}
    assert document["totals"]["lacking"] == {"warn": 0, "slow": 1}
    table = logdispatch("summary", "--state", str(state)).stdout
    assert "1 (1 without)" in table
    old = next(line for line in table.splitlines() if "old.log" in line)
    assert old.split()[1:5] == ["2", "0", "1", "-"]


def test_no_counters_no_counts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.log").write_bytes(b"WARN a\n")
    _run(root, tmp_path / "state")
    document = _summary(tmp_path / "state")
    assert document["files"][0]["counts"] == {} and document["totals"]["counts"] == {}
    assert os.path.exists(tmp_path / "state" / "ledger.sqlite3")


def test_recount_fills_in_the_counters_each_piece_of_content_once(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    content = b"WARN a took 12345ms\nok\nWARN b\n"
    (root / "a.log").write_bytes(content)
    (root / "copy.log").write_bytes(content)
    (root / "other.log").write_bytes(b"WARN c took 99999ms\n")
    (root / "deleted.log").write_bytes(b"WARN d took 55555ms\n")
    state = tmp_path / "state"
    _run(root, state, "--count", "warn=WARN")
    before = _summary(state)
    (root / "deleted.log").unlink()
    both = ["--count", "warn=WARN", "--count", "slow=took [0-9]{4,}ms"]

    run = logdispatch(
        "run", str(root), "--once", "--workers", "2", "--state", str(state), "--settle", "0",
        "--recount", "missing", *both,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "recounting 3 file(s) counted with fewer counters; 1 more are no longer" in run.stderr
    document = _summary(state)
    files = {f["path"]: f for f in document["files"]}
    assert files["a.log"]["counts"] == files["copy.log"]["counts"] == {"warn": 2, "slow": 1}
    assert files["other.log"]["counts"] == {"warn": 1, "slow": 1}
    assert files["deleted.log"]["counts"] == {"warn": 1}  # no longer there: kept as it was
    totals = document["totals"]
    # Nothing counted twice: lines and warn as before; slow for each content once, but the
    # deleted file's, which it was never counted for.
    assert (totals["lines"], totals["error_lines"]) == (
        before["totals"]["lines"],
        before["totals"]["error_lines"],
    )
    assert totals["counts"] == {"warn": before["totals"]["counts"]["warn"], "slow": 2}
    assert totals["lacking"] == {"warn": 0, "slow": 1}
    history = _summary(state, "--history", "a.log")["versions"]
    assert len(history) == 2 and history[1]["own_lines"] == 0  # its lines were counted

    # Nothing is missing now: another recount has nothing to do.
    again = logdispatch(
        "run", str(root), "--once", "--workers", "1", "--state", str(state), "--settle", "0",
        "--recount", "missing", *both,
    )  # fmt: skip
    assert "recounting 0 file(s)" in again.stderr
    assert _summary(state)["totals"] == totals

    # A new error pattern: --recount all counts every file again with it, lines once.
    changed = logdispatch(
        "run", str(root), "--once", "--workers", "1", "--state", str(state), "--settle", "0",
        "--recount", "all", "--error-pattern", r"\bok\b", *both,
    )  # fmt: skip
    assert "recounting 3 file(s) counted with other rules" in changed.stderr
    files = {f["path"]: f for f in _summary(state)["files"]}
    assert files["a.log"]["error_lines"] == 1 and files["a.log"]["counts"]["slow"] == 1
    assert _summary(state)["totals"]["counts"] == totals["counts"]


def test_a_ledger_from_before_rules_were_kept_knows_its_files_rules(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.log").write_bytes(b"WARN a\nERROR b\n")
    state = tmp_path / "state"
    _run(root, state)
    # What a ledger written before named counters holds: no rules, no counts.
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        for column in ("own_counts", "counts", "rules"):
            db.execute(f"ALTER TABLE versions DROP COLUMN {column}")
        db.execute("DROP TABLE rules")
        db.execute("DELETE FROM meta WHERE key IN ('rules', 'layout')")
    (root / "b.log").write_bytes(b"WARN c\n")
    same = logdispatch(
        "run", str(root), "--once", "--workers", "1", "--state", str(state), "--settle", "0"
    )
    assert same.returncode == 0, same.stderr
    assert "other rules" not in same.stderr  # its files were counted with these very rules
    assert f"brought from layout 6 to {LAYOUT}" in same.stderr
    counted = logdispatch(
        "run", str(root), "--once", "--workers", "1", "--state", str(state), "--settle", "0",
        "--count", "warn=WARN", "--recount", "missing",
    )  # fmt: skip
    assert "recounting 2 file(s) counted with fewer counters" in counted.stderr
    document = _summary(state)
    assert document["totals"]["counts"] == {"warn": 2}
    assert (document["totals"]["lines"], document["totals"]["error_lines"]) == (3, 1)
