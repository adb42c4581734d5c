"""The tests' event-stream parser: the WHATWG examples, and the same reading however it is fed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tests.support.rounds import rounds
from tests.support.sse import Event, EventStream, Stream, lines, parse, pieces, streams

# The examples of the WHATWG specification, read whole.


def test_spec_parser_joins_data_lines() -> None:
    stream = parse(b"data: YHOO\ndata: +2\ndata: 10\n\n")
    assert stream == Stream((Event("message", "YHOO\n+2\n10", ""),), "", None)


def test_spec_parser_ids_comments_and_unfinished_event() -> None:
    stream = parse(
        b": test stream\n\ndata: first event\nid: 1\n\n"
        b"data:second event\nid\n\ndata:  third event\n"
    )
    assert stream.events == (
        Event("message", "first event", "1"),
        Event("message", "second event", ""),
    )
    assert stream.last_event_id == ""


def test_spec_parser_empty_data_lines() -> None:
    stream = parse(b"data\n\ndata\ndata\n\ndata:")
    assert stream.events == (Event("message", "", ""), Event("message", "\n", ""))


def test_spec_parser_space_after_colon_is_optional() -> None:
    assert parse(b"data:test\n\n") == parse(b"data: test\n\n")
    assert parse(b"data:  test\n\n").events == (Event("message", " test", ""),)


def test_spec_parser_line_ends_and_bom() -> None:
    assert lines("a\r\nb\nc\rd\n\re") == ["a", "b", "c", "d", ""]
    assert lines("a\u2028b\x85c\n") == ["a\u2028b\x85c"]
    crlf = parse(b"\xef\xbb\xbfid: 3\r\ndata: x\r\rdata: y\n\n")
    assert crlf.events == (Event("message", "x", "3"), Event("message", "y", "3"))
    # Only one BOM is dropped; a second one is part of the field name, so the line is ignored.
    assert parse(b"\xef\xbb\xbf\xef\xbb\xbfdata: x\n\n").events == ()


def test_spec_parser_id_with_null_and_bad_retry_are_ignored() -> None:
    stream = parse(b"id: 4\n\nid: 5\x006\nretry: 12a\nretry: -1\nretry:\ndata: x\n\n")
    assert stream == Stream((Event("message", "x", "4"),), "4", None)
    assert parse(b"retry: 0012\n\n").retry == 12


def test_spec_parser_event_type_resets_after_each_block() -> None:
    stream = parse(b"event: a\n\ndata: 1\n\nevent: b\ndata: 2\n\ndata: 3\n\n")
    assert [(e.type, e.data) for e in stream.events] == [
        ("message", "1"),
        ("b", "2"),
        ("message", "3"),
    ]


# Fed as bytes arrive


@rounds(400)
@given(st.one_of(streams, st.binary(max_size=200)), st.lists(st.integers(0, 400), max_size=8))
def test_a_stream_cut_anywhere_reads_as_the_whole(stream: bytes, cuts: list[int]) -> None:
    whole = parse(stream)
    reader = EventStream()
    events = [event for piece in pieces(stream, cuts) for event in reader.feed(piece)]
    assert Stream(tuple(events), reader.last_event_id, reader.retry) == whole


def test_a_crlf_cut_in_two_ends_one_line() -> None:
    reader = EventStream()
    assert reader.feed(b"data: x\r") == []
    assert reader.feed(b"\ndata: y\r") == []  # the LF is the CRLF's, not a blank line
    assert reader.feed(b"\n\r\n") == [Event("message", "x\ny", "")]


def test_a_character_cut_byte_by_byte_arrives_whole() -> None:
    reader = EventStream()
    stream = "\ufeffid: é\ndata: 日本 😀\n\n".encode()
    events = [event for i in range(len(stream)) for event in reader.feed(stream[i : i + 1])]
    assert events == [Event("message", "日本 😀", "é")]


def test_a_reconnect_drops_the_unfinished_block_and_keeps_the_resume_point() -> None:
    reader = EventStream("3")
    assert reader.feed(b"retry: 500\n\nid: 4\ndata: a\n\nid: 5\ndata: cut") == [
        Event("message", "a", "4")
    ]
    reader.reconnect()
    assert reader.last_event_id == "4"  # what EventSource sends as Last-Event-ID
    # a new response, with a BOM of its own; a block without id keeps the resume point
    assert reader.feed(b"\xef\xbb\xbfretry: 700\ndata: b\n\n") == [Event("message", "b", "4")]
    assert (reader.retry, reader.retries) == (700, [500, 700])
