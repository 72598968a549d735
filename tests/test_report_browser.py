"""The report in a real browser (Debian's chromium, driven by Playwright): it loads without an
error, its charts are drawn (the named counters' too), hostile names are text, and it prints."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import logdispatch
from ledgers import HOSTILE_LINE, HOSTILE_NAMES, busy_day, write_ledger
from playwright.sync_api import Browser, Locator, Page, sync_playwright

from dispatcher.views.messages import line_text
from workers.common import display_path, printable

CHROMIUM = shutil.which("chromium")


@pytest.fixture
def browser() -> Iterator[Browser]:
    if CHROMIUM is None:
        missing = "chromium is not installed: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    # The system's browser: Playwright downloads none.
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page_file(tmp_path: Path) -> Path:
    """The report of a ledger of 300 files from six hosts over ten hours, some failed or
    vanished, and the hostile names."""
    state = tmp_path / "state"
    write_ledger(state, tmp_path / "root", busy_day(time.time() - 11 * 3600))
    out = tmp_path / "report.html"
    made = logdispatch("report", "--state", str(state), "--out", str(out))
    assert made.returncode == 0, made.stderr
    return out


def _drawn(chart: Locator) -> int:
    """How many of a chart's bars have a size on screen."""
    bars = chart.locator("rect:not(.swatch)")
    sizes = [bars.nth(i).bounding_box() for i in range(bars.count())]
    return sum(1 for box in sizes if box and box["width"] > 0 and box["height"] > 0)


def _check_charts(page: Page) -> None:
    charts = page.locator("svg[role=img]")
    assert charts.count() == 2
    for i in range(2):
        chart = charts.nth(i)
        box = chart.bounding_box()
        assert box is not None and box["width"] > 500 and box["height"] > 200
        assert chart.get_attribute("aria-label")
        assert _drawn(chart) >= 5


def test_the_report_loads_draws_its_charts_and_prints(browser: Browser, page_file: Path) -> None:
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    problems: list[str] = []
    dialogs: list[str] = []
    page.on(
        "console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(page_file.as_uri())

    screen = page_file.with_name("report.png")
    page.screenshot(path=screen, full_page=True)
    assert screen.stat().st_size > 50_000
    _check_charts(page)
    assert page.locator("section").count() == 7
    # No element came from the data: the names and lines are text.
    assert page.locator("script, img, iframe, object, embed").count() == 0
    folder = page.locator("svg text", has_text="<script>alert(1)<")
    assert folder.count() == 1 and folder.is_visible()
    failed = page.locator("#failed td", has_text="<script>x</script> & more")
    assert failed.count() == 1 and failed.is_visible()
    shown = page.locator("body").inner_text()
    for name in HOSTILE_NAMES:  # the highest error rates: at the top of their list
        assert page.locator("#by-rate td.path", has_text=display_path(name)).is_visible(), name
    assert printable(line_text(HOSTILE_LINE)) in shown
    assert dialogs == [] and problems == []

    page.emulate_media(media="print")
    _check_charts(page)
    printed = page_file.with_name("report-print.png")
    page.screenshot(path=printed, full_page=True)
    assert printed.stat().st_size > 50_000
    pdf = page.pdf(format="A4")
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) >= 2
    assert dialogs == [] and problems == []


@pytest.fixture
def counters_page(tmp_path: Path) -> Path:
    """The report of logs counted by `run --once` with two named counters, one of them added
    after a first run: some files were counted without it."""
    root, state = tmp_path / "root", tmp_path / "state"
    for i, folder in enumerate(("api", "db", "web")):
        (root / folder).mkdir(parents=True)
        (root / folder / "app.log").write_bytes(
            b"".join(
                b"%d WARN took %dms\nERROR %d\nINFO ok\n" % (n, 600 * n, n)
                for n in range(50 * i + 9)
            )
        )
    once = ["run", str(root), "--once", "--settle", "0", "--state", str(state)]
    first = logdispatch(*once, "--count", "warn=WARN")
    assert first.returncode == 0, first.stderr
    (root / "db" / "later.log").write_bytes(b"WARN took 99999ms\n" * 40)
    second = logdispatch(*once, "--count", "warn=WARN", "--count", "slow=took [0-9]{4,}ms")
    assert second.returncode == 0, second.stderr
    out = tmp_path / "report.html"
    made = logdispatch("report", "--state", str(state), "--out", str(out))
    assert made.returncode == 0, made.stderr
    return out


def test_the_counters_chart_and_the_folders_columns_are_drawn(
    browser: Browser, counters_page: Path
) -> None:
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    problems: list[str] = []
    page.on(
        "console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.goto(counters_page.as_uri())
    page.screenshot(path=counters_page.with_name("report.png"), full_page=True)

    charts = page.locator("svg[role=img]")
    assert charts.count() == 3
    chart = page.locator("#counters svg[role=img]")
    box = chart.bounding_box()
    assert box is not None and box["width"] > 500 and box["height"] > 80
    assert chart.is_visible() and _drawn(chart) == 2  # warn and slow
    warn, slow = (chart.locator("g.bar").nth(i).bounding_box() for i in range(2))
    assert warn is not None and slow is not None and warn["y"] < slow["y"]  # in their order
    assert chart.locator("text", has_text="3 files without").is_visible()  # slow's

    table = page.locator("#folders table.folders")
    assert table.is_visible()
    header = [cell.strip() for cell in table.locator("th").all_inner_texts()]
    assert header[-2:] == ["warn", "slow"]
    db = table.locator("tr", has_text="db").locator("td.counter").all_inner_texts()
    assert db[1] == "40"  # slow: later.log's lines only, the rest counted before it
    assert problems == []

    page.emulate_media(media="print")
    assert chart.is_visible() and _drawn(chart) == 2
    assert problems == []
