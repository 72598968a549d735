"""Masking error lines into messages, and tallying them: examples and properties."""

from __future__ import annotations

import datetime
import ipaddress
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dispatcher.views.messages import ELLIPSIS, line_text, mask, message_of, tally
from workers.scans import SAMPLE_BYTES

PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Words of a log line that are never variable (no digits, no quotes, no month names), and the
# punctuation found between them.
WORDS = st.sampled_from(
    [
        "ERROR", "FATAL", "db", "query", "failed", "after", "ms", "user", "id=", "from", "at",
        "(", ")", "[", "]", "-", "/", ",", ":", "=", "cafe", "deadbeef", "payments.api:",
        "host", "port", "x", "_", "#", "*",
    ]
)  # fmt: skip


def line_around(variable: str) -> st.SearchStrategy[tuple[str, str]]:
    """Random words before and after a variable part, separated from it by spaces."""
    text = st.lists(WORDS, max_size=6).map(" ".join)
    return st.tuples(text, text)


def variants(kind: str) -> st.SearchStrategy[str]:
    """Values of one kind of variable part, as logs print them."""
    if kind == "number":
        return st.one_of(
            st.integers(-(10**12), 10**12).map(str),
            st.floats(0, 1e6, allow_nan=False).map(lambda f: f"{f:.3f}"),
        )
    if kind == "hex":
        return st.uuids().map(lambda u: u.hex[:16]).filter(
            lambda h: any(c.isdigit() for c in h) and any(c.isalpha() for c in h)
        ) | st.integers(0, 2**64).map(hex)
    if kind == "uuid":
        return st.uuids().map(str)
    if kind == "ipv4":
        return st.ip_addresses(v=4).map(str)
    if kind == "ipv6":
        return st.ip_addresses(v=6).map(str)
    if kind == "time":
        moments = st.datetimes(datetime.datetime(1990, 1, 1), datetime.datetime(2100, 1, 1))
        return st.one_of(
            moments.map(lambda d: d.strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]),
            moments.map(lambda d: d.isoformat(timespec="milliseconds") + "Z"),
            moments.map(lambda d: f"{d:%b} {d.day:2} {d:%H:%M:%S}"),  # syslog
            moments.map(lambda d: d.strftime("%Y/%m/%d %H:%M:%S")),
            moments.map(lambda d: d.strftime("%H:%M:%S")),
        )
    quote = {"double-quoted": '"', "single-quoted": "'"}[kind]
    inside = st.text(st.characters(blacklist_characters="\"'\n", codec="utf-8"), max_size=30)
    return inside.map(lambda t: f"{quote}{t}{quote}")


LOGGY = st.text(st.sampled_from("0123456789abcdefxX:.-/ '\"{}[]()TZ+,_=NovJanfoo<>\\"), max_size=80)


KINDS = ["number", "hex", "uuid", "ipv4", "ipv6", "time", "double-quoted", "single-quoted"]


@PROPERTY
@given(
    st.sampled_from(KINDS).flatmap(lambda k: st.tuples(variants(k), variants(k), line_around(k)))
)
def test_lines_differing_only_in_a_variable_part_make_one_message(
    case: tuple[str, str, tuple[str, str]],
) -> None:
    first, second, (before, after) = case
    one = f"{before} {first} {after}".encode()
    other = f"{before} {second} {after}".encode()
    assert mask(one) == mask(other)


DIGITS_AS_ONE = bytes.maketrans(b"23456789", b"11111111")


@PROPERTY
@given(st.binary(max_size=300))
def test_masking_is_idempotent_on_any_bytes(line: bytes) -> None:
    assert mask(mask(line)) == mask(line)


@PROPERTY
@given(st.one_of(st.binary(max_size=SAMPLE_BYTES + 10), LOGGY.map(str.encode)))
def test_which_digits_a_line_holds_but_zero_does_not_change_its_message(line: bytes) -> None:
    """What lets tally() mask each shape of line once."""
    assert message_of(line.translate(DIGITS_AS_ONE)) == message_of(line)


@PROPERTY
@given(LOGGY)
def test_masking_is_idempotent_on_log_like_text(text: str) -> None:
    line = text.encode()
    assert mask(mask(line)) == mask(line)


@PROPERTY
@given(st.text(st.characters(whitelist_categories=["L", "Zs"], codec="utf-8"), max_size=60))
def test_text_without_digits_quotes_or_colons_is_its_own_message(text: str) -> None:
    """Only variable parts are masked: words are what tells two messages apart."""
    line = text.encode()
    assert mask(line) == line


def test_different_messages_stay_apart() -> None:
    lines = [
        b"2026-11-20 14:00:50,880 ERROR payments.db: query failed after 12 ms",
        b"2026-11-20 14:00:51,001 ERROR payments.db: connection refused by 10.0.0.7",
        b"2026-11-20 14:00:52,113 FATAL payments.db: query failed after 12 ms",
    ]
    assert len({mask(line) for line in lines}) == 3


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        (
            b"Nov 20 14:02:08 db-01 postgres[6097]: ERROR:  unique constraint \"ledger_key\"",
            b'<time> db-<n> postgres[<n>]: ERROR:  unique constraint "<str>"',
        ),
        (
            b"2026-11-20T13:03:18.873Z ERROR trace 81688c41bdb4e8e2 req "
            b"0f8fad5b-d9cb-469f-a165-70867728950e from 2001:db8::7 via 10.1.2.3 code 0x1F",
            b"<time> ERROR trace <hex> req <uuid> from <ip> via <ip> code <hex>",
        ),
        (
            b"job refund_53127 failed: KeyError('currency')",
            b"job refund_<n> failed: KeyError('<str>')",
        ),
        (b"can't open 'a.cfg' at std::map 10:00:00", b"can't open '<str>' at std::map <time>"),
        (
            b'{"level": "ERROR", "id": 42, "msg": "disk full"}',
            b'{"level": "ERROR", "id": <n>, "msg": "disk full"}',
        ),
        (b"cafe deadbeef added 12ms \xff\xfe", b"cafe deadbeef added <n>ms \xff\xfe"),
    ],
)  # fmt: skip
def test_mask_examples(line: bytes, masked: bytes) -> None:
    assert mask(line) == masked


def test_a_cut_sample_drops_its_partial_last_word() -> None:
    cut = b"ERROR request 1 failed: " + b"word " * 35 + b"w"
    assert len(cut) == SAMPLE_BYTES
    assert message_of(cut) == b"ERROR request <n> failed: " + b"word " * 34 + b"word" + ELLIPSIS
    assert message_of(b"ERROR short 5") == b"ERROR short <n>"


def test_lines_cut_in_different_places_make_one_message() -> None:
    """A longer number earlier moves the cut; the message cut sooner stands for both."""
    line = b"ERROR request %d failed: " + b"word " * 60

    def cut(text: bytes) -> bytes:
        return text[:SAMPLE_BYTES]

    result = tally(
        [
            (b"a.log", cut(line % 1) + b"\n" + cut(line % 123456789)),
            (b"b.log", cut(line % 7)),
            (b"c.log", b"ERROR request 5 failed: word word"),  # whole: another message
            (b"d.log", cut(b"ERROR request 5 failed: words " + b"x" * 200)),
        ]
    )
    assert [(m.sampled_lines, m.files) for m in result.messages] == [(3, 2), (1, 1), (1, 1)]
    assert result.messages[0].text == message_of(cut(line % 123456789))
    assert result.messages[0].example == cut(line % 123456789)


def test_tally_counts_sampled_lines_and_files_and_keeps_the_first_example() -> None:
    result = tally(
        [
            (b"a.log", b"ERROR disk 1 full\nERROR disk 2 full\nFATAL gone"),
            (b"b\xff.log", b"ERROR disk 3 full"),
            (b"c.log", b"FATAL gone\nERROR x"),
        ]
    )
    assert result.files == 3
    assert result.sampled_lines == 6
    assert [(m.text, m.sampled_lines, m.files) for m in result.messages] == [
        (b"ERROR disk <n> full", 3, 2),
        (b"FATAL gone", 2, 2),
        (b"ERROR x", 1, 1),
    ]
    disk = result.messages[0]
    assert (disk.example, disk.path) == (b"ERROR disk 1 full", b"a.log")


def test_line_text_escapes_undecodable_bytes() -> None:
    assert line_text(b"caf\xc3\xa9 \xff C:\\x") == "caf\u00e9 \\xff C:\\x"


def test_uuids_and_addresses_from_the_standard_library_are_masked() -> None:
    for value in (str(uuid.uuid4()), str(ipaddress.IPv6Address("::ffff:10.0.0.1"))):
        assert mask(f"ERROR {value} x".encode()) in (b"ERROR <uuid> x", b"ERROR <ip> x")
