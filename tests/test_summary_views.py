"""summary's views (--by, --depth, --sort, --top, --failed, --errors) over real ledgers, checked
against counts worked out here from the files themselves."""

from __future__ import annotations

import bz2
import csv
import datetime
import gzip
import io
import ipaddress
import json
import os
import random
import re
import socket
import sqlite3
import subprocess
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import LOGDISPATCH, logdispatch
from reference import DEFAULT, reference_counts

from dispatcher.defaults import ERROR_SAMPLE_FILES
from dispatcher.ledger import sums
from dispatcher.ledger.writer import Ledger
from dispatcher.versions import VersionStatus
from dispatcher.views.summary import build
from workers.common import decode_path, printable
from workers.protocol import Result, Status

Rng = random.Random


def _query(r: Rng) -> bytes:
    stamp = b"2026-11-%02d %02d:%02d:%02d,%03d" % (
        r.randint(1, 30), r.randrange(24), r.randrange(60), r.randrange(60), r.randrange(1000)
    )  # fmt: skip
    return stamp + b" ERROR payments.db: query %d failed after %d ms" % (
        r.randrange(10**6),
        r.randrange(10**4),
    )


def _rejected(r: Rng) -> bytes:
    address = ipaddress.ip_address(r.getrandbits(32) if r.random() < 0.5 else r.getrandbits(128))
    request = uuid.UUID(int=r.getrandbits(128))
    stamp = b"2026-11-20T%02d:%02d:%02d.%03dZ" % (
        r.randrange(24), r.randrange(60), r.randrange(60), r.randrange(1000)
    )  # fmt: skip
    return b"%s ERROR request %s from %s rejected" % (
        stamp,
        str(request).encode(),
        str(address).encode(),
    )


def _disk(r: Rng) -> bytes:
    # Hostile: not UTF-8, and rich markup that must stay text.
    return b"FATAL [red]disk \xff%d full on 'vol-%d'" % (r.randrange(100), r.randrange(10**5))


def _evicted(r: Rng) -> bytes:
    return b"CRITICAL cache 0x%x evicted after %d.%d s\r" % (
        r.getrandbits(40),
        r.randrange(100),
        r.randrange(10),
    )


# Error lines by the word that only their template holds.
TEMPLATES: dict[str, Callable[[Rng], bytes]] = {
    "query": _query,
    "rejected": _rejected,
    "disk": _disk,
    "evicted": _evicted,
}
HOSTILE = b"odd \xff[red]/new\nline.log"
QUIET = (b"INFO served /v1/items/%d in 12 ms", b"DEBUG no ERRORS in batch %d", b"WARN MYERROR_%d")
# path: (how it is stored, lines, templates of its error lines)
FILES: dict[bytes, tuple[Callable[[bytes], bytes] | None, int, tuple[str, ...]]] = {
    b"web-01/nginx/access.log": (None, 60, ("rejected", "query")),
    b"web-01/nginx/error.log.1.gz": (gzip.compress, 40, ("rejected",)),
    b"db-01/postgres.log": (None, 50, ("query", "evicted")),
    b"app-01/python/app.log": (None, 80, ("query", "disk", "evicted")),
    b"app-01/worker/jobs.log.bz2": (bz2.compress, 30, ("disk",)),
    b"top.log": (None, 10, ("query",)),
    HOSTILE: (None, 150, ("disk",)),  # the most error lines: the example of its message
    b"quiet/empty.log": (None, 0, ()),
    b"quiet/calm.log": (None, 25, ()),
}
BROKEN = b"broken/broken.log.gz"  # a gzip stream cut short: failed
ERROR_RE = re.compile(DEFAULT)


@dataclass(frozen=True)
class Counted:
    """A root counted by `run --once`, and what its files hold."""

    state: str
    files: dict[bytes, dict[str, Any]]  # status, lines, error_lines, bytes (on disk)
    samples: dict[bytes, list[bytes]]  # the first 3 error lines of each file, as sampled


def _content(rng: Rng, lines: int, templates: tuple[str, ...]) -> bytes:
    written = []
    for i in range(lines):
        if templates and (i == 1 or rng.random() < 0.3):
            written.append(TEMPLATES[rng.choice(templates)](rng))
        else:
            written.append(rng.choice(QUIET) % i)
    return b"".join(line + b"\n" for line in written)


@pytest.fixture(scope="module")
def counted(tmp_path_factory: pytest.TempPathFactory) -> Counted:
    tmp = tmp_path_factory.mktemp("views")
    root = os.fsencode(tmp / "root")
    rng = random.Random(20261120)
    files: dict[bytes, dict[str, Any]] = {}
    samples: dict[bytes, list[bytes]] = {}
    for path, (store, lines, templates) in FILES.items():
        content = _content(rng, lines, templates)
        full = os.path.join(root, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(store(content) if store else content)
        count, errors = reference_counts(content)
        files[path] = {
            "status": "done",
            "lines": count,
            "error_lines": errors,
            "bytes": os.path.getsize(full),
            "content_bytes": len(content),  # what the totals' bytes count, each piece once
        }
        error_lines = [
            line.removesuffix(b"\r")
            for line in content.split(b"\n")
            if ERROR_RE.search(line.removesuffix(b"\r"))
        ]
        samples[path] = error_lines[:3]
    os.makedirs(os.path.join(root, b"broken"))
    with open(os.path.join(root, BROKEN), "wb") as f:
        f.write(gzip.compress(b"ERROR x\n" * 1000)[:-30])
    files[BROKEN] = {"status": "failed", "lines": None, "error_lines": None, "bytes": None}
    state = str(tmp / "state")
    run = logdispatch(
        "run", os.fsdecode(root), "--once", "--workers", "2", "--state", state,
        "--max-attempts", "1", "--settle", "0",
    )  # fmt: skip
    assert run.returncode == 1, run.stderr  # the broken file failed, the others are done
    return Counted(state, files, samples)


def summary(state: str, *args: str, env: dict[str, str] | None = None) -> str:
    shown = logdispatch("summary", "--state", state, *args, env=env)
    # --failed exits 1 when a file failed or vanished: every ledger read here has one.
    assert shown.returncode == (1 if "--failed" in args else 0), shown.stderr
    return shown.stdout


def as_json(state: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(summary(state, "--format", "json", *args, env=env))
    return document


def as_csv(state: str, *args: str, env: dict[str, str] | None = None) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(summary(state, "--format", "csv", *args, env=env))))


def csv_text(entry: dict[str, Any]) -> dict[str, str]:
    """A JSON entry as its CSV row reads."""
    return {
        key: "" if value is None else json.dumps(value, separators=(",", ":"))
        if isinstance(value, dict) else str(value)
        for key, value in entry.items()
    }  # fmt: skip


def expected_groups(
    files: dict[bytes, dict[str, Any]], key: Callable[[bytes], bytes]
) -> dict[bytes, dict[str, Any]]:
    """Groups of ``files`` by ``key`` of their path, as GROUP_FIELDS count them (bar the key)."""
    groups: dict[bytes, dict[str, Any]] = {}
    for path, facts in files.items():
        group = groups.setdefault(
            key(path),
            dict.fromkeys(
                ("files", "done", "failed", "vanished", "pending", "lines", "error_lines", "bytes"),
                0,
            ),
        )
        group["files"] += 1
        group[facts["status"]] += 1
        if facts["status"] == "done":
            group["lines"] += facts["lines"]
            group["error_lines"] += facts["error_lines"]
            group["bytes"] += facts["content_bytes"]
    for group in groups.values():
        group["error_rate"] = group["error_lines"] / group["lines"] if group["lines"] else 0.0
    return groups


def folder(path: bytes, depth: int) -> bytes:
    parent = os.path.dirname(path)
    return b"/".join(parent.split(b"/")[:depth]) if parent else b"."


def test_groups_by_dir_add_up_to_the_files_in_every_format(counted: Counted) -> None:
    expected = expected_groups(counted.files, lambda path: folder(path, 1))
    assert set(expected) == {
        b".", b"app-01", b"broken", b"db-01", b"odd \xff[red]", b"quiet", b"web-01"
    }  # fmt: skip
    document = as_json(counted.state, "--by", "dir")
    assert (document["by"], document["depth"]) == ("dir", 1)
    groups = document["groups"]
    assert [g["key"] for g in groups] == [decode_path(k) for k in sorted(expected)]
    for group, key in zip(groups, sorted(expected), strict=True):
        assert group.pop("counts") == {}  # no named counters
        assert {k: v for k, v in group.items() if k != "key"} == pytest.approx(expected[key])
        group["counts"] = {}
    totals = document["totals"]
    for name in ("files", "done", "failed", "vanished", "pending", "lines", "error_lines", "bytes"):
        assert sum(g[name] for g in groups) == totals[name], name
    assert totals == as_json(counted.state)["totals"]

    assert as_csv(counted.state, "--by", "dir") == [csv_text(g) for g in groups]

    table = summary(counted.state, "--by", "dir")
    app = next(g for g in groups if g["key"] == "app-01")
    row = next(line for line in table.splitlines() if line.strip().startswith("app-01"))
    assert f"{app['error_rate']:.2%}" in row and f"{app['lines']:,}" in row
    assert "odd \\xff[red]" in table  # escaped, and not taken for markup
    assert f"{totals['lines']:,}" in table and "7 folders." in table


def test_depth_takes_the_first_folders_of_each_path(counted: Counted) -> None:
    for depth in (2, 5):
        expected = expected_groups(counted.files, lambda path, d=depth: folder(path, d))
        groups = as_json(counted.state, "--by", "dir", "--depth", str(depth))["groups"]
        assert [g["key"] for g in groups] == [decode_path(k) for k in sorted(expected)]
        assert [g["lines"] for g in groups] == [expected[k]["lines"] for k in sorted(expected)]
    assert "web-01/nginx" in [g["key"] for g in groups] and "." in [g["key"] for g in groups]


def test_groups_by_worker_and_host_add_up(counted: Counted) -> None:
    totals = as_json(counted.state)["totals"]
    workers = as_json(counted.state, "--by", "worker")["groups"]
    assert 1 <= len(workers) <= 2  # run --workers 2
    assert all(re.fullmatch(r".+:\d+", g["key"]) for g in workers)
    for name in ("files", "done", "failed", "lines", "error_lines", "bytes"):
        assert sum(g[name] for g in workers) == totals[name], name
    hosts = as_json(counted.state, "--by", "host")["groups"]
    assert [g["key"] for g in hosts] == [socket.gethostname()]
    shared = totals.keys() & hosts[0].keys()
    assert shared >= {"files", "done", "failed", "vanished", "pending", "lines", "bytes"}
    assert {k: hosts[0][k] for k in shared} == {k: totals[k] for k in shared}


def test_sort_and_top_order_files_and_groups(counted: Counted) -> None:
    def rate(facts: dict[str, Any]) -> float:
        return facts["error_lines"] / facts["lines"] if facts["lines"] else 0.0

    def order(key: Callable[[dict[str, Any]], float]) -> list[str]:
        ranked = sorted(counted.files, key=lambda p: (-key(counted.files[p]), p))
        return [decode_path(p) for p in ranked]

    by_lines = as_json(counted.state, "--sort", "lines")
    assert [f["path"] for f in by_lines["files"]] == order(lambda f: f["lines"] or 0)
    assert by_lines["totals"]["files"] == len(counted.files)  # totals count every file
    top = as_csv(counted.state, "--top", "3")  # --top alone: most error lines first
    assert [r["path"] for r in top] == order(lambda f: f["error_lines"] or 0)[:3]
    by_rate = as_json(counted.state, "--sort", "rate", "--top", "2")["files"]
    assert [f["path"] for f in by_rate] == order(rate)[:2]

    expected = expected_groups(counted.files, lambda path: folder(path, 1))
    ranked = sorted(expected, key=lambda k: (-expected[k]["error_lines"], k))[:2]
    groups = as_json(counted.state, "--by", "dir", "--sort", "errors", "--top", "2")["groups"]
    assert [g["key"] for g in groups] == [decode_path(k) for k in ranked]

    table = summary(counted.state, "--top", "3")
    ranked_files = [printable(p) for p in order(lambda f: f["error_lines"] or 0)]
    assert [p for p in ranked_files if p in table] == ranked_files[:3]
    assert sorted(ranked_files[:3], key=table.index) == ranked_files[:3]
    assert f"Showing 3 of {len(counted.files)} files (most error lines)." in table
    rated = summary(counted.state, "--sort", "rate", "--rows", "2")
    assert "error rate" in rated and "--rows 0 shows all" in rated


def test_failed_lists_exactly_the_failed_files_with_their_reasons(counted: Counted) -> None:
    document = as_json(counted.state, "--failed")
    assert [f["path"] for f in document["files"]] == [decode_path(BROKEN)]
    broken = document["files"][0]
    assert broken["status"] == "failed" and broken["error"] and broken["attempts"] == 1
    assert re.fullmatch(r".+:\d+", broken["worker"])
    assert datetime.datetime.fromisoformat(broken["finished_at"]).tzinfo is not None
    plain = {f["path"]: f for f in as_json(counted.state)["files"]}[decode_path(BROKEN)]
    assert {k: broken[k] for k in plain} == plain  # the file entry's shape, and more
    assert as_csv(counted.state, "--failed") == [csv_text(broken)]
    table = summary(counted.state, "--failed")
    assert decode_path(BROKEN) in table and broken["error"][:12] in table


def test_errors_make_one_message_of_lines_that_differ_in_numbers_and_ids(counted: Counted) -> None:
    sampled = {path: lines for path, lines in counted.samples.items() if lines}
    lines_of: Counter[str] = Counter()
    files_of: Counter[str] = Counter()
    for lines in sampled.values():
        found = [next(t for t in TEMPLATES if t.encode() in line) for line in lines]
        lines_of.update(found)
        files_of.update(set(found))

    document = as_json(counted.state, "--errors")
    assert document["sampled"] == {
        "files": len(sampled),
        "lines": sum(map(len, sampled.values())),
        "files_with_error_lines": len(sampled),
        "lines_per_file": 3,
    }
    messages = document["messages"]
    templates = [next(t for t in TEMPLATES if t in m["example"]) for m in messages]
    assert sorted(templates) == sorted(lines_of)  # one message per template, each apart
    for template, message in zip(templates, messages, strict=True):
        assert (message["sampled_lines"], message["files"]) == (
            lines_of[template],
            files_of[template],
        ), template
        path = next(p for p in sampled if decode_path(p) == message["path"])
        assert message["example"] in [
            line.decode("utf-8", "backslashreplace") for line in sampled[path]
        ]
    assert [m["sampled_lines"] for m in messages] == sorted(lines_of.values(), reverse=True)
    disk = messages[templates.index("disk")]
    assert "[red]disk \\xff" in disk["example"] and "<n>" in disk["message"]
    assert disk["path"] == decode_path(HOSTILE)  # the file with the most error lines

    assert as_csv(counted.state, "--errors", "--top", "1") == [csv_text(messages[0])]
    table = summary(counted.state, "--errors")
    assert "Counts are of sampled lines: the first 3 error lines of each file" in table
    assert "FATAL [red]disk \\xff" in table  # not markup, not a raw byte
    assert "odd \\xff[red]/new\\nline.log" in table


def _hand_ledger(tmp_path: Path) -> tuple[Path, float]:
    """A ledger written by the master's own Ledger: files finished around midnight in Tokyo,
    by two workers of one host and one of another, one vanished, one failed, two pending."""
    state = tmp_path / "state"
    ledger = Ledger(state, tmp_path / "root")
    night = datetime.datetime(2026, 11, 20, 14, 59, 59, tzinfo=datetime.UTC).timestamp()
    for path, worker, lines, errors, finished in (
        (b"a/one.log", "host-a:100", 10, 1, night),  # 23:59:59 in Tokyo
        (b"a/two.log", "host-a:101", 20, 0, night + 2),  # 00:00:01 the next day
        (b"b/three.log", "host-b:7", 5, 5, night + 3600),
    ):
        version = ledger.add_version(path, 100, 1, night - 60)
        ledger.record_result(Result(version, 1, worker, Status.DONE, lines, errors, 100), finished)
    gone = ledger.add_version(b"b/gone.log", 100, 1, night - 60)
    ledger.record_end(gone, VersionStatus.VANISHED, "No such file", night + 10, "host-b:7", 1)
    bad = ledger.add_version(b"b/bad.log", 100, 1, night - 60)
    ledger.record_end(bad, VersionStatus.FAILED, "corrupt gzip", night + 20, "host-a:100", 3)
    leased = ledger.add_version(b"c/busy.log", 100, 1, night - 60)
    ledger.mark_leased([(leased, 1, "host-b:7")])
    ledger.add_version(b"c/later.log", 100, 1, night - 60)  # queued: no worker, no day
    ledger.close()
    return state, night


@pytest.mark.parametrize(
    ("tz", "days"),
    [
        ("JST-9", {"2026-11-20": 1, "2026-11-21": 4, None: 2}),
        ("UTC0", {"2026-11-20": 5, None: 2}),
    ],
)
def test_days_are_local_days_of_the_finish(
    tmp_path: Path, tz: str, days: dict[str | None, int]
) -> None:
    state, _ = _hand_ledger(tmp_path)
    groups = as_json(str(state), "--by", "day", env={"TZ": tz})["groups"]
    assert {g["key"]: g["files"] for g in groups} == days
    assert groups[-1]["key"] is None and groups[-1]["pending"] == 2  # not finished: last
    rows = as_csv(str(state), "--by", "day", env={"TZ": tz})
    assert [r["key"] for r in rows] == [g["key"] or "" for g in groups]
    assert "(not finished)" in summary(str(state), "--by", "day", env={"TZ": tz})


def test_workers_hosts_and_failed_of_a_hand_written_ledger(tmp_path: Path) -> None:
    state, night = _hand_ledger(tmp_path)
    workers = {g["key"]: g for g in as_json(str(state), "--by", "worker")["groups"]}
    assert {
        k: (g["files"], g["done"], g["failed"], g["vanished"], g["pending"])
        for k, g in workers.items()
    } == {
        "host-a:100": (2, 1, 1, 0, 0),
        "host-a:101": (1, 1, 0, 0, 0),
        "host-b:7": (2, 1, 0, 1, 0),
        None: (2, 0, 0, 0, 2),  # pending, the one host-b:7 holds too
    }
    hosts = {g["key"]: g["files"] for g in as_json(str(state), "--by", "host")["groups"]}
    assert hosts == {"host-a": 3, "host-b": 2, None: 2}
    assert workers["host-b:7"]["error_rate"] == 1.0

    failed = as_json(str(state), "--failed", env={"TZ": "JST-9"})["files"]
    assert [(f["path"], f["status"], f["error"]) for f in failed] == [
        ("b/bad.log", "failed", "corrupt gzip"),
        ("b/gone.log", "vanished", "No such file"),
    ]
    gone = datetime.datetime.fromisoformat(failed[1]["finished_at"])
    assert gone.timestamp() == night + 10 and gone.utcoffset() == datetime.timedelta(hours=9)
    table = summary(str(state), "--failed", "--rows", "1")
    assert "b/bad.log" in table and "b/gone.log" not in table
    assert "Showing 1 of 2 failed or vanished files (by path); --rows 0 shows all." in table
    assert "1 failed and 1 vanished, of 7 files." in table


def test_plain_json_keeps_its_shape(counted: Counted) -> None:
    document = as_json(counted.state)
    assert list(document) == ["totals", "files"]
    assert list(document["totals"]) == [
        "files", "done", "failed", "vanished", "pending", "lines", "error_lines", "bytes", "gone",
        "counts", "lacking",
    ]  # fmt: skip
    # No named counters: empty objects, in the totals and in every file's entry.
    assert document["totals"]["counts"] == document["totals"]["lacking"] == {}
    # docs/summary.md's keys, in order: keys are only added, never removed or renamed.
    keys = ("path", "status", "lines", "error_lines", "bytes", "worker", "attempts", "error")
    assert {tuple(f) for f in document["files"]} == {
        (*keys, "on_done", "gone", "same_as", "counts")
    }
    assert all(f["counts"] == {} for f in document["files"])


@pytest.mark.parametrize(
    "args",
    [
        ("--failed", "--by", "dir"),
        ("--errors", "--by", "worker"),
        ("--failed", "--errors"),
        ("--errors", "--sort", "rate"),
        ("--failed", "--top", "3"),
        ("--failed", "--sort", "lines"),
        ("--depth", "2"),
        ("--by", "day", "--depth", "2"),
        ("--by", "dir", "--depth", "0"),
        ("--top", "0"),
        ("--rows", "-1"),
    ],
)
def test_options_that_make_no_sense_together_are_refused(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    refused = logdispatch("summary", "--state", str(tmp_path / "none"), *args)
    assert refused.returncode == 2
    assert refused.stderr.startswith("logdispatch summary: error: ")
    assert refused.stderr.count("\n") == 1 and refused.stdout == ""


def test_errors_read_the_samples_of_the_files_with_most_error_lines_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Ledger(state, tmp_path / "root").close()
    many = ERROR_SAMPLE_FILES + 10
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        db.execute(
            "WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?) "
            "INSERT INTO versions (path, size, mtime_ns, status, lines, error_lines, samples, "
            "seen_at, finished_at) SELECT CAST('f' || i || '.log' AS BLOB), 10, 0, 'done', 9, "
            "CASE WHEN i <= 10 THEN 1 ELSE 2 END, CAST(CASE WHEN i <= 10 "
            "THEN 'ERROR rare ' || i ELSE 'ERROR common ' || i || char(10) || 'FATAL x' END "
            "AS BLOB), 0, 0 FROM seq",
            (many,),
        )
        sums.rebuild(db)  # rows written by hand, not through the writer
    document = as_json(str(state), "--errors")
    assert document["sampled"]["files"] == ERROR_SAMPLE_FILES
    assert document["sampled"]["files_with_error_lines"] == many
    assert [(m["message"], m["files"]) for m in document["messages"]] == [
        ("ERROR common <n>", ERROR_SAMPLE_FILES),
        ("FATAL x", ERROR_SAMPLE_FILES),
    ]  # the ten files with one error line were left out
    table = summary(str(state), "--errors")
    assert f"of {many:,} files with error lines" in table


def _narrowed_ledger(tmp_path: Path) -> tuple[Path, str]:
    """A ledger of two folders, a copy, a failed file and an undecodable name."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "x.log").write_bytes(b"ERROR one\nok\n")
    (root / "a" / "y.log").write_bytes(b"ok\n" * 3)
    (root / "b" / "z.log").write_bytes(b"ERROR two\nERROR three\n")
    (root / "b" / "copy.log.gz").write_bytes(gzip.compress(b"ERROR one\nok\n"))
    (root / "bad.gz").write_bytes(gzip.compress(b"ERROR x\n" * 10_000)[:-40])
    with open(os.path.join(os.fsencode(root), b"c\xff.log"), "wb") as f:
        f.write(b"ok\nok\n")
    state = str(tmp_path / "state")
    run = logdispatch(
        "run", str(root), "--once", "--workers", "1", "--state", state,
        "--max-attempts", "1", "--settle", "0",
    )  # fmt: skip
    assert run.returncode == 1, run.stderr  # bad.gz failed
    return root, state


def test_path_narrows_every_view_and_its_totals(tmp_path: Path) -> None:
    _, state = _narrowed_ledger(tmp_path)
    a = as_json(state, "--path", "a/*")
    assert [f["path"] for f in a["files"]] == ["a/x.log", "a/y.log"]
    assert (a["totals"]["files"], a["totals"]["lines"], a["totals"]["error_lines"]) == (2, 5, 1)

    # The copy's content was counted first under a/x.log: it shows its counts, and adds
    # nothing to the totals, narrowed or not.
    b = as_json(state, "--path", "b/*")
    files = {f["path"]: f for f in b["files"]}
    assert set(files) == {"b/copy.log.gz", "b/z.log"}
    assert files["b/copy.log.gz"]["same_as"] == "a/x.log"
    assert files["b/copy.log.gz"]["lines"] == 2
    assert (b["totals"]["files"], b["totals"]["lines"], b["totals"]["error_lines"]) == (2, 2, 2)

    # * takes / too (fnmatch); a glob that starts with an escape matches the path as shown.
    logs = as_json(state, "--path", "*.log", "--by", "dir")
    assert {g["key"]: g["files"] for g in logs["groups"]} == {"a": 2, "b": 1, ".": 1}
    assert logs["totals"]["files"] == 4 and logs["totals"]["failed"] == 0
    odd = as_json(state, "--path", "c\\xff*")
    assert [f["path"] for f in odd["files"]] == ["c\\xff.log"]
    assert as_json(state, "--path", "nothing/*")["totals"]["files"] == 0

    # --failed: only the matching failures, and its exit status follows them.
    failed = logdispatch("summary", "--state", state, "--failed", "--path", "*.gz")
    assert failed.returncode == 1 and "bad.gz" in failed.stdout
    clean = logdispatch("summary", "--state", state, "--failed", "--path", "a/*")
    assert clean.returncode == 0, clean.stderr
    assert "No file failed or vanished, of 2." in clean.stdout

    messages = as_json(state, "--errors", "--path", "b/z*")["messages"]
    assert {m["path"] for m in messages} == {"b/z.log"}
    table = summary(state, "--path", "a/*")
    assert "a/x.log" in table and "b/z.log" not in table


def test_history_lists_every_version_of_one_path(tmp_path: Path) -> None:
    root, state = _narrowed_ledger(tmp_path)
    with open(root / "a" / "y.log", "ab") as f:
        f.write(b"ERROR later\n")
    run = logdispatch(
        "run", str(root), "--once", "--workers", "1", "--state", state,
        "--max-attempts", "1", "--settle", "0",
    )  # fmt: skip
    assert run.returncode == 1, run.stderr

    document = as_json(state, "--history", "a/y.log")
    assert document["path"] == "a/y.log"
    first, second = document["versions"]
    assert set(first) == {
        "id", "status", "size", "mtime", "lines", "error_lines", "own_lines", "same_as",
        "finished_at",
    }  # fmt: skip
    assert first["id"] < second["id"]
    assert (first["status"], first["size"], first["lines"], first["own_lines"]) == ("done", 9, 3, 3)
    # The grown log counts in full, and adds what it gained.
    assert (second["size"], second["lines"], second["error_lines"]) == (21, 4, 1)
    assert second["own_lines"] == 1
    assert datetime.datetime.fromisoformat(second["finished_at"]).tzinfo is not None

    copy = as_json(state, "--history", "b/copy.log.gz")["versions"]
    assert [(v["same_as"], v["own_lines"]) for v in copy] == [("a/x.log", 0)]
    assert as_json(state, "--history", "c\\xff.log")["versions"][0]["lines"] == 2
    assert as_json(state, "--history", "no/such.log")["versions"] == []

    table = summary(state, "--history", "b/copy.log.gz")
    assert "its content was counted first as a/x.log" in table
    assert as_csv(state, "--history", "a/y.log")[1]["own_lines"] == "1"
    refused = logdispatch("summary", "--state", state, "--history", "a/y.log", "--path", "a/*")
    assert refused.returncode == 2
    assert "--history lists the versions of one path" in refused.stderr


def test_since_narrows_every_view_to_what_was_finished_since(tmp_path: Path) -> None:
    _, state = _narrowed_ledger(tmp_path)
    three_days = 3 * 86400
    with sqlite3.connect(Path(state) / "ledger.sqlite3") as db:
        db.execute(
            "UPDATE versions SET finished_at = finished_at - ? WHERE path IN (?, ?)",
            (three_days, b"a/x.log", b"bad.gz"),
        )
        sums.rebuild(db)
        (old,) = db.execute(
            "SELECT finished_at FROM versions WHERE path = ?", (b"a/x.log",)
        ).fetchone()
    everything = as_json(state)
    recent = as_json(state, "--since", "2d")
    assert {f["path"] for f in everything["files"]} - {f["path"] for f in recent["files"]} == {
        "a/x.log",
        "bad.gz",
    }
    assert recent["totals"]["files"] == everything["totals"]["files"] - 2
    assert recent["totals"]["failed"] == 0
    # a/x.log's two lines are not in the totals since, and neither is its copy's content,
    # counted first before then.
    assert recent["totals"]["lines"] == everything["totals"]["lines"] - 2

    # An ISO date or time, local unless it gives its offset: the same cut either side of old.
    iso = datetime.datetime.fromtimestamp(old + 60).isoformat(timespec="seconds")
    assert as_json(state, "--since", iso)["totals"] == recent["totals"]
    before = datetime.datetime.fromtimestamp(old - 60, datetime.UTC).isoformat()
    assert as_json(state, "--since", before)["totals"] == everything["totals"]

    # Every view: groups, failed (and its exit status), with --path too.
    days = as_json(state, "--since", "2d", "--by", "day")
    assert sum(g["files"] for g in days["groups"]) == recent["totals"]["files"]
    clean = logdispatch("summary", "--state", state, "--failed", "--since", "1h")
    assert clean.returncode == 0, clean.stderr
    assert logdispatch("summary", "--state", state, "--failed", "--since", "1w").returncode == 1
    a = as_json(state, "--since", "2d", "--path", "a/*")
    assert [f["path"] for f in a["files"]] == ["a/y.log"]

    # A version not finished yet shows whatever --since says: it is the work at hand.
    with sqlite3.connect(Path(state) / "ledger.sqlite3") as db:
        db.execute("UPDATE versions SET finished_at = finished_at - ?", (three_days,))
        db.execute(
            "UPDATE versions SET status = 'queued', finished_at = NULL, lines = NULL, "
            "error_lines = NULL, own_lines = 0, own_error_lines = 0 WHERE path = ?",
            (b"b/z.log",),
        )
        sums.rebuild(db)
    pending = as_json(state, "--since", "1d")
    assert [(f["path"], f["status"]) for f in pending["files"]] == [("b/z.log", "queued")]

    for bad in ("yesterday", "2x", "-2h"):
        refused = logdispatch("summary", "--state", state, f"--since={bad}")
        said = f"{bad!r} is neither a duration (2h, 7d) nor an ISO date or time"
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
        assert refused.stderr.startswith("usage: logdispatch summary")
    refused = logdispatch("summary", "--state", state, "--history", "a/y.log", "--since", "2h")
    assert refused.returncode == 2 and "--since do not apply" in refused.stderr


def test_json_and_csv_of_every_file_are_what_json_and_csv_write_of_its_entry(
    tmp_path: Path,
) -> None:
    """The file view's JSON and CSV, written a block at a time from the query's rows, against
    each file's entry worked out here from the ledger's columns and written by json.dumps and
    csv: names with undecodable bytes, backslashes, quotes and DEL; counts; same_as; gone;
    what became of a file; errors with a comma and a newline; more rows than a block."""
    from dispatcher.views.summary import WRITE_BLOCK

    root, state = tmp_path / "root", tmp_path / "state"
    root.mkdir()
    run = logdispatch("run", str(root), "--once", "--state", str(state))
    assert run.returncode == 0, run.stderr
    names = [b"plain.log", b"caf\xc3\xa9.log", b"bad-\xff\xfe.log", b'q"uote\\back.log', b"del\x7f"]
    r = random.Random(18)
    rows = []
    for i in range(2 * WRITE_BLOCK + 7):
        status = ["done", "done", "done", "failed", "vanished", "queued", "leased"][i % 7]
        done = status == "done"
        path = b"d%d/" % (i % 13) + names[i % len(names)] + b".%d" % i
        rows.append(
            (
                path, 100 + i, status, i % 4, f"host-{i % 3}:{i}" if i % 11 else None,
                r.randrange(1000) if done else None, r.randrange(10) if done else None,
                None if done else ["disk, full\nagain", "gone", "é"][i % 3],
                1_763_600_000 + i if status != "queued" else None,
                1_763_700_000.5 + i if done and i % 5 == 0 else None,
                b"d0/" + names[i % 4] if done and i % 6 == 0 else None,
                json.dumps({"warn": i % 3, "slow": i}, separators=(",", ":")) if done else None,
                ["delete", "move", None][i % 3] if done else None,
                ["pending", "done", "failed"][i % 3] if done else None,
                ["deleted", f"moved to /a/{i}", "delete failed: busy"][i % 3] if done else None,
            )
        )  # fmt: skip
    db = sqlite3.connect(state / "ledger.sqlite3")
    with db:
        db.executemany(
            "INSERT INTO versions (path, size, mtime_ns, status, attempts, worker, lines, "
            "error_lines, error, seen_at, finished_at, gone_at, same_as, counts, on_done, "
            "on_done_state, on_done_note, own_counts) "
            "VALUES (?, ?, 0, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(*row, row[11]) for row in rows],
        )
        sums.rebuild(db)
    db.close()

    def when(seconds: float | None) -> str | None:
        if seconds is None:
            return None
        moment = datetime.datetime.fromtimestamp(seconds).astimezone()
        return moment.isoformat(timespec="seconds")

    entries = []
    for row in sorted(rows):
        (path, size, status, attempts, worker, lines, errors, error, _, gone, same_as) = row[:11]
        counts, on_done, on_done_state, note = row[11:]
        entries.append(
            {
                "path": decode_path(path), "status": status, "lines": lines,
                "error_lines": errors, "bytes": size, "worker": worker, "attempts": attempts,
                "error": error,
                "on_done": f"pending: {on_done}" if on_done_state == "pending" else note,
                "gone": when(gone), "same_as": None if same_as is None else decode_path(same_as),
                "counts": json.loads(counts) if counts else {},
            }
        )  # fmt: skip

    def summary(fmt: str) -> str:
        command = [*LOGDISPATCH, "summary", "--state", str(state), "--format", fmt]
        done = subprocess.run(command, capture_output=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.decode("utf-8")

    written = summary("json")
    totals = json.loads(written)["totals"]
    assert totals["files"] == len(rows) and totals["counts"]["slow"] > 0

    def entry_json(entry: dict[str, Any]) -> str:
        # json.dumps's, but for the counts: the ledger's compact JSON, as it holds them.
        counts = json.dumps(entry["counts"], separators=(",", ":"))
        return json.dumps({**entry, "counts": None}).removesuffix("null}") + counts + "}"

    members = "".join(
        ("\n    " if n == 0 else ",\n    ") + entry_json(e) for n, e in enumerate(entries)
    )
    assert written == f'{{\n  "totals": {json.dumps(totals)},\n  "files": [{members}\n  ]\n}}\n'
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(entries[0])
    for entry in entries:
        cells = {**entry, "counts": json.dumps(entry["counts"], separators=(",", ":"))}
        writer.writerow(cells.values())
    assert summary("csv") == expected.getvalue()


@pytest.mark.parametrize("seed", range(3))
def test_the_first_rows_read_through_indexes_are_those_a_sort_of_every_file_gives(
    tmp_path: Path, seed: int
) -> None:
    """The table's files that most need attention, and --sort errors --top N, read a few rows
    through indexes: they are the first rows of every file sorted as the summary promises."""
    rng = random.Random(seed)
    state = tmp_path / "state"
    ledger = Ledger(state, tmp_path / "root")
    for i in range(400):
        path = f"d{rng.randrange(5)}/f{rng.randrange(10**6)}-{i}.log".encode()
        version = ledger.add_version(path, 100, 1, 1.7e9)
        kind = rng.random()
        if kind < 0.05:
            ledger.record_end(version, VersionStatus.FAILED, "bad", 1.7e9 + i, "h:1", 3)
        elif kind < 0.08:
            ledger.record_end(version, VersionStatus.VANISHED, "gone", 1.7e9 + i, "h:1")
        elif kind < 0.12:
            continue  # pending
        else:
            errors = rng.choice([0, 0, 0, 1, 2, rng.randrange(100)])
            lines = rng.randrange(1, 300)
            result = Result(version, 1, "h:1", Status.DONE, lines, min(errors, lines), 10)
            ledger.record_result(result, 1.7e9)
    ledger.close()
    every = build(state)["files"]  # by path

    def attention(entry: dict[str, Any]) -> tuple[Any, ...]:
        return (entry["status"] == "done", -(entry["error_lines"] or 0), entry["path"])

    def errors(entry: dict[str, Any]) -> tuple[Any, ...]:
        return (-(entry["error_lines"] or 0), entry["path"])

    def rate(entry: dict[str, Any]) -> tuple[Any, ...]:
        lines, errors = entry["lines"] or 0, entry["error_lines"] or 0
        return (-(errors / lines if lines else 0.0), entry["path"])

    for n in (1, 7, 30, 399):
        assert build(state, n)["files"] == sorted(every, key=attention)[:n]
        assert build(state, None, "errors", n)["files"] == sorted(every, key=errors)[:n]
        assert build(state, None, "rate", n)["files"] == sorted(every, key=rate)[:n]
