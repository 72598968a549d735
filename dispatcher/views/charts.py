"""The report's SVG charts: horizontal bars, and counts over time in panels on one time axis.

Python works out the geometry; Jinja2 templates with autoescaping write the SVG, as they write
the page: labels are folder and file names, untrusted text.
"""

from __future__ import annotations

import datetime
import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from markupsafe import Markup

WIDTH = 960  # viewBox units; the page scales the chart to its column
_FONT = 13
# Horizontal bars: room for a label, the bars, and the value after the longest bar.
_LABEL_WIDTH = 230
_VALUE_WIDTH = 190
_ROW = 24
_LABEL_CHARS = 30
# Time series: the y axis labels on the left, each panel's height and the gap between panels.
_AXIS_WIDTH = 64
_PANEL = 130
_PANEL_GAP = 46
_TIME_TICKS = 8
_WIDEST_BAR = 40
# Tick spacings of the time axis in buckets, the smallest that keeps at most _TIME_TICKS ticks.
_TICK_STEPS = {
    "minute": (1, 2, 5, 10, 15, 30, 60, 120, 180, 360),
    "hour": (1, 2, 3, 6, 12, 24, 48, 72, 168, 336),
    "day": (1, 2, 7, 14, 28, 56, 91, 182, 364),
}
_BUCKET_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
# Ticks of a week or more fall on Mondays: the epoch was a Thursday.
_MONDAY = 4 * 86400


@dataclass(frozen=True)
class Bar:
    """One bar: ``note`` follows the value after the bar; ``detail`` is more hover text."""

    label: str
    value: int
    note: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Buckets:
    """Equal steps of time: ``size`` minutes, hours or days (``unit``) from each of ``starts``."""

    unit: str
    starts: Sequence[float]  # Unix time at which each bucket starts
    size: int = 1

    @property
    def name(self) -> str:
        return self.unit if self.size == 1 else f"{self.size} {self.unit}s"


@dataclass(frozen=True)
class Series:
    """Counts per bucket, drawn as one panel; ``colour`` is a CSS colour."""

    name: str
    values: Sequence[int]
    colour: str


@functools.cache
def environment() -> jinja2.Environment:
    """The Jinja2 environment of the report and its charts: everything escaped unless Markup."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("dispatcher.views", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["number"] = lambda n: "-" if n is None else f"{n:,}"
    env.filters["compact"] = compact
    return env


def compact(value: float) -> str:
    """A count short enough for an axis: 950, 2.5k, 12.3M, 4G."""
    for size, suffix in ((10**12, "T"), (10**9, "G"), (10**6, "M"), (10**3, "k")):
        if abs(value) >= size:
            scaled = value / size
            text = f"{scaled:,.1f}" if abs(scaled) < 100 else f"{scaled:,.0f}"
            return text.removesuffix(".0") + suffix
    return f"{value:g}"


def ticks(top: int, most: int = 5) -> list[int]:
    """Round values from 0 to at least ``top``, at most ``most`` of them, whole numbers."""
    top = max(top, 1)
    step = 1
    while math.ceil(top / step) + 1 > most:
        step = _next_step(step)
    return list(range(0, math.ceil(top / step) * step + 1, step))


def _next_step(step: int) -> int:
    """1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500..."""
    digits = 10 ** (len(str(step)) - 1)
    steps = (int(m * digits) for m in (2, 2.5, 5, 10) if m * digits == int(m * digits))
    return next(s for s in steps if s > step)  # 10 * digits always is


def clip(text: str, chars: int) -> str:
    """``text`` cut to ``chars`` characters, its end replaced by an ellipsis."""
    return text if len(text) <= chars else text[: chars - 1] + "\u2026"


def horizontal_bars(
    bars: Sequence[Bar], title: str, unit: str, empty: str, colour: str | None = None
) -> Markup:
    """Bars from the top down in the order given, each labelled with its value; a scale below.
    Without ``colour`` (a CSS colour for every bar) they are red, the first darker: the bars
    come most first."""
    values = ticks(max((bar.value for bar in bars), default=0))
    plot = WIDTH - _LABEL_WIDTH - _VALUE_WIDTH
    top = 34
    rows = [
        {
            "label": clip(bar.label, _LABEL_CHARS),
            "value": f"{bar.value:,}",
            "note": bar.note,
            "title": f"{bar.label}: {bar.value:,} {unit}"
            + (f"; {bar.detail}" if bar.detail else ""),
            "y": top + i * _ROW,
            "width": round(plot * bar.value / values[-1], 2),
        }
        for i, bar in enumerate(bars)
    ]
    bottom = top + max(len(bars), 1) * _ROW
    return _render(
        "bars.svg.j2",
        title=title,
        label=_aria(title, max(bars, key=lambda bar: bar.value), unit)
        if bars
        else f"{title}: {empty}",
        empty=empty if not bars else None,
        rows=rows,
        scale=[{"x": _LABEL_WIDTH + plot * v / values[-1], "text": compact(v)} for v in values],
        left=_LABEL_WIDTH,
        plot=plot,
        top=top,
        bottom=bottom,
        unit=unit,
        height=bottom + 44,
        row=_ROW,
        font=_FONT,
        colour=colour,
    )


def _aria(title: str, most: Bar, unit: str) -> str:
    return f"{title}. The most: {most.label}, {most.value:,} {unit}."


def time_series(buckets: Buckets, series: Sequence[Series], title: str, empty: str) -> Markup:
    """One panel per series, one above the other, on the same time axis; a bar per bucket."""
    count = len(buckets.starts)
    plot = WIDTH - _AXIS_WIDTH - 16
    width = plot / max(count, 1)
    # A few buckets make slim bars in wide slots, not blocks.
    bar_width = min(max(width - (1 if width > 3 else 0), 0.5), _WIDEST_BAR)
    inset = (width - bar_width) / 2
    panels = []
    top = 62
    for one in series:
        scale = ticks(max(one.values, default=0), most=4)
        bars = [
            {
                "x": round(_AXIS_WIDTH + i * width + inset, 2),
                "height": round(_PANEL * value / scale[-1], 2),
                "title": f"{_bucket_text(buckets, start)}: {value:,} {one.name}",
            }
            for i, (start, value) in enumerate(zip(buckets.starts, one.values, strict=True))
            if value
        ]
        panels.append(
            {
                "name": f"{one.name} per {buckets.name}",
                "total": sum(one.values),
                "colour": one.colour,
                "top": top,
                "bars": bars,
                "scale": [
                    {"y": round(top + _PANEL - _PANEL * v / scale[-1], 2), "text": compact(v)}
                    for v in scale
                ],
            }
        )
        top += _PANEL + _PANEL_GAP
    axis = top - _PANEL_GAP + 8
    return _render(
        "series.svg.j2",
        title=title,
        label=f"{title}: {empty}" if not count else _series_label(title, buckets, series),
        empty=empty if not count else None,
        panels=panels,
        bar_width=round(bar_width, 2),
        time_ticks=[
            {"x": round(_AXIS_WIDTH + (i + 0.5) * width, 2), "lines": lines}
            for i, lines in _time_ticks(buckets)
        ],
        left=_AXIS_WIDTH,
        plot=plot,
        panel_height=_PANEL,
        axis=axis,
        height=axis + 44,
        font=_FONT,
    )


def _series_label(title: str, buckets: Buckets, series: Sequence[Series]) -> str:
    first, last = buckets.starts[0], buckets.starts[-1]
    totals = ", ".join(f"{sum(one.values):,} {one.name}" for one in series)
    return (
        f"{title}, per {buckets.name}, from {_bucket_text(buckets, first)} to "
        f"{_bucket_text(buckets, last)}: {totals}."
    )


def _local(timestamp: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).astimezone()


def _bucket_text(buckets: Buckets, start: float) -> str:
    """When a bucket is, for its hover text: "2026-11-20 14:05", "2026-11-20 14:00-15:00"."""
    moment = _local(start)
    if buckets.unit == "minute" and buckets.size == 1:
        return f"{moment:%Y-%m-%d %H:%M}"
    if buckets.unit in ("minute", "hour"):
        end = _local(start + buckets.size * _BUCKET_SECONDS[buckets.unit])
        return f"{moment:%Y-%m-%d %H:%M}\u2013{end:%H:%M}"
    if buckets.size == 1:
        return f"{moment:%Y-%m-%d}"
    last_day = moment.date() + datetime.timedelta(days=buckets.size - 1)
    return f"{moment:%Y-%m-%d}\u2013{last_day:%Y-%m-%d}"


def _time_ticks(buckets: Buckets) -> list[tuple[int, list[str]]]:
    """(bucket index, label lines) of the ticks: round local times, the date where it changes."""
    count = len(buckets.starts)
    seconds = _BUCKET_SECONDS[buckets.unit]
    steps = [s for s in _TICK_STEPS[buckets.unit] if s % buckets.size == 0] or [buckets.size]
    step = next((s for s in steps if count * buckets.size / s <= _TIME_TICKS), None)
    if step is None:  # longer than the steps go: every so many buckets
        step = math.ceil(count / _TIME_TICKS) * buckets.size
    # Merged buckets start wherever the first did: their ticks go by count, not by the clock.
    by_clock = buckets.size == 1
    anchor = _MONDAY if buckets.unit == "day" and step % 7 == 0 else 0
    found: list[tuple[int, list[str]]] = []
    previous: datetime.datetime | None = None
    for i, start in enumerate(buckets.starts):
        moment = _local(start)
        offset = moment.utcoffset() or datetime.timedelta()
        wall = round(start + offset.total_seconds()) - anchor
        if (wall // seconds if by_clock else i * buckets.size) % step:
            continue
        if buckets.unit == "day":
            lines = [f"{moment:%b} {moment.day}"]
            if previous is None or previous.year != moment.year:
                lines.append(f"{moment.year}")
        else:
            lines = [f"{moment:%H:%M}"]
            if previous is None or previous.date() != moment.date():
                lines.append(f"{moment:%b} {moment.day}")
        found.append((i, lines))
        previous = moment
    return found


def _render(template: str, **context: Any) -> Markup:
    return Markup(environment().get_template(template).render(width=WIDTH, **context))
