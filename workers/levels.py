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
    "authpriv", "ftp", "ntp", "security", "console", "local[0-7]",
)  # fmt: skip


def level_pattern(
    words: tuple[str, ...], values: tuple[str, ...], severities: tuple[str, ...]
) -> bytes:
    """The pattern of one level: its words, its values after a level key (``level=warn``,
    ``level="warn"``, ``"level":"warn"``, ``"level": "warn"``), its syslog severities after a
    facility (``daemon.warning``). Every alternative stands as a whole word."""
    keys = "|".join(LEVEL_KEYS)
    value = "(?i:" + "|".join(values) + ")"
    layouts = [
        r"\b(?:" + "|".join(words) + r")\b",
        rf'\b(?:{keys})="?{value}\b',
        rf'"(?:{keys})"[ \t]*:[ \t]*"{value}"',
    ]
    if severities:
        facilities = "|".join(SYSLOG_FACILITIES)
        layouts.append(rf"\b(?:{facilities})\.(?i:" + "|".join(severities) + r")\b")
    return "|".join(layouts).encode("ascii")


# The level counters, lowest first: pass them as ErrorMatcher(counters=LEVELS).
LEVELS: tuple[tuple[str, bytes], ...] = tuple(
    (name, level_pattern(words, values, severities))
    for name, words, values, severities in LEVEL_TABLE
)
