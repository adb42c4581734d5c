"""SSE encoding, checked against the WHATWG event stream interpretation (``tests.support.sse``)."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hopcast._core.errors import InvalidEventName, InvalidInput
from hopcast._core.sse import (
    MISSED,
    TOKEN_EXPIRED,
    UNDELIVERABLE,
    check_event_name,
    encode_event,
    encode_gateway_event,
    encode_heartbeat,
    encode_message,
    encode_preamble,
    encode_retry,
)
from tests.support.rounds import rounds
from tests.support.sse import Event, Stream, lines, parse

FAST = rounds(200)

# Pieces that tempt an encoder into a wrong line split or an injected field.
_TRICKY_TEXT = [
    "\r",
    "\n",
    "\r\n",
    "\n\r",
    "\r\r\n",
    "\n\n",
    "",
    " ",
    "data:",
    "data: x",
    "data",
    "id: 99",
    "id",
    "event: evil",
    "retry: 1",
    ":",
    ": comment",
    "\ufeff",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x85",
    "\u2028",
    "\u2029",
    "é",
    "日本",
    "😀",
]
data_texts = st.lists(
    st.one_of(st.sampled_from(_TRICKY_TEXT), st.text(max_size=8)), max_size=12
).map("".join)

_TRICKY_NAMES = [" ", "  x", "x ", ":", ":x", "a:b", "data", "id: 5", "retry", "message", "é", "😀"]
event_names = st.one_of(
    st.sampled_from(_TRICKY_NAMES),
    st.text(
        st.characters(codec="utf-8", exclude_characters="\r\n\x00"),
        min_size=1,
        max_size=40,
    ),
).filter(lambda name: not name.startswith("hopcast-"))
offsets = st.integers(min_value=0, max_value=2**63 - 1)


def as_received(text: str) -> str:
    """What a client sees of ``text``: SSE ends a line at CRLF, LF or CR alike."""
    return "\n".join(re.split(r"\r\n|\r|\n", text))


def expected_event(offset: int, name: str | None, text: str) -> Event:
    return Event(name if name is not None else "message", as_received(text), str(offset))


# encode_event


def test_encode_event_bytes() -> None:
    assert encode_event(1042, "order-paid", b'{"order": 42}') == (
        b'id: 1042\nevent: order-paid\ndata: {"order": 42}\n\n'
    )
    assert (
        encode_event(5, None, b"a\r\nb\rc\nd") == b"id: 5\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
    )


def test_encode_event_empty_and_line_break_only_data() -> None:
    assert parse(encode_event(1, None, b"")).events == (Event("message", "", "1"),)
    assert parse(encode_event(2, None, b"\r\n")).events == (Event("message", "\n", "2"),)
    assert parse(encode_event(3, None, b"\n\n\r")).events == (Event("message", "\n\n\n", "3"),)


@FAST
@given(offsets, st.none() | event_names, data_texts)
def test_encode_event_round_trips(offset: int, name: str | None, text: str) -> None:
    stream = parse(encode_event(offset, name, text.encode()))
    assert stream == Stream((expected_event(offset, name, text),), str(offset), None)


@FAST
@given(
    st.integers(min_value=0, max_value=60_000),
    st.lists(st.tuples(offsets, st.none() | event_names, data_texts), max_size=8),
)
def test_concatenated_frames_parse_to_the_same_events(
    retry: int, items: list[tuple[int, str | None, str]]
) -> None:
    wire = encode_preamble(retry, None) + b"".join(
        encode_event(offset, name, text.encode()) for offset, name, text in items
    )
    stream = parse(wire)
    assert stream.events == tuple(expected_event(*item) for item in items)
    assert stream.last_event_id == (str(items[-1][0]) if items else "")
    assert stream.retry == retry


# check_event_name: no field can be injected through a name


name_chars = st.one_of(st.characters(), st.sampled_from(["\r", "\n", "\x00", "\ud800", "\udfff"]))


@FAST
@given(st.one_of(st.text(name_chars, max_size=20), st.text(max_size=300)), offsets)
def test_a_name_either_is_refused_or_travels_intact(name: str, offset: int) -> None:
    try:
        check_event_name(name)
    except InvalidEventName:
        return
    stream = parse(encode_event(offset, name, b"payload"))
    assert stream == Stream((Event(name, "payload", str(offset)),), str(offset), None)


@FAST
@given(
    st.text(max_size=20),
    st.sampled_from(["\r", "\n", "\r\n", "\x00"]),
    st.sampled_from(["", "data: evil", "id: 999", "retry: 1", "event: other", "\n"]),
)
def test_names_with_line_breaks_or_null_are_refused(head: str, bad: str, tail: str) -> None:
    with pytest.raises(InvalidEventName):
        check_event_name(head + bad + tail)
    with pytest.raises(InvalidEventName):
        check_event_name(head + bad + tail, allow_reserved=True)


@pytest.mark.parametrize("name", ["", "x" * 256, "\ud800", "a\udfffb"])
def test_names_that_cannot_travel_are_refused(name: str) -> None:
    with pytest.raises(InvalidEventName):
        check_event_name(name, allow_reserved=True)


def test_reserved_prefix() -> None:
    for name in (MISSED, UNDELIVERABLE, TOKEN_EXPIRED, "hopcast-", "hopcast-anything"):
        with pytest.raises(InvalidEventName, match="reserved"):
            check_event_name(name)
        assert check_event_name(name, allow_reserved=True) == name
    assert check_event_name("hopcast") == "hopcast"
    assert check_event_name("Hopcast-x") == "Hopcast-x"
    assert check_event_name("x" * 255) == "x" * 255
    assert issubclass(InvalidEventName, InvalidInput)


# encode_message: what travels, and the stand-in for what cannot


def undeliverable(stream: Stream) -> dict[str, object]:
    (event,) = stream.events
    assert event.type == UNDELIVERABLE
    payload: dict[str, object] = json.loads(event.data)
    return payload


@pytest.mark.parametrize(
    ("body", "event", "max_size", "expected"),
    [
        (b"\xff", None, 100, {"reason": "utf-8", "size": 1, "type": None}),
        (b"ok \xc3", "paid", 100, {"reason": "utf-8", "size": 4, "type": "paid"}),
        (b"\xed\xa0\x80", None, 100, {"reason": "utf-8", "size": 3, "type": None}),  # surrogate
        (b"\xc0\xaf", None, 100, {"reason": "utf-8", "size": 2, "type": None}),  # overlong
        (b"x" * 11, None, 10, {"reason": "size", "size": 11, "type": None}),
        (b"\xff" * 11, "paid", 10, {"reason": "size", "size": 11, "type": "paid"}),
        (b"x", "a\nb", 10, {"reason": "type", "size": 1, "type": "a\nb"}),
        (b"x", "a\rdata: evil", 10, {"reason": "type", "size": 1, "type": "a\rdata: evil"}),
        (b"x", "a\x00", 10, {"reason": "type", "size": 1, "type": "a\x00"}),
        (b"x", "", 10, {"reason": "type", "size": 1, "type": ""}),
        (b"x", "t" * 256, 10, {"reason": "type", "size": 1, "type": "t" * 256}),
        (b"x", "a\ud800", 10, {"reason": "type", "size": 1, "type": "a\ud800"}),
        (b"x", MISSED, 10, {"reason": "reserved-type", "size": 1, "type": MISSED}),
        (b"x", "hopcast-x", 10, {"reason": "reserved-type", "size": 1, "type": "hopcast-x"}),
    ],
)
def test_undeliverable_messages(
    body: bytes, event: str | None, max_size: int, expected: dict[str, object]
) -> None:
    stream = parse(encode_message(77, event, body, max_size))
    assert undeliverable(stream) == expected
    assert stream.events[0].last_event_id == "77"
    assert stream.last_event_id == "77"


def test_deliverable_messages() -> None:
    assert parse(encode_message(3, None, b"", 0)).events == (Event("message", "", "3"),)
    assert parse(encode_message(4, "t", b"", 10)).events == (Event("t", "", "4"),)
    assert parse(encode_message(5, None, b"x" * 10, 10)).events == (
        Event("message", "x" * 10, "5"),
    )
    body = "naïve 日本 😀\r\nline".encode()
    assert parse(encode_message(6, "é", body, len(body))).events == (
        Event("é", "naïve 日本 😀\nline", "6"),
    )


def _reason(body: bytes, event: str | None, max_size: int) -> str | None:
    if len(body) > max_size:
        return "size"
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return "utf-8"
    if event is None:
        return None
    try:
        check_event_name(event)
    except InvalidEventName:
        return "reserved-type" if event.startswith("hopcast-") else "type"
    return None


any_names = st.one_of(
    st.none(),
    event_names,
    st.sampled_from(["", "a\nb", "x\r", "\x00", MISSED, "hopcast-", "\ud800", "t" * 256]),
    st.text(max_size=10),
)
bodies = st.one_of(data_texts.map(str.encode), st.binary(max_size=40))


@FAST
@given(offsets, any_names, bodies, st.integers(min_value=0, max_value=60))
def test_every_message_becomes_exactly_one_event_with_its_own_id(
    offset: int, name: str | None, body: bytes, max_size: int
) -> None:
    stream = parse(encode_message(offset, name, body, max_size))
    assert len(stream.events) == 1
    assert stream.last_event_id == str(offset)
    assert stream.retry is None
    reason = _reason(body, name, max_size)
    if reason is None:
        assert stream.events == (expected_event(offset, name, body.decode()),)
    else:
        assert undeliverable(stream) == {"reason": reason, "size": len(body), "type": name}


# The gateway's own events, heartbeats and the preamble


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


@FAST
@given(
    offsets,
    st.sampled_from([MISSED, UNDELIVERABLE, TOKEN_EXPIRED]),
    st.dictionaries(st.text(), json_values, max_size=4),
)
def test_gateway_event_carries_its_json_payload(
    offset: int, name: str, payload: dict[str, object]
) -> None:
    (event,) = parse(encode_gateway_event(offset, name, payload)).events
    assert (event.type, event.last_event_id) == (name, str(offset))
    assert json.loads(event.data) == payload


def test_missed_event_bytes() -> None:
    frame = encode_gateway_event(9, MISSED, {"reason": "retention", "requested": 3, "first": 8})
    assert frame == (
        b"id: 9\nevent: hopcast-missed\n"
        b'data: {"reason": "retention", "requested": 3, "first": 8}\n\n'
    )


@FAST
@given(offsets, st.lists(offsets, min_size=1, max_size=4))
def test_heartbeat_moves_last_event_id_and_dispatches_nothing(first: int, beats: list[int]) -> None:
    wire = encode_event(first, "t", b"x") + b"".join(encode_heartbeat(b) for b in beats)
    stream = parse(wire)
    assert stream.events == (Event("t", "x", str(first)),)
    assert stream.last_event_id == str(beats[-1])
    # An event after a heartbeat is untouched by it.
    after = parse(wire + encode_event(first, None, b"y"))
    assert after.events[1:] == (Event("message", "y", str(first)),)


def test_heartbeat_without_an_offset_is_a_comment() -> None:
    assert parse(encode_heartbeat(None)) == Stream((), "", None)
    assert parse(encode_event(4, None, b"x") + encode_heartbeat(None)).last_event_id == "4"
    assert parse(encode_heartbeat(12)) == Stream((), "12", None)


@FAST
@given(st.integers(min_value=0, max_value=10**9), st.none() | offsets)
def test_preamble_sets_retry_and_dispatches_nothing(retry: int, offset: int | None) -> None:
    preamble = encode_preamble(retry, offset)
    expected_id = "" if offset is None else str(offset)
    assert parse(preamble) == Stream((), expected_id, retry)
    assert any(line.startswith(":") for line in lines(preamble.decode()))
    # The preamble leaves no state behind: the first event is exactly itself.
    stream = parse(preamble + encode_event(1, None, b"x"))
    assert stream.events == (Event("message", "x", "1"),)


def test_retry_hint() -> None:
    assert parse(encode_retry(2500)) == Stream((), "", 2500)
    assert parse(encode_event(8, None, b"x") + encode_retry(10)) == Stream(
        (Event("message", "x", "8"),), "8", 10
    )
