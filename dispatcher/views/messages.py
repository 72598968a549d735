"""Error messages as patterns: sample error lines with their variable parts masked, tallied.

Workers keep the first few error lines of each file as samples (bytes, possibly cut short);
``mask`` turns lines that differ only in timestamps, numbers, ids, addresses or quoted values
into one message, and ``tally`` counts the messages over many files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from workers.scans import SAMPLE_BYTES

# Each pattern that can begins with a character class, so that the search skips quickly over
# the bytes that cannot start a match; its guards come after that byte.
_HEX = rb"[0-9a-fA-F]"
_H16 = _HEX + rb"{1,4}"
# A token may not touch a word. A mask stands for the digits it replaced ("<n>" touches what
# "12" touched), so masking again finds the same edges.
_NO_WORD_BEFORE = rb"(?<![0-9A-Za-z>].)"  # after the token's first byte
_NO_WORD_AFTER = rb"(?![0-9A-Za-z<])"
_CLOCK = rb"\d\d?:\d\d(?::\d\d)?(?:[.,]\d+)?"
_MONTH = rb"(?<=Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"  # after 3 letters
# ISO and nginx dates with their clock, Apache's stamp, and a bare clock (with its seconds:
# "01:56" is as often a host and a port); syslog's stamp is masked before them.
_TIME = (
    rb"\d(?<!\d\d)(?:\d{3}[-/]\d\d[-/]\d\d(?:[T ]" + _CLOCK + rb"(?:Z|[+-]\d\d:?\d\d)?)?"
    rb"|\d/[A-Z][a-z]{2}" + _MONTH + rb"/\d{4}:" + _CLOCK + rb"|\d?:\d\d:\d\d(?:[.,]\d+)?)(?!\d)"
)  # fmt: skip
_SYSLOG_TIME = rb"[ADFJMNOS][a-z]{2}" + _MONTH + rb" [ \d]\d " + _CLOCK + rb"(?!\d)"
_UUID = (
    _HEX + _NO_WORD_BEFORE + _HEX + rb"{7}(?:-" + _HEX + rb"{4}){3}-" + _HEX + rb"{12}"
    + _NO_WORD_AFTER
)  # fmt: skip
_IPV4_CORE = rb"\d{1,3}(?:\.\d{1,3}){3}"
_IPV4 = rb"\d(?<![0-9.]\d)\d{0,2}(?:\.\d{1,3}){3}(?![0-9]|\.\d)"
# Eight groups, or fewer around one "::" (maybe ending in an IPv4 address, "::ffff:10.0.0.1");
# "std::map" and "10:00:00" are not addresses.
_IPV6_TAIL = (
    rb"(?:(?:" + _H16 + rb":){0,5}" + _IPV4_CORE + rb"|" + _H16 + rb"(?::" + _H16 + rb"){0,6})?"
)
_IPV6 = (
    rb"[0-9a-fA-F:](?<![0-9A-Za-z>:.].)(?:(?<=:):" + _IPV6_TAIL + rb"|(?<=[0-9a-fA-F])" + _HEX
    + rb"{0,3}(?:(?::" + _H16 + rb"){7}|(?::" + _H16 + rb"){0,6}::" + _IPV6_TAIL + rb"))"
    rb"(?![0-9A-Za-z<:]|\.[\d<])"
)  # fmt: skip
# 0x-prefixed, or a run of hex digits with both a digit and a letter (a trace id, a hash):
# plain words such as "cafe" or "added" stay.
_HEX_ID = (
    _HEX + _NO_WORD_BEFORE + rb"(?:(?<=0)[xX]" + _HEX + rb"+|(?:(?<=\d)(?=" + _HEX
    + rb"*[a-fA-F])|(?<=[a-fA-F])(?=" + _HEX + rb"*\d))" + _HEX + rb"{3,})" + _NO_WORD_AFTER
)  # fmt: skip
_NUMBER = rb"\d+(?:\.\d+)?"
# A minus is a sign only where no word goes on before it: "db-01" is "db-<n>".
_SIGNED = rb"-(?<![0-9A-Za-z>-].)<n>"
# An apostrophe inside a word ("can't") opens no quote.
_QUOTED = rb"\"[^\"]*\"|'" + _NO_WORD_BEFORE + rb"[^']*'" + _NO_WORD_AFTER


@dataclass(frozen=True, slots=True)
class _Pass:
    """A pattern and its mask, tried only on lines holding one of ``needs`` (text, how many)."""

    pattern: re.Pattern[bytes]
    mask: bytes
    needs: tuple[tuple[bytes, int], ...] = ()

    def apply(self, line: bytes) -> bytes:
        if self.needs and all(line.count(text) < many for text, many in self.needs):
            return line
        return self.pattern.sub(self.mask, line)


# In this order: a timestamp is one mask, not six numbers; an address or an id is one mask,
# not the numbers in it. The cheap tests of ``needs`` skip most passes on most lines.
_PASSES = tuple(
    _Pass(re.compile(pattern), replacement, tuple(needs))
    for pattern, replacement, *needs in (
        (_SYSLOG_TIME, b"<time>", (b":", 1)),
        (_TIME, b"<time>"),
        (_UUID, b"<uuid>", (b"-", 4)),
        (_IPV6, b"<ip>", (b"::", 1), (b":", 7)),
        (_IPV4, b"<ip>", (b".", 3)),
        (_HEX_ID, b"<hex>"),
        (_NUMBER, b"<n>"),
        (_SIGNED, b"<n>", (b"-<n>", 1)),
    )
)
_QUOTED_RE = re.compile(_QUOTED)
ELLIPSIS = "\u2026".encode()
# Every pattern treats all digits alike but "0" (of "0x"): lines that differ only in which
# digits they hold have one message, found once. Lines that repeat with other numbers are
# what logs are made of; the cache is emptied when it is this full.
_ANY_DIGIT = bytes.maketrans(b"23456789", b"11111111")
MASK_CACHE = 100_000


def mask(line: bytes) -> bytes:
    """``line`` with its variable parts replaced by ``<time>``, ``<uuid>``, ``<ip>``, ``<hex>``,
    ``<n>`` and quoted values by ``"<str>"``; masking a masked line changes nothing.

    In a JSON object line the quotes are its structure, not values: they stay, and only what
    is inside them is masked.
    """
    for step in _PASSES:
        line = step.apply(line)
    if (b'"' in line or b"'" in line) and not line.lstrip().startswith(b"{"):
        line = _QUOTED_RE.sub(_quoted_mask, line)
    return line


def _quoted_mask(match: re.Match[bytes]) -> bytes:
    quote = match[0][:1]
    return quote + b"<str>" + quote


def message_of(sample: bytes) -> bytes:
    """The masked message of a sample; a sample cut at SAMPLE_BYTES loses its last, maybe
    partial, word (so lines cut at different places still meet) and ends in an ellipsis."""
    if len(sample) >= SAMPLE_BYTES:
        words = sample.rsplit(None, 1)
        if sample[-1:].isspace() or len(words) < 2:
            sample = sample.rstrip() + ELLIPSIS
        else:
            sample = words[0] + ELLIPSIS
    return mask(sample)


def line_text(line: bytes) -> str:
    """A sample line or message as text: undecodable bytes become ``\\xNN``."""
    return line.decode("utf-8", "backslashreplace")


@dataclass(slots=True)
class Message:
    """One masked message: how many sampled lines and files have it, and its first example."""

    text: bytes
    sampled_lines: int
    files: int
    example: bytes
    path: bytes


@dataclass(frozen=True, slots=True)
class Tally:
    messages: list[Message]  # most sampled lines first, then most files, then by text
    files: int  # files with samples
    sampled_lines: int


def tally(samples: Iterable[tuple[bytes, bytes | None]]) -> Tally:
    """Messages of the samples of ``(path, samples joined by "\\n")`` pairs (none: skipped)."""
    found: dict[bytes, Message] = {}
    masked: dict[bytes, bytes] = {}  # line with its digits as "0" and "1" -> its message
    cut_in: dict[bytes, set[int]] = {}  # the files of each message from a cut sample
    files = sampled_lines = 0
    for path, joined in samples:
        if not joined:
            continue
        lines = joined.split(b"\n")
        files += 1
        sampled_lines += len(lines)
        in_file: set[bytes] = set()
        for line in lines:
            shape = line.translate(_ANY_DIGIT)
            text = masked.get(shape)
            if text is None:
                if len(masked) >= MASK_CACHE:
                    masked.clear()
                text = masked[shape] = message_of(shape)
            message = found.get(text)
            if message is None:
                found[text] = message = Message(text, 0, 0, line, path)
            message.sampled_lines += 1
            if text not in in_file:
                in_file.add(text)
                message.files += 1
                if text.endswith(ELLIPSIS):
                    cut_in.setdefault(text, set()).add(files)
    _merge_cut(found, cut_in)
    messages = sorted(found.values(), key=lambda m: (-m.sampled_lines, -m.files, m.text))
    return Tally(messages, files, sampled_lines)


def _merge_cut(found: dict[bytes, Message], cut_in: dict[bytes, set[int]]) -> None:
    """Fold each message from a cut sample into a shorter one it extends by whole words.

    Variable parts of other lengths move the cut: the same line cut further on is the same
    message, as far as the shorter one can tell.
    """
    kept = kept_stem = b""
    for text in sorted(cut_in, key=_stem):
        stem = _stem(text)
        if not kept or not stem.startswith(kept_stem):
            kept, kept_stem = text, stem
        elif stem[len(kept_stem) : len(kept_stem) + 1] == b" ":
            into, merged = found[kept], found.pop(text)
            into.sampled_lines += merged.sampled_lines
            cut_in[kept] |= cut_in[text]
            into.files = len(cut_in[kept])


def _stem(text: bytes) -> bytes:
    return text[: -len(ELLIPSIS)]
