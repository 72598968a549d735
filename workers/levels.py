"""``LEVELS``: ready-made named counters for the log levels, from trace to fatal.

Each level's pattern matches the common ways a line states its level (docs/counting.md,
"Named counters"): an upper-case word (``WARN``, ``[WARN]``), a ``level=`` pair, a JSON
``"level"`` member, or a syslog ``facility.severity``. Lower-case words count only after
such a key, so a message that says "failed to warn the user" is no warning. A level's
pattern mixes layouts, so it is a general regex: it sees the first 1 MiB of a line.
"""

from __future__ import annotations

# (name, upper-case words, values after a level key, syslog severities): what each level
# matches. Values and severities are matched in any case, words in upper case only.
LEVEL_TABLE: tuple[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    ("trace", ("TRACE",), ("trace",), ()),
    ("debug", ("DEBUG",), ("debug",), ("debug",)),
    ("info", ("INFO", "NOTICE"), ("info", "notice"), ("info", "notice")),
    ("warn", ("WARN", "WARNING"), ("warn", "warning"), ("warn", "warning")),
    ("error", ("ERROR", "ERR"), ("error", "err"), ("err", "error")),
    (
        "fatal",
        ("FATAL", "CRITICAL", "CRIT", "EMERG", "ALERT", "PANIC"),
        ("fatal", "critical", "crit", "emerg", "emergency", "alert", "panic"),
        ("emerg", "alert", "crit", "panic"),
    ),
)
# The keys a ``key=value`` pair or a JSON member states a level with.
LEVEL_KEYS = ("level", "levelname", "severity")
# Syslog's facility names, as in ``daemon.err``.
SYSLOG_FACILITIES = (
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron",
    "authpriv", "ftp", "ntp", "security", "console", *(f"local{n}" for n in range(8)),
)  # fmt: skip


def _word(word: str) -> str:
    """``\\bWORD\\b`` written to begin with the word's first byte (see level_pattern)."""
    return f"{word[0]}(?<![A-Za-z0-9_]{word[0]}){word[1:]}\\b"


def level_pattern(
    words: tuple[str, ...], values: tuple[str, ...], severities: tuple[str, ...]
) -> bytes:
    """The pattern of one level: its words, its values after a level key (``level=warn``,
    ``level="warn"``, ``"level":"warn"``, ``"level": "warn"``), its syslog severities after a
    facility (``daemon.warning``). Every alternative stands as a whole word.

    Each alternative begins with a literal byte (a word's first letter, ``=``, ``:`` or ``.``)
    and looks behind for the rest, so that ``re`` skips straight to the bytes that can begin
    a match; a leading ``\\b`` would make it try every offset of every line.
    """
    value = "(?i:" + "|".join(values) + ")"
    after_equals = "|".join(f"(?<=\\b{key}=)" for key in LEVEL_KEYS)
    after_colon = "|".join(f'(?<="{key}":)' for key in LEVEL_KEYS)
    layouts = [
        *(_word(word) for word in words),
        f'=(?:{after_equals})"?{value}\\b',
        f':(?:{after_colon})[ \\t]*"{value}"',
    ]
    if severities:
        after_dot = "|".join(f"(?<=\\b{facility}\\.)" for facility in SYSLOG_FACILITIES)
        layouts.append(f"\\.(?:{after_dot})(?i:" + "|".join(severities) + ")\\b")
    return "|".join(layouts).encode("ascii")


# The level counters, lowest first: pass them as ErrorMatcher(counters=LEVELS).
LEVELS: tuple[tuple[str, bytes], ...] = tuple(
    (name, level_pattern(words, values, severities))
    for name, words, values, severities in LEVEL_TABLE
)
