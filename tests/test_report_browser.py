"""The report in a real browser (Debian's chromium, driven by Playwright): it loads without an
error, its charts are drawn, hostile names are text, and it prints."""

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
