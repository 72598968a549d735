"""logdispatch report: the data behind each chart and table is what summary's views show of the
same ledger; the SVG helpers; hostile names stay text; serve --http over a real master."""

from __future__ import annotations

import datetime
import gzip
import itertools
import json
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import test_summary_views
from conftest import Cluster, free_port, logdispatch, port_in_use, wait_for
from ledgers import HOSTILE_LINE, HOSTILE_NAMES, Finished, write_ledger
from test_summary_views import BROKEN, Counted, as_json

from dispatcher.defaults import REPORT_BARS, REPORT_FOLDERS, REPORT_TOP_FILES
from dispatcher.ledger.writer import Ledger
from dispatcher.views import charts, entries, groups, report, summary
from dispatcher.views.messages import line_text
from dispatcher.views.web import ReportServer
from workers.common import decode_path, display_path, printable

# The ledger test_summary_views counts with `run --once`: seven folders, a failed gzip, the
# error messages of four templates, a name with a newline, markup and a byte not UTF-8.
counted = test_summary_views.counted


class Page(HTMLParser):
    """A page as a browser would parse it: its elements, their attributes, its text, and the
    text of its <title> elements (the page's, then the charts' hover texts)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.html = html
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.titles: list[str] = []
        self._in_title = False
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "title":
            self._in_title = True
            self.titles.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_title:
            self.titles[-1] += data

    @property
    def all_text(self) -> str:
        return "".join(self.text)

    def ticks(self) -> list[str]:
        """The tick labels of the charts' axes."""
        return re.findall(r'class="tick"[^>]*>([^<]*)<', self.html)


def _read(state: str) -> report.Report:
    return report.read(Path(state))


# --------------------------------------------------------------- the data behind each part


def test_folders_are_summary_by_dir_sorted_by_error_lines(counted: Counted) -> None:
    found = _read(counted.state)
    top = as_json(counted.state, "--by", "dir", "--sort", "errors", "--top", str(REPORT_FOLDERS))
    assert found.totals == top["totals"] == as_json(counted.state)["totals"]
    assert found.folders == top["groups"]
    assert found.folder_count == 7
    by_dir = {g["key"]: g["error_lines"] for g in as_json(counted.state, "--by", "dir")["groups"]}
    assert {f["key"]: f["error_lines"] for f in found.folders} == by_dir
    errors = [f["error_lines"] for f in found.folders]
    assert errors == sorted(errors, reverse=True) and errors[0] > 0


def test_top_lists_are_summary_sort_rate_and_errors(counted: Counted) -> None:
    found = _read(counted.state)
    for sort, rows in (("rate", found.by_rate), ("errors", found.by_errors)):
        expected = as_json(counted.state, "--sort", sort, "--top", str(REPORT_TOP_FILES))
        shown = [dict(zip(entries.FILE_FIELDS, entries.file_values(r), strict=True)) for r in rows]
        assert shown == expected["files"], sort
    assert found.by_rate[0].path != found.by_errors[0].path  # two different questions


def test_failed_list_is_summary_failed(counted: Counted) -> None:
    found = _read(counted.state)
    expected = as_json(counted.state, "--failed")["files"]
    assert [f["path"] for f in expected] == [decode_path(BROKEN)]
    assert [
        (display_path(r.path), r.status, r.error, r.attempts, r.worker) for r in found.failed
    ] == [(f["path"], f["status"], f["error"], f["attempts"], f["worker"]) for f in expected]


def test_messages_are_summary_errors(counted: Counted) -> None:
    found = _read(counted.state)
    expected = as_json(counted.state, "--errors", "--top", "20")
    assert [groups.message_entry(m) for m in found.messages.messages[:20]] == expected["messages"]
    assert (found.messages.files, found.messages.sampled_lines, found.files_with_errors) == (
        expected["sampled"]["files"],
        expected["sampled"]["lines"],
        expected["sampled"]["files_with_error_lines"],
    )


def test_time_buckets_of_a_run_add_up_to_the_done_files(counted: Counted) -> None:
    found = _read(counted.state)
    totals = found.totals
    assert sum(found.timeline.files) == totals["done"] == 9
    assert sum(found.timeline.error_lines) == totals["error_lines"]
    assert found.timeline.buckets.unit == "minute"  # all counted within seconds
    assert found.first is not None and found.last is not None
    assert found.first <= found.last <= time.time()


@pytest.fixture
def local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """India's clock (UTC+5:30) in this process and the commands it starts: local hours are
    not UTC hours there."""
    monkeypatch.setenv("TZ", "IST-5:30")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def _spread(start: float, every: float, count: int) -> list[Finished]:
    """``count`` done files finished ``every`` seconds apart, file i with i % 4 error lines."""
    return [
        Finished(f"h{i % 3}/f{i}.log".encode(), start + i * every, lines=10, error_lines=i % 4)
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("every", "count", "unit"),
    [(61.0, 120, "minute"), (1800.0, 150, "hour"), (86400 / 5, 200, "day")],
)
def test_the_bucket_follows_the_time_range_and_each_file_is_in_its_own(
    tmp_path: Path, local_time: None, every: float, count: int, unit: str
) -> None:
    start = datetime.datetime(2026, 11, 20, 9, 10, 7).timestamp()  # local
    files = _spread(start, every, count)
    files.append(Finished(b"h0/bad.log", start + 30, "failed", error="corrupt gzip"))
    state = tmp_path / "state"
    write_ledger(state, tmp_path / "root", files)
    found = report.read(state)
    timeline = found.timeline
    assert (timeline.buckets.unit, timeline.buckets.size) == (unit, 1)
    assert (found.first, found.last) == (start, start + (count - 1) * every)
    assert sum(timeline.files) == count == found.totals["done"]
    assert sum(timeline.error_lines) == sum(i % 4 for i in range(count))
    starts = timeline.buckets.starts
    # Buckets start on the local clock's minutes, hours or midnights, one unit apart.
    for moment in map(datetime.datetime.fromtimestamp, starts):
        assert moment.second == 0
        assert unit == "minute" or moment.minute == 0
        assert unit != "day" or moment.hour == 0
    step = {"minute": 60, "hour": 3600, "day": 86400}[unit]
    assert all(b - a == step for a, b in itertools.pairwise(starts))
    expected = [0] * len(starts)
    for file in files[:-1]:
        expected[max(i for i, s in enumerate(starts) if s <= file.finished_at)] += 1
    assert timeline.files == expected
    if unit == "day":  # the days of summary --by day, done files only
        days = as_json(str(state), "--by", "day")["groups"]
        done = {g["key"]: g["done"] for g in days if g["done"]}
        assert done == {
            f"{datetime.datetime.fromtimestamp(s):%Y-%m-%d}": n
            for s, n in zip(starts, timeline.files, strict=True)
            if n
        }


def test_a_long_range_merges_days_into_at_most_report_bars_bars(tmp_path: Path) -> None:
    start = datetime.datetime(2023, 1, 1, 12).timestamp()
    files = _spread(start, 3 * 86400, 400)  # over three years
    state = tmp_path / "state"
    write_ledger(state, tmp_path / "root", files)
    timeline = report.read(state).timeline
    assert timeline.buckets.unit == "day" and timeline.buckets.size == 3
    assert len(timeline.buckets.starts) <= REPORT_BARS
    assert sum(timeline.files) == 400
    assert "per 3 days" in str(charts.time_series(
        timeline.buckets, [charts.Series("files", timeline.files, "#000")], "t", "none"
    ))  # fmt: skip


# ------------------------------------------------------------------------------ SVG helpers


def _svg(markup: str) -> Page:
    page = Page(str(markup))
    assert page.tags[0][0] == "svg"
    assert page.tags[0][1]["role"] == "img" and page.tags[0][1]["aria-label"]
    assert not re.search(r"\b(nan|inf)\b", str(markup), re.I)
    return page


def _rects(page: Page) -> list[dict[str, str | None]]:
    """The bars: not the legend's swatches."""
    return [attrs for tag, attrs in page.tags if tag == "rect" and attrs.get("class") != "swatch"]


def test_bar_labels_values_and_titles_are_escaped_text() -> None:
    label = '<script>alert(1)</script> "q" & <b>'
    markup = charts.horizontal_bars(
        [charts.Bar(label, 7, note="<i>n</i>", detail="a & b")], "t <u>", "lines <&>", "none"
    )
    page = _svg(markup)
    assert {tag for tag, _ in page.tags} <= {"svg", "title", "text", "line", "g", "rect", "tspan"}
    assert page.titles[1] == f"{label}: 7 lines <&>; a & b"
    assert "&lt;script&gt;" in markup and "&#34;q&#34; &amp;" in markup
    assert charts.clip(label, 30) in page.all_text and "<i>n</i>" in page.all_text
    assert "t <u>" in page.all_text and "lines <&>" in page.all_text
    assert page.tags[0][1]["aria-label"] == f"t <u>. The most: {label}, 7 lines <&>."


def test_empty_charts_say_so() -> None:
    bars = _svg(charts.horizontal_bars([], "Folders", "error lines", "Nothing yet."))
    assert "Nothing yet." in bars.all_text and not _rects(bars)
    series = _svg(
        charts.time_series(
            charts.Buckets("minute", []), [charts.Series("files", [], "#000")], "Time", "None yet."
        )
    )
    assert "None yet." in series.all_text and not _rects(series)


def test_one_bar_ends_at_its_value_on_the_scale_and_zero_bars_are_empty() -> None:
    one = _svg(charts.horizontal_bars([charts.Bar("only", 5)], "t", "u", "none"))
    (rect,) = _rects(one)
    assert one.ticks() == ["0", "2", "4", "6"]
    assert float(rect["width"] or 0) == (charts.WIDTH - 230 - 190) * 5 / 6
    assert "5" in one.all_text and "only" in one.all_text
    zeros = _svg(charts.horizontal_bars([charts.Bar("a", 0), charts.Bar("b", 0)], "t", "u", "-"))
    assert [float(r["width"] or 0) for r in _rects(zeros)] == [0.0, 0.0]
    assert zeros.ticks() == ["0", "1"]
    flat = _svg(
        charts.time_series(
            charts.Buckets("hour", [0.0, 3600.0]), [charts.Series("f", [0, 0], "#000")], "t", "-"
        )
    )
    assert not _rects(flat)


def test_huge_values_keep_short_axis_labels() -> None:
    huge = [charts.Bar("big", 10**15 + 7), charts.Bar("small", 3)]
    page = _svg(charts.horizontal_bars(huge, "t", "error lines", "-"))
    ticks = page.ticks()
    assert ticks[-1].endswith("T") and all(len(t) <= 6 for t in ticks)
    assert "1,000,000,000,000,007" in page.all_text  # the bar's own label is exact
    series = _svg(
        charts.time_series(
            charts.Buckets("minute", [0.0]), [charts.Series("f", [7 * 10**12], "#000")], "t", "-"
        )
    )
    assert series.ticks()[-1].endswith("T") and all(len(t) <= 6 for t in series.ticks())


@pytest.mark.parametrize("top", [0, 1, 3, 4, 5, 9, 10, 11, 99, 101, 2501, 7 * 10**9])
def test_ticks_are_round_evenly_spaced_and_cover_the_top(top: int) -> None:
    values = charts.ticks(top)
    assert values[0] == 0 and values[-1] >= max(top, 1) and len(values) <= 5
    steps = {b - a for a, b in itertools.pairwise(values)}
    assert len(steps) == 1 and str(steps.pop()).rstrip("0") in ("1", "2", "25", "5")


# ------------------------------------------------------------------------- the whole page


def _page(state: str, tmp_path: Path) -> str:
    out = tmp_path / "report.html"
    made = logdispatch("report", "--state", state, "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert made.stdout == "" and made.stderr == ""
    return out.read_text(encoding="utf-8")


def test_the_page_shows_the_summary_numbers_and_every_section(
    counted: Counted, tmp_path: Path
) -> None:
    html = _page(counted.state, tmp_path)
    page = Page(html)
    text = page.all_text
    totals = as_json(counted.state)["totals"]
    for key in ("files", "lines", "error_lines"):
        assert f"{totals[key]:,}" in text
    assert summary.rate_text(totals["error_lines"], totals["lines"]) in text
    assert "Error lines by top-level folder" in text and "per minute" in text
    assert [attrs["role"] for tag, attrs in page.tags if tag == "svg"] == ["img", "img"]
    assert not any(a.get("http-equiv") == "refresh" for _, a in page.tags)  # not live
    assert not any(tag in ("script", "img", "link", "iframe") for tag, _ in page.tags)
    broken = decode_path(BROKEN)
    reason = as_json(counted.state, "--failed")["files"][0]["error"]
    assert broken in text and printable(reason) in text
    hostile = display_path(test_summary_views.HOSTILE)  # newline and \xff escaped
    assert hostile in text
    assert "odd \\xff[red]: " in " ".join(page.titles)  # its folder, in the chart's hover text
    assert 10_000 < len(html.encode()) < 200_000
    stdout = logdispatch("report", "--state", counted.state, "--out", "-")
    assert stdout.returncode == 0 and stdout.stdout.count("<svg") == 2


def test_an_empty_ledger_gives_a_page_that_says_so(tmp_path: Path) -> None:
    Ledger(tmp_path / "state", tmp_path).close()
    page = Page(_page(str(tmp_path / "state"), tmp_path))
    empty = [attrs for _, attrs in page.tags if attrs.get("class") == "chart-empty"]
    assert len(empty) == 2 and report.NOTHING_YET in page.all_text  # both charts say so
    assert page.all_text.count("No file yet.") == 2  # both top lists
    assert "no file finished yet" in page.all_text and "No file failed or vanished" in page.all_text


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--state", "{tmp}/none", "--out", "{tmp}/r.html"], "no ledger in {tmp}/none"),
        (["--state", "{state}", "--out", "{tmp}/no/r.html"], "cannot write {tmp}/no/r.html"),
        (["--state", "{state}", "--out", "{tmp}"], "cannot write {tmp}: Is a directory"),
        (["--state", "{state}"], "--out FILE is required"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], error: str
) -> None:
    state = tmp_path / "state"
    Ledger(state, tmp_path).close()
    where = {"tmp": str(tmp_path), "state": str(state)}
    refused = logdispatch("report", *(a.format(**where) for a in args))
    assert refused.returncode == 2
    assert refused.stderr.startswith(f"logdispatch report: error: {error.format(**where)}")
    assert refused.stderr.count("\n") == 1 and refused.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state"]


def test_hostile_names_and_lines_are_text_everywhere(tmp_path: Path) -> None:
    root = tmp_path / "root"
    broot = os.fsencode(root)
    for name in HOSTILE_NAMES:
        path = os.path.join(broot, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"INFO fine\n" + HOSTILE_LINE + b"\n")
    failing = os.path.join(broot, b'gone/<img src=x onerror="alert(3)">.gz')
    os.makedirs(os.path.dirname(failing))
    with open(failing, "wb") as f:
        f.write(gzip.compress(b"ERROR x\n" * 100)[:-20])
    state = str(tmp_path / "state")
    run = logdispatch(
        "run", str(root), "--once", "--state", state, "--max-attempts", "1", "--settle", "0"
    )
    assert run.returncode == 1, run.stderr  # the cut gzip failed

    html = _page(state, tmp_path)
    page = Page(html)
    assert "<script" not in html.lower()
    assert not any(tag in ("script", "img", "b", "i") for tag, _ in page.tags)
    assert not any(name.startswith("on") for _, attrs in page.tags for name in attrs)
    text = page.all_text
    for name in (*HOSTILE_NAMES, failing.removeprefix(broot + b"/")):
        assert display_path(name) in text, name
    assert printable(line_text(HOSTILE_LINE)) in text  # the message's example
    assert "<script>alert(1)<: " in " ".join(page.titles)  # its folder's bar, in the chart


# ---------------------------------------------------------------------------- serve --http


def _get(port: int, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def _shape(document: Any) -> Any:
    """A JSON document's keys, all the way down."""
    if isinstance(document, dict):
        return {key: _shape(value) for key, value in document.items()}
    if isinstance(document, list):
        return [_shape(item) for item in document[:1]]
    return None


def _page_showing(port: int, text: str) -> Page | None:
    page = Page(_get(port, "/")[2].decode())
    return page if text in page.all_text else None


def _made(page: Page) -> str:
    """The page's "made" stamp, to the second."""
    return str(re.findall(r"made (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", page.all_text)[0])


def test_serve_http_serves_the_live_page_and_the_status_document(cluster: Cluster) -> None:
    (cluster.root / "web-01").mkdir()
    for i in range(4):
        (cluster.root / "web-01" / f"{i}.log").write_bytes(b"ok\nERROR no\n" * (i + 1))
    port = free_port()
    master = cluster.serve("--http", f":{port}", "-v")  # :PORT is loopback
    wait_for(lambda: f"report at http://127.0.0.1:{port}/" in master.output)
    cluster.work()
    wait_for(lambda: cluster.summary()["totals"].get("done") == 4)

    code, headers, body = _get(port, "/")
    assert code == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    first = Page(body.decode())
    assert any(a.get("http-equiv") == "refresh" and a.get("content") for _, a in first.tags)
    assert "web-01" in first.all_text and "db-01" not in first.all_text

    (cluster.root / "db-01").mkdir()
    (cluster.root / "db-01" / "x.log").write_bytes(b"FATAL a\n" * 50)
    wait_for(lambda: cluster.summary()["totals"].get("done") == 5)
    # The first page is served until it is as old as its refresh interval (5 s), then rebuilt.
    later = wait_for(lambda: _page_showing(port, "db-01"), interval=0.5)
    assert "db-01: 50 error lines" in " ".join(later.titles)  # the new folder's bar
    assert "The most: db-01, 50 error lines" in later.all_text

    code, headers, body = _get(port, "/status.json")
    assert code == 200 and headers["Content-Type"] == "application/json"
    served = json.loads(body)
    status = logdispatch(
        "status", "--json", "--address", cluster.address, "--authkey-file", str(cluster.key_file)
    )
    assert status.returncode == 0, status.stderr
    command = json.loads(status.stdout)
    assert _shape(served) == _shape(command)
    assert served["master"] | {"uptime_seconds": 0} == command["master"] | {"uptime_seconds": 0}
    assert served["since_start"] == command["since_start"]
    assert served["since_start"]["done"] == 5

    assert _get(port, "/other")[0] == 404
    assert _get(port, "/status.json/")[0] == 404
    code, headers, body = _get(port, "/", "HEAD")
    assert code == 200 and body == b"" and int(headers["Content-Length"]) > 1000
    code, headers, _ = _get(port, "/", "POST")
    assert code == 405 and headers["Allow"] == "GET, HEAD"
    assert re.search(
        r"logdispatch\.dispatcher\.views\.web DEBUG 127\.0\.0\.1 \"GET / HTTP/1\.1\" 200",
        master.output,
    )
    master.signal(signal.SIGTERM)  # the page's server stops with the master
    assert master.wait() == 0


def test_the_live_page_is_built_once_per_refresh_interval_for_every_viewer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, root = tmp_path / "state", tmp_path / "root"
    an_hour_ago = time.time() - 3600
    write_ledger(state, root, [Finished(b"web-01/a.log", an_hour_ago, lines=10, error_lines=3)])
    reads: list[float] = []
    read = report.read

    def slow_read(state_dir: Path) -> report.Report:
        reads.append(time.monotonic())
        time.sleep(0.2)  # long enough that the requests below queue for the build
        return read(state_dir)

    monkeypatch.setattr(report, "read", slow_read)
    server = ReportServer(("127.0.0.1", 0), state, dict, refresh_floor=2)
    thread = threading.Thread(target=server.serve_forever, name="test-http", daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        methods = ["GET", "GET", "HEAD", "GET"]
        with ThreadPoolExecutor(len(methods)) as pool:
            answers = list(pool.map(lambda method: _get(port, "/", method), methods))
        answered = time.monotonic()  # the page was ready before
        assert len(reads) == 1  # the requests that waited got the page just built
        bodies = {body for _, _, body in answers if body}
        assert len(bodies) == 1 and {code for code, _, _ in answers} == {200}
        (body,) = bodies
        assert {int(headers["Content-Length"]) for _, headers, _ in answers} == {len(body)}
        first = Page(body.decode())
        (refresh,) = [a["content"] for _, a in first.tags if a.get("http-equiv") == "refresh"]
        assert refresh == "2"  # the floor: the build takes 0.2 s, three times that is less

        # A new folder within the interval: the same page, to the byte, GET or HEAD.
        write_ledger(state, root, [Finished(b"db-01/x.log", time.time(), error_lines=50)])
        assert _get(port, "/")[2] == body
        assert _get(port, "/", "HEAD")[1]["Content-Length"] == str(len(body))
        assert len(reads) == 1

        time.sleep(max(0.0, answered + int(refresh) - time.monotonic()))
        later = Page(_get(port, "/")[2].decode())
        assert len(reads) == 2
        assert "db-01" not in first.all_text and "db-01: 50 error lines" in " ".join(later.titles)
        assert _made(later) > _made(first)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_serve_http_on_an_address_in_use_is_a_clear_error(cluster: Cluster) -> None:
    with port_in_use() as port:
        # Refused at start, before the ledger is opened (tests/test_preflight.py).
        master = cluster.serve_refused("--http", f"127.0.0.1:{port}")
    assert master.returncode == 2
    assert f"logdispatch serve: error: cannot serve the report on 127.0.0.1:{port}" in (
        master.stderr
    )


def test_http_is_configurable_like_every_option(tmp_path: Path) -> None:
    shown = logdispatch("config", "--json", "serve", "/srv", env={"LOGDISPATCH_HTTP": ":8080"})
    assert shown.returncode in (0, 1), shown.stderr  # 1: it would not start (no key)
    assert json.loads(shown.stdout)["options"]["http"] == {
        "value": ":8080",
        "source": "env",
        "variable": "LOGDISPATCH_HTTP",
    }
    config = tmp_path / "logdispatch.toml"
    config.write_text('[report]\nout = "/tmp/page.html"\n')
    shown = logdispatch("config", "--json", "report", "--config", str(config))
    assert json.loads(shown.stdout)["options"]["out"]["value"] == "/tmp/page.html"
