"""The command line as a user runs it: `run --once`, `summary` in every format, `count`."""

from __future__ import annotations

import csv
import datetime
import gzip
import io
import json
import os
import sqlite3
import subprocess
from pathlib import Path

from conftest import COUNT_HEADER, LOGDISPATCH, logdispatch
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import content_of, reference_counts

from dispatcher.ledger.rows import FileRow
from dispatcher.ledger.schema import SCHEMA
from dispatcher.ledger.writer import Ledger
from dispatcher.views import entries, summary
from workers.common import decode_path

SAMPLES = Path(__file__).parent.parent / "sample_logs"


def test_run_once_over_sample_logs_matches_expected(tmp_path: Path) -> None:
    expected = json.loads((SAMPLES / "EXPECTED.json").read_text())
    state = str(tmp_path / "state")
    run = logdispatch("run", str(SAMPLES), "--once", "--workers", "2", "--state", state)
    assert run.returncode == 0, run.stderr
    assert f"{expected['totals']['files']} files" in run.stdout  # the table's footer

    shown = logdispatch("summary", "--state", state, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    document = json.loads(shown.stdout)
    files = {f["path"]: f for f in document["files"]}
    assert set(files) == set(expected["files"])
    for path, counts in expected["files"].items():
        assert files[path]["status"] == "done"
        assert (files[path]["lines"], files[path]["error_lines"]) == (
            counts["lines"],
            counts["error_lines"],
        ), path
        assert set(files[path]) >= {"path", "status", "lines", "error_lines", "bytes", "worker"}
        assert {"attempts", "error"} <= set(files[path])
    totals = document["totals"]
    assert totals["files"] == totals["done"] == expected["totals"]["files"]
    assert totals["failed"] == 0
    assert totals["lines"] == expected["totals"]["lines"]
    assert totals["error_lines"] == expected["totals"]["error_lines"]
    # Bytes of content, decompressed: each piece counted once.
    assert totals["bytes"] == sum(len(content_of(SAMPLES / path)) for path in files)


def test_summary_csv_and_table_escape_odd_names(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    odd = b"bad \xff name\nwith newline [red]x.log"
    (root / "plain.log").write_bytes(b"ERROR a\nINFO b\n")
    with open(os.path.join(os.fsencode(root), odd), "wb") as f:
        f.write(b"FATAL z\n")
    state = str(tmp_path / "state")
    assert (
        logdispatch("run", str(root), "--once", "--workers", "1", "--state", state).returncode == 0
    )

    table = logdispatch("summary", "--state", state)
    assert "bad \\xff name\\nwith newline [red]x.log" in table.stdout
    rows = list(
        csv.DictReader(
            io.StringIO(logdispatch("summary", "--state", state, "--format", "csv").stdout)
        )
    )
    by_path = {row["path"]: row for row in rows}
    assert by_path["plain.log"]["error_lines"] == "1"
    assert by_path["bad \\xff name\nwith newline [red]x.log"]["lines"] == "1"


def test_run_once_exits_nonzero_when_a_file_fails(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "good.log").write_bytes(b"ERROR fine\n")
    (root / "broken.log.gz").write_bytes(gzip.compress(b"ERROR x\n" * 1000)[:-30])
    state = str(tmp_path / "state")
    run = logdispatch(
        "run", str(root), "--once", "--workers", "1", "--state", state, "--max-attempts", "1"
    )
    assert run.returncode == 1
    document = json.loads(logdispatch("summary", "--state", state, "--format", "json").stdout)
    files = {f["path"]: f for f in document["files"]}
    assert files["good.log"]["status"] == "done"
    assert files["broken.log.gz"]["status"] == "failed"
    assert files["broken.log.gz"]["error"]


def test_count_prints_the_same_counts_as_the_rules(tmp_path: Path) -> None:
    plain = tmp_path / "a.log"
    plain.write_bytes(b"ERROR x\r\nok\nFATAL\tERROR twice\nno final newline ERROR")
    packed = tmp_path / "b.log.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    result = logdispatch("count", str(plain), str(packed), "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    lines, errors = reference_counts(plain.read_bytes())
    assert [(f["lines"], f["error_lines"]) for f in document["files"]] == [(lines, errors)] * 2
    assert document["files"][1]["compression"] == "gzip"
    assert document["totals"] == {
        "files": 2,
        "failed": 0,
        "lines": 2 * lines,
        "error_lines": 2 * errors,
        "counts": {},
    }

    text = logdispatch("count", str(plain), str(tmp_path / "missing.log"))
    assert text.returncode == 1
    assert text.stdout.split() == [
        *COUNT_HEADER,
        str(lines),
        str(errors),
        str(plain),
        str(lines),
        str(errors),
        "total",
    ]
    assert "missing.log: No such file or directory" in text.stderr


def test_missing_authkey_is_a_clear_error(tmp_path: Path) -> None:
    env_free = logdispatch("serve", str(tmp_path), "--state", str(tmp_path / "s"))
    assert env_free.returncode == 2
    assert "an authkey is required" in env_free.stderr
    assert "Traceback" not in env_free.stderr


def test_long_table_keeps_the_files_that_need_attention() -> None:
    files = [
        {
            "path": f"f{i:03}.log",
            "status": "done",
            "lines": 10,
            "error_lines": i % 7,
            "bytes": 1,
            "worker": "w",
            "attempts": 1,
            "error": None,
            "counts": {},
        }
        for i in range(300)
    ]
    files[150].update(status="failed", lines=None, error_lines=None, error="corrupt gzip data")
    totals = {
        "files": 300,
        "done": 299,
        "failed": 1,
        "vanished": 0,
        "pending": 0,
        "lines": 2990,
        "error_lines": 0,
        "bytes": 299,
        "counts": {},
        "lacking": {},
    }
    out = io.StringIO()
    summary.render_table({"totals": totals, "files": files}, out, table_rows=5)
    shown = [line.split()[0] for line in out.getvalue().splitlines() if ".log" in line]
    assert shown[0] == "f150.log"  # failed first
    assert len(shown) == 5
    assert all(int(files[int(p[1:4])]["error_lines"]) == 6 for p in shown[1:])
    assert "Showing 5 of 300 files" in out.getvalue()
    assert "corrupt gzip data" in out.getvalue()


def test_names_that_only_look_alike_stay_apart(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path / "root")
    os.mkdir(root)
    for name, data in (
        (b"a\xff.log", b"ERROR\n"),
        (b"a\\xff.log", b"x\nx\n"),
        (b"n\nl.log", b"FATAL\n"),
        (b"n\\nl.log", b"x\n"),
    ):
        with open(os.path.join(root, name), "wb") as f:
            f.write(data)
    state = str(tmp_path / "state")
    assert logdispatch("run", os.fsdecode(root), "--once", "--state", state).returncode == 0
    document = json.loads(logdispatch("summary", "--state", state, "--format", "json").stdout)
    lines = {f["path"]: f["lines"] for f in document["files"]}
    assert lines == {"a\\xff.log": 1, "a\\\\xff.log": 2, "n\nl.log": 1, "n\\\\nl.log": 1}
    table = logdispatch("summary", "--state", state).stdout
    assert "n\\nl.log" in table and "n\\\\nl.log" in table

    counted = logdispatch("count", os.fsdecode(os.path.join(root, b"a\xff.log")), "--json")
    assert json.loads(counted.stdout)["files"][0]["path"].endswith("a\\xff.log")


def test_run_once_on_an_empty_root_succeeds_and_a_broken_pipe_is_quiet(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    state = str(tmp_path / "state")
    run = logdispatch("run", str(tmp_path / "empty"), "--once", "--state", state)
    assert run.returncode == 0, run.stderr
    assert "0 files" in run.stdout
    # Far more output than a pipe holds, of which the reader takes 10 bytes.
    many = [str(SAMPLES / "db-01/syslog")] * 5000
    writer = subprocess.Popen(
        [*LOGDISPATCH, "count", *many], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert writer.stdout is not None and writer.stderr is not None
    writer.stdout.read(10)
    writer.stdout.close()
    stderr = writer.stderr.read().decode()
    writer.stderr.close()
    assert writer.wait(timeout=60) == 128 + 13  # SIGPIPE's conventional status
    assert "Traceback" not in stderr


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=30),
    st.sampled_from(["done", "failed", "vanished", "queued", "leased"]),
    st.one_of(st.none(), st.integers(0, 2**53)),
    st.one_of(st.none(), st.text(max_size=20)),
    st.one_of(st.none(), st.text(max_size=40)),
)
def test_json_entries_are_what_json_dumps_writes(
    path: bytes, status: str, number: int | None, worker: str | None, error: str | None
) -> None:
    row = FileRow(path, status, 7, number, number, None, worker, 1, error, None)
    written = entries.json_entry(row)
    assert written == json.dumps(entries.file_entry(row))
    assert json.loads(written)["path"] == decode_path(path)


def test_summary_over_a_ledger_with_changed_and_vanished_files(tmp_path: Path) -> None:
    """Every format shows the latest version of each path once, from a real master's ledger."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.log").write_bytes(b"ERROR 1\n")
    (root / "b.log").write_bytes(b"ok\n")
    state = tmp_path / "state"
    command = [*LOGDISPATCH, "run", str(root), "--once", "--state", str(state), "--settle", "0"]
    subprocess.run(command, check=True, capture_output=True)
    (root / "a.log").write_bytes(b"ERROR 1\nERROR 2\nok\n")  # a new version of a.log
    (root / "b.log").unlink()
    (root / "c.log").write_bytes(b"FATAL\n")
    subprocess.run(command, check=True, capture_output=True)
    document = json.loads(_summary(state, "json"))
    files = {f["path"]: f for f in document["files"]}
    assert [f["path"] for f in document["files"]] == ["a.log", "b.log", "c.log"]
    assert (files["a.log"]["lines"], files["a.log"]["error_lines"]) == (3, 2)
    assert files["b.log"]["status"] == "done"  # gone since, but its count stands
    assert datetime.datetime.fromisoformat(files["b.log"]["gone"]).tzinfo is not None
    assert files["a.log"]["gone"] is None and files["c.log"]["gone"] is None
    assert document["totals"] == {
        "files": 3, "done": 3, "failed": 0, "vanished": 0, "pending": 0,
        "lines": 5, "error_lines": 3, "bytes": 19 + 3 + 6, "gone": 1, "counts": {}, "lacking": {},
    }  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(_summary(state, "csv"))))
    assert [(r["path"], r["lines"]) for r in rows] == [
        ("a.log", "3"),
        ("b.log", "1"),
        ("c.log", "1"),
    ]
    table = _summary(state, "table")
    assert table.count("a.log") == 1 and "3 files" in table
    assert "done, gone" in table and "3 done (1 gone)" in table


def _summary(state: Path, fmt: str) -> str:
    command = [*LOGDISPATCH, "summary", "--state", str(state), "--format", fmt]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def test_a_ledger_from_before_the_replaced_flag_is_read_then_migrated(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    column = SCHEMA[SCHEMA.index(",\n    replaced INTEGER") : SCHEMA.index("\n);")]
    old_schema = SCHEMA.replace(column, "")
    assert "replaced" not in old_schema.split("CREATE INDEX")[0]
    db = sqlite3.connect(state / "ledger.sqlite3")
    db.executescript(old_schema)
    db.execute("INSERT INTO meta VALUES ('root', ?)", (str(tmp_path),))
    db.executemany(
        "INSERT INTO versions (id, path, size, mtime_ns, status, lines, error_lines, seen_at) "
        "VALUES (?, ?, ?, 0, ?, ?, ?, 0)",
        [
            (1, b"a.log", 5, "done", 1, 0),
            (2, b"a.log", 9, "done", 2, 1),
            (3, b"b.log", 3, "done", 1, 1),
        ],
    )
    db.commit()
    db.close()
    expected = [("a.log", 2), ("b.log", 1)]
    before = json.loads(_summary(state, "json"))  # read-only: no migration, the old query
    assert [(f["path"], f["lines"]) for f in before["files"]] == expected
    Ledger(state, tmp_path).close()  # what a master does when it opens the ledger
    after = json.loads(_summary(state, "json"))
    assert [(f["path"], f["lines"]) for f in after["files"]] == expected
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        assert db.execute("SELECT id FROM versions WHERE replaced = 1").fetchall() == [(1,)]
