"""The level counters (workers.levels.LEVELS): each layout of each level counted on a real
file, with both engines, and lines that must count for no level."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.counting import count_path
from workers.levels import LEVEL_TABLE, LEVELS
from workers.matching import ErrorMatcher, check_counters

NAMES = [name for name, *_ in LEVEL_TABLE]
MATCHERS = {
    engine: ErrorMatcher(counters=LEVELS, engine=engine) for engine in ("python", "hyperscan")
}
# Per level: its upper-case word, its value after a level key, its syslog severity (or None).
SPELLINGS = {
    "trace": ("TRACE", "trace", None),
    "debug": ("DEBUG", "debug", "debug"),
    "info": ("INFO", "info", "info"),
    "warn": ("WARN", "warn", "warning"),
    "error": ("ERROR", "error", "err"),
    "fatal": ("FATAL", "fatal", "crit"),
}
LAYOUTS = {
    "word": "2026-11-20 10:00:01 {word} app: started",
    "bracketed": "[{word}] app: started",
    "word with colon": "app {word}: started",
    "level= lower": "ts=2026-11-20T10:00:01Z level={value} msg=started",
    "level= upper": "ts=2026-11-20T10:00:01Z level={upper} msg=started",
    "level= quoted": 'time="10:00:01" level="{value}" msg="started"',
    "json": '{{"ts":"2026-11-20T10:00:01Z","level":"{value}","msg":"started"}}',
    "json with spaces": '{{"ts": "2026-11-20T10:00:01Z", "level": "{value}", "msg": "x"}}',
    "json levelname": '{{"levelname": "{upper}", "message": "started"}}',
    "syslog": "Nov 20 10:00:01 host app[42]: daemon.{severity} started",
}


def _count(tmp_path: Path, line: str, engine: str) -> dict[str, int]:
    path = tmp_path / "app.log"
    path.write_bytes(line.encode() + b"\r\n")
    counts = count_path(str(path), MATCHERS[engine])
    return dict(zip(MATCHERS[engine].counter_names, counts.counts, strict=True))


def test_the_levels_are_valid_counters_lowest_first() -> None:
    assert check_counters(LEVELS) == LEVELS
    assert [name for name, _ in LEVELS] == NAMES == list(SPELLINGS)


@pytest.mark.parametrize("engine", ["python", "hyperscan"])
@pytest.mark.parametrize(
    ("level", "layout"),
    [
        (level, layout)
        for level in NAMES
        for layout in sorted(LAYOUTS)
        if layout != "syslog" or SPELLINGS[level][2] is not None  # syslog has no trace
    ],
)
def test_each_layout_counts_for_its_level_only(
    tmp_path: Path, level: str, layout: str, engine: str
) -> None:
    word, value, severity = SPELLINGS[level]
    line = LAYOUTS[layout].format(word=word, value=value, upper=value.upper(), severity=severity)
    counts = _count(tmp_path, line, engine)
    assert counts == {name: int(name == level) for name in NAMES}, line


@pytest.mark.parametrize(
    ("line", "level"),
    [
        ("2026-11-20 WARNING disk almost full", "warn"),
        ("kern.emerg: kernel panic", "fatal"),
        ("auth.alert: root login", "fatal"),
        ("local3.notice: rotated", "info"),
        ("user.error: old spelling", "error"),
        ("CRITICAL payments.main: lost pool", "fatal"),
        ("ERR connection reset", "error"),
        ("severity=Warning msg=x", "warn"),
        ('{"severity":"CRIT"}', "fatal"),
        ("WARN at the start of the line", "warn"),
        ("level=info at the start", "info"),
        ('"level":\t"debug"', "debug"),
    ],
)
def test_other_spellings(tmp_path: Path, line: str, level: str) -> None:
    assert _count(tmp_path, line, "hyperscan") == {name: int(name == level) for name in NAMES}


@pytest.mark.parametrize(
    "line",
    [
        "failed to warn the user about an error",  # lower-case words in a message
        "information about the debugger and its tracer",
        "WARNINGS=0 ERRORS=0 INFORMATION TRACEBACK",  # upper-case words that are not levels
        "level=warnings mylevel=warn xlevel=error",  # not a level value, not a level key
        '{"message": "warn", "note": "fatal"}',  # JSON members that are not the level
        "user.errors daemon.warnings mail.information",  # not a syslog severity
        "MY_WARN ERROR_CODE=5 INFO2 _DEBUG",  # words inside longer words
        "XWARN at the start, 9INFO",
        "",
    ],
)
def test_lines_that_count_for_no_level(tmp_path: Path, line: str) -> None:
    for engine in ("python", "hyperscan"):
        assert _count(tmp_path, line, engine) == dict.fromkeys(NAMES, 0), line


def test_overlapping_levels_on_one_line_count_once_each(tmp_path: Path) -> None:
    line = "[WARN] level=error retrying after ERROR ERROR, daemon.debug"
    assert _count(tmp_path, line, "python") == {
        "trace": 0, "debug": 1, "info": 0, "warn": 1, "error": 1, "fatal": 0,
    }  # fmt: skip
