"""The WHATWG "event stream interpretation", the one way the tests read an event stream.

`EventStream` takes bytes as they arrive, cut anywhere (inside a CRLF or a UTF-8
character too), and dispatches what a browser's ``EventSource`` would, step by
step after
https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation;
`parse` reads a complete stream. The product's own parser
(`hopcast._client.EventStreamParser`) is tested against this one and never used
to read what the gateway sends.

>>> parse(b"retry: 500\\n\\nid: 7\\nevent: paid\\ndata: a\\ndata: b\\n\\n")
Stream(events=(Event(type='paid', data='a\\nb', last_event_id='7'),), last_event_id='7', retry=500)
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from hypothesis import strategies as st

_LINE = re.compile(r"([^\r\n]*)(?:\r\n|\n|\r)")
_LINE_END = re.compile(r"\r\n|\r|\n")
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


class EventStream:
    """An event stream read as it arrives: `feed` returns the events each piece completes.

    ``last_event_id`` is what ``EventSource`` sends as ``Last-Event-ID`` when it
    reconnects: it moves only when a block ends, so a block cut off is received
    again. A new response (`reconnect`) starts its last event ID buffer there, so
    a block without ``id:`` keeps the resume point.
    """

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        self.retry: int | None = None
        self.retries: list[int] = []
        """Every ``retry:`` value received, in order, across responses."""
        self.reconnect()

    def reconnect(self) -> None:
        """A new response: what was left unfinished of the last one is dropped."""
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")  # "UTF-8 decode"
        self._started = False  # ... which drops one BOM at the start of a response
        self._after_cr = False
        self._pending = ""
        self._data = ""
        self._event_type = ""
        self._id_buffer = self.last_event_id

    def feed(self, piece: bytes) -> list[Event]:
        """Read ``piece``; the events it completes, in order."""
        text = self._decoder.decode(piece)
        if not text:
            return []  # the start of a UTF-8 character: nothing to read yet
        if not self._started:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._after_cr:
            # A CR ended the last piece, and with it a line: a LF now is the rest of a CRLF.
            self._after_cr = False
            text = text.removeprefix("\n")
        *complete, self._pending = _LINE_END.split(self._pending + text)
        self._after_cr = text.endswith("\r")
        events = []
        for line in complete:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event_type = value
        elif field == "data":
            self._data += value + "\n"
        elif field == "id" and "\x00" not in value:
            self._id_buffer = value
        elif field == "retry" and value and set(value) <= _ASCII_DIGITS:
            self.retry = int(value)
            self.retries.append(self.retry)
        # any other field, an id with NUL and a retry that is not all digits are ignored
        return None

    def _dispatch(self) -> Event | None:
        # The last event ID moves even when nothing is dispatched.
        self.last_event_id = self._id_buffer
        if self._data == "":
            self._event_type = ""
            return None
        data = self._data.removesuffix("\n")
        event = Event(self._event_type or "message", data, self.last_event_id)
        self._data = ""
        self._event_type = ""
        return event


def parse(stream: bytes) -> Stream:
    """Interpret a complete event stream as a browser would and return what it dispatched."""
    reader = EventStream()
    events = reader.feed(stream)
    # End of stream: pending data and an event without its blank line are discarded.
    return Stream(tuple(events), reader.last_event_id, reader.retry)


def pieces(stream: bytes, cuts: list[int]) -> list[bytes]:
    """``stream`` in pieces at ``cuts`` (which may fall inside a CRLF or a UTF-8 character)."""
    points = sorted({c % (len(stream) + 1) for c in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


# Streams for property tests: lines of every kind, each of the three line ends, a BOM.

_NAMES = st.sampled_from(["data", "event", "id", "retry", "", "dat", "data ", "Data", "x"])
_VALUES = st.one_of(
    st.sampled_from(["", " ", "  x", "7", "0042", "1.5", "-1", "a\x00b", ":", "é", "\ufeff"]),
    st.text(st.characters(blacklist_characters="\r\n"), max_size=12),
)
_ENDS = st.sampled_from(["\n", "\r", "\r\n"])


@st.composite
def _lines(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["field", "field", "bare", "comment", "blank"]))
    if kind == "blank":
        body = ""
    elif kind == "comment":
        body = ":" + draw(_VALUES)
    elif kind == "bare":
        body = draw(_NAMES)
    else:
        body = f"{draw(_NAMES)}:{draw(_VALUES)}"
    return body + draw(_ENDS)


streams = st.builds(
    lambda bom, parts, tail: (bom + "".join(parts) + tail).encode("utf-8", "surrogatepass"),
    st.sampled_from(["", "\ufeff"]),
    st.lists(_lines(), max_size=25),
    st.sampled_from(["", "data: unfinished", "\r"]),
)
"""Event streams with fields, bare names, comments and blank lines, ended any way."""
