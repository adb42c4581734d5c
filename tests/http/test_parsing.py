"""The parsers of a resume's client input (``Last-Event-ID``, ``lastEventId``, ``?since=``):
any text gives a value or `InvalidOffset`, never another error."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from pamqp import encode

from hopcast._core.errors import InvalidOffset
from hopcast._http.params import EPOCH, MAX_OFFSET, parse_offset, parse_since
from tests.support.rounds import rounds

FAST = rounds(300)

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
"""Every code point, lone surrogates included: a header decodes as latin-1, a path may not."""

OFFSET_LIKE = st.from_regex(r"\A[ \t\n\x0b\x1c\u00a0\u3000-]{0,3}[0-9]{0,22}[ \t\r\n+_.eE-]{0,3}\Z")
DIGITS = st.sampled_from("0123456789\u0660\u0661\u00b2\u00b3\uff10\uff15\u09e9")
"""ASCII digits and others that str.isdigit() takes: Arabic-Indic, superscript, full-width."""

# Last-Event-ID / lastEventId


@FAST
@given(st.one_of(ANY_TEXT, OFFSET_LIKE, st.text(DIGITS, max_size=25)))
@example("--5")
@example("-")
@example(" -1 ")
@example("1_000")
@example("٣")
@example(str(MAX_OFFSET + 1))
@example("0" * 20)
def test_parse_offset_gives_an_offset_or_invalid_input(text: str) -> None:
    try:
        offset = parse_offset(text, "Last-Event-ID")
    except InvalidOffset as exc:
        assert "Last-Event-ID" in str(exc)
        return
    assert type(offset) is int
    assert -1 <= offset <= MAX_OFFSET
    stripped = text.strip()
    assert re.fullmatch(r"-?[0-9]{1,20}", stripped), stripped  # only ASCII digits get in
    assert int(stripped) == offset
    assert parse_offset(str(offset), "Last-Event-ID") == offset


@FAST
@given(st.integers(-1, MAX_OFFSET), st.sampled_from(["", " ", "\t", " \t "]))
def test_every_offset_round_trips(offset: int, space: str) -> None:
    assert parse_offset(f"{space}{offset}{space}", "lastEventId") == offset


@FAST
@given(st.one_of(st.integers(max_value=-2), st.integers(min_value=MAX_OFFSET + 1)))
def test_offsets_out_of_range_are_refused(offset: int) -> None:
    with pytest.raises(InvalidOffset):
        parse_offset(str(offset), "lastEventId")


# ?since=


@FAST
@given(st.one_of(ANY_TEXT, st.datetimes().map(datetime.isoformat)))
@example("first")
@example("First")
@example("0000-01-01")
@example("2024-02-30")
@example("2024-01-01T00:00:00 05:00")
@example("9999-12-31T23:59:59-23:59")
@example("0001-01-01T00:00:00+23:59")
def test_parse_since_gives_a_start_or_invalid_input(text: str) -> None:
    try:
        since = parse_since(text)
    except InvalidOffset as exc:
        assert "since" in str(exc)
        return
    if since == "first":
        assert text == "first"
        return
    assert isinstance(since, datetime)
    assert since.tzinfo is not None  # a naive time is taken as UTC, never as local time
    assert since >= EPOCH
    encode.timestamp(since)  # x-stream-offset carries unsigned seconds, else the consume dies


@FAST
@given(
    st.datetimes(timezones=st.just(UTC) | st.none()),
    st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m))),
)
def test_times_round_trip(when: datetime, zone: timezone) -> None:
    if when.tzinfo is None:
        assert parse_since(when.isoformat()) == max(when.replace(tzinfo=UTC), EPOCH)
        return
    # Shown in any zone, it is the same instant (astimezone may leave the datetime range).
    try:
        shown = when.astimezone(zone)
    except OverflowError:
        return
    expected = max(when, EPOCH)  # nothing in a stream is older than 1970
    assert parse_since(shown.isoformat()) == expected
    # An unencoded '+' in a URL's query arrives as a space.
    assert parse_since(shown.isoformat().replace("+", " ")) == expected
