"""The Python client's stream parser against the tests' WHATWG parser, fed in arbitrary pieces."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hopcast._client import Event, EventStreamParser
from hopcast._core.sse import encode_event, encode_heartbeat, encode_preamble
from tests.support.rounds import rounds
from tests.support.sse import parse, pieces, streams

FAST = rounds(400)


def fed(stream: bytes, cuts: list[int]) -> tuple[list[Event], EventStreamParser]:
    parser = EventStreamParser()
    events: list[Event] = []
    for piece in pieces(stream, cuts):
        events += parser.feed(piece)
    return events, parser


def as_oracle(events: list[Event]) -> tuple[tuple[str, str, str], ...]:
    return tuple((e.event, e.data, e.id) for e in events)


@FAST
@given(st.one_of(streams, st.binary(max_size=200)), st.lists(st.integers(0, 400), max_size=8))
def test_the_same_as_a_browser_however_the_stream_is_cut(stream: bytes, cuts: list[int]) -> None:
    expected = parse(stream)
    events, parser = fed(stream, cuts)
    assert as_oracle(events) == tuple((e.type, e.data, e.last_event_id) for e in expected.events)
    assert parser.last_event_id == expected.last_event_id
    assert parser.retry_ms == expected.retry


@FAST
@given(st.lists(st.integers(0, 10_000)), st.lists(st.integers(0, 2_000), max_size=8))
def test_what_the_gateway_sends_comes_out_whole(offsets: list[int], cuts: list[int]) -> None:
    stream = encode_preamble(2500, None)
    for n in offsets:
        stream += encode_event(n, "e" if n % 2 else None, f"é {n}\r\nline\r".encode())
        stream += encode_heartbeat(n + 1) if n % 3 == 0 else b""
    events, parser = fed(stream, cuts)
    assert [(e.id, e.event, e.data) for e in events] == [
        (str(n), "e" if n % 2 else "message", f"é {n}\nline\n") for n in offsets
    ]
    assert parser.retry_ms == 2500
    if offsets:
        assert parser.last_event_id == str(offsets[-1] + 1 if offsets[-1] % 3 == 0 else offsets[-1])


def test_a_block_without_an_id_keeps_the_resume_point() -> None:
    parser = EventStreamParser("41")
    assert parser.feed(b"data: x\n\n") == [Event("41", "message", "x")]
    assert parser.last_event_id == "41"
