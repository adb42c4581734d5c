"""The WHATWG HTML "event stream interpretation" algorithm, as a test oracle.

It parses a complete byte stream the way a browser's ``EventSource`` does and
reports what it would dispatch, step by step after
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation

>>> parse(b"retry: 500\\n\\nid: 7\\nevent: paid\\ndata: a\\ndata: b\\n\\n")
Stream(events=(Event(type='paid', data='a\\nb', last_event_id='7'),), last_event_id='7', retry=500)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LINE = re.compile(r"([^\r\n]*)(?:\r\n|\n|\r)")
_ASCII_DIGITS = frozenset("0123456789")


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched ``MessageEvent``: its ``type``, ``data`` and ``lastEventId``."""

    type: str
    data: str
    last_event_id: str


@dataclass(frozen=True, slots=True)
class Stream:
    """What a client holds after the whole stream: the events, its last event ID, its retry."""

    events: tuple[Event, ...]
    last_event_id: str
    retry: int | None


def lines(text: str) -> list[str]:
    """The complete lines of ``text``; CRLF, LF and CR end a line, nothing else does.

    A last line without an end is pending data that the end of the stream discards.
    """
    return [match.group(1) for match in _LINE.finditer(text)]


def parse(stream: bytes) -> Stream:
    """Interpret a complete event stream as a browser would and return what it dispatched."""
    text = stream.decode("utf-8", "replace")  # "UTF-8 decode": errors become U+FFFD
    text = text.removeprefix("\ufeff")  # ... and exactly one leading BOM is dropped
    events: list[Event] = []
    data = ""
    event_type = ""
    id_buffer = ""
    last_event_id = ""
    retry: int | None = None
    for line in lines(text):
        if line == "":
            # Dispatch: the last event ID moves even when nothing is dispatched.
            last_event_id = id_buffer
            if data == "":
                event_type = ""
                continue
            data = data.removesuffix("\n")
            events.append(Event(event_type or "message", data, last_event_id))
            data = ""
            event_type = ""
            continue
        if line.startswith(":"):
            continue  # a comment
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            event_type = value
        elif field == "data":
            data += value + "\n"
        elif field == "id" and "\x00" not in value:
            id_buffer = value
        elif field == "retry" and value and set(value) <= _ASCII_DIGITS:
            retry = int(value)
        # any other field, an id with NUL and a retry that is not all digits are ignored
    # End of stream: pending data and an event without its blank line are discarded.
    return Stream(tuple(events), last_event_id, retry)
