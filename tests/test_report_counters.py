"""The report with named counters: a bar per counter with its total and the files counted
without it, a column per counter in the folders' table, the numbers those of `summary` and of
the reference; the live page of `serve --http --count` shows them too."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, free_port, logdispatch, wait_for
from reference import content_of, reference_line_counts
from test_report import Page, _get, _page
from test_summary_views import as_json

from dispatcher.defaults import REPORT_FOLDERS
from dispatcher.views import charts, report

COUNTERS = {"warn": rb"\bWARN\b", "slow": rb"took [0-9]{4,}ms"}
COUNT_ARGS = [arg for name, p in COUNTERS.items() for arg in ("--count", f"{name}={p.decode()}")]
# Counted first with warn alone: slow lacks it.
EARLY = "old/early.log"


def _log(seed: int, count: int) -> bytes:
    lines = []
    for n in range(count):
        if (n + seed) % 4 == 0:
            lines.append(b"%d WARN db took %dms" % (n, 500 * (n % 5)))
        elif (n + seed) % 7 == 0:
            lines.append(b"%d ERROR request failed" % n)
        else:
            lines.append(b"%d INFO WARNING-free line" % n)
    return b"\n".join(lines) + b"\n"


def _run(root: Path, state: Path, *args: str) -> None:
    run = logdispatch(
        "run", str(root), "--once", "--workers", "2", "--state", str(state), "--settle", "0",
        *args, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("report-counters")
    root = tmp / "root"
    (root / "old").mkdir(parents=True)
    (root / EARLY).write_bytes(b"WARN took 99999ms\nERROR x\n")
    _run(root, tmp / "state", "--count", "warn=\\bWARN\\b")
    for i, folder in enumerate(("api", "db", "web", "web/deep")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"{i}.log").write_bytes(_log(i, 200 + 150 * i))
    (root / "top.log").write_bytes(_log(9, 50))
    _run(root, tmp / "state", *COUNT_ARGS)
    return str(tmp / "state")


def _expected(state: str) -> dict[str, int]:
    """Each counter's lines in every file by the reference; slow not in the early file."""
    root = Path(state).parent / "root"
    totals = dict.fromkeys(COUNTERS, 0)
    for path in root.rglob("*.log"):
        counts = reference_line_counts(content_of(path), list(COUNTERS.values()))
        for name, count in zip(COUNTERS, counts, strict=True):
            if not (name == "slow" and path == root / EARLY):
                totals[name] += count
    return totals


def test_the_counters_data_is_the_summarys_and_the_references(state: str) -> None:
    found = report.read(Path(state))
    summary = as_json(state)
    assert found.totals == summary["totals"]
    assert found.totals["counts"] == _expected(state)
    assert found.totals["lacking"] == {"warn": 0, "slow": 1}
    by_dir = as_json(state, "--by", "dir", "--sort", "errors", "--top", str(REPORT_FOLDERS))
    assert found.folders == by_dir["groups"]
    assert {folder["key"] for folder in found.folders} == {".", "api", "db", "old", "web"}
    for name in COUNTERS:
        assert sum(f["counts"].get(name, 0) for f in found.folders) == found.totals["counts"][name]


def _folder_table(html: str) -> tuple[list[str], dict[str, list[str]]]:
    """The folders' table: its header, and each folder's cells."""
    (table,) = re.findall(r'<table class="folders">(.*?)</table>', html, re.S)
    header = re.findall(r"<th[^>]*>([^<]*)</th>", table)
    rows = {
        match[0]: re.findall(r'<td class="n[^"]*">([^<]*)</td>', match[1])
        for match in re.findall(r'<tr>\s*<td class="path mono">([^<]*)</td>(.*?)</tr>', table, re.S)
    }
    return header, rows


def test_the_page_has_a_bar_per_counter_and_a_column_per_counter_by_folder(
    state: str, tmp_path: Path
) -> None:
    html = _page(state, tmp_path)
    page = Page(html)
    totals = as_json(state)["totals"]
    done, counts = totals["done"], totals["counts"]
    assert [attrs["role"] for tag, attrs in page.tags if tag == "svg"] == ["img"] * 3
    assert [attrs for _, attrs in page.tags if attrs.get("id") == "counters"] == [
        {"id": "counters"}
    ]
    assert "What do the named counters count?" in page.all_text
    # One bar per counter, in their order, each with its total; slow says what it lacks.
    bars = [title for title in page.titles if re.match(r"(warn|slow): ", title)]
    assert bars == [
        f"warn: {counts['warn']:,} lines; in {done} of {done} done files",
        f"slow: {counts['slow']:,} lines; in {done - 1} of {done} done files",
    ]
    assert "1 file without" in page.all_text and "files without" not in page.all_text
    most = max(counts, key=lambda name: counts[name])
    assert f"Lines per named counter. The most: {most}, {counts[most]:,} lines." in page.titles
    counter_bars = re.search(r"Lines per named counter.*?</svg>", html, re.S)
    assert counter_bars is not None
    assert re.findall(r'<rect [^>]*fill="([^"]*)"', counter_bars[0]) == [report.COUNTERS_COLOUR] * 2

    header, rows = _folder_table(html)
    assert header == ["folder", "files", "lines", "error lines", "error rate", "warn", "slow"]
    groups = {g["key"]: g for g in as_json(state, "--by", "dir")["groups"]}
    assert set(rows) == set(groups)
    for key, cells in rows.items():
        group = groups[key]
        assert cells[:3] == [f"{group['files']:,}", f"{group['lines']:,}",
                             f"{group['error_lines']:,}"]  # fmt: skip
        assert cells[-2:] == [f"{group['counts'].get(name, 0):,}" for name in COUNTERS], key
    assert rows["old"][-2:] == ["1", "0"]  # counted before slow was added
    assert "the table adds each named counter's lines" in page.all_text


def test_without_counters_the_page_has_no_counter_parts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.log").write_bytes(b"WARN took 99999ms\nERROR x\n")
    _run(root, tmp_path / "state")
    html = _page(str(tmp_path / "state"), tmp_path)
    assert html.count("<svg") == 2
    assert 'id="counters"' not in html and 'class="folders"' not in html
    assert "named counter" not in html


def test_bars_in_one_colour_and_the_most_is_the_largest_not_the_first() -> None:
    markup = charts.horizontal_bars(
        [charts.Bar("a", 2), charts.Bar("b", 9), charts.Bar("c", 9)], "t", "u", "-", "#123456"
    )
    assert re.findall(r'<rect [^>]*fill="([^"]*)"', markup) == ["#123456"] * 3
    assert 'aria-label="t. The most: b, 9 u."' in markup


def _bars(port: int, first: str) -> dict[str, Any] | None:
    """The live page and its counter bars' titles, once the first starts with ``first``."""
    status, _, body = _get(port, "/")
    page = Page(body.decode())
    bars = [title for title in page.titles if re.match(r"(warn|slow): ", title)]
    found = status == 200 and bars and bars[0].startswith(first)
    return {"page": page, "bars": bars} if found else None


def test_the_live_page_shows_the_counters(cluster: Cluster) -> None:
    (cluster.root / "a").mkdir()
    (cluster.root / "a" / "1.log").write_bytes(b"WARN took 99999ms\nWARN\nok\n")
    (cluster.root / "b.log").write_bytes(b"WARN\nslow: took 1000ms\n")
    port = free_port()
    master = cluster.serve(*COUNT_ARGS, "--http", f":{port}")
    wait_for(lambda: f"report at http://127.0.0.1:{port}/" in master.output)
    # Before any file is counted (once the master's first commit has noted its counters): a
    # bar per counter, at zero.
    zero = wait_for(lambda: _bars(port, "warn: 0 lines"), timeout=60, interval=0.5)
    assert zero["bars"] == [
        "warn: 0 lines; in 0 of 0 done files",
        "slow: 0 lines; in 0 of 0 done files",
    ]
    cluster.work()
    # The page is built again once it is as old as its refresh interval.
    live = wait_for(lambda: _bars(port, "warn: 3 lines"), timeout=60, interval=0.5)
    assert live["bars"] == [
        "warn: 3 lines; in 2 of 2 done files",
        "slow: 2 lines; in 2 of 2 done files",
    ]
    assert any(attrs.get("class") == "folders" for _, attrs in live["page"].tags)
