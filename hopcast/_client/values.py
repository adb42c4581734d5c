"""What the client hands its caller (`Event`, `Missed`, `Published`), and the event stream's
parser (`EventStreamParser`), after WHATWG's event stream interpretation."""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

_LINE_END = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True, slots=True)
class Event:
    """One event: its ``id`` (stream offset), ``event`` name (``"message"`` when none), ``data``.

    >>> Event("7", "order-paid", '{"order": 42}').event
    'order-paid'
    """

    id: str
    event: str
    data: str


@dataclass(frozen=True, slots=True)
class Missed:
    """Events were lost before this point: the gateway's ``hopcast-missed``, as a value.

    ``reason`` is ``"retention"`` (the resume point is older than the stream
    keeps) or ``"reset"`` (the stream was recreated); events from ``requested``
    (exclusive) up to ``first`` (exclusive) are gone. The subscription goes on
    after ``id``: whatever state was built from the lost events needs reloading.

    >>> Missed("120", "retention", 41, 120).reason
    'retention'
    """

    id: str
    reason: str
    requested: int
    first: int


@dataclass(frozen=True, slots=True)
class Published:
    """The gateway's ``202``: RabbitMQ confirmed the event (its id is not known yet).

    >>> Published("orders.42", "order-paid", 13).size
    13
    """

    topic: str
    event: str | None
    size: int


class EventStreamParser:
    """WHATWG's event stream interpretation, fed bytes as they arrive.

    ``last_event_id`` starts at the resume point, so a block without ``id:``
    keeps it (the spec would clear it at a new connection's first event).

    >>> parser = EventStreamParser()
    >>> parser.feed(b"retry: 500\\nid: 7\\nevent: paid\\ndata: a\\r\\ndata: b\\n\\n: hi\\n")
    [Event(id='7', event='paid', data='a\\nb')]
    >>> parser.last_event_id, parser.retry_ms
    ('7', 500)
    """

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id = last_event_id
        self.retry_ms: int | None = None
        self._text = codecs.getincrementaldecoder("utf-8")("replace")
        self._started = False
        self._pending = ""
        self._skip_lf = False  # the last chunk ended in CR: a LF opening the next is its CRLF
        self._id = last_event_id
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[Event]:
        """The events that ``chunk`` completes, in order."""
        text = self._text.decode(chunk)
        if not self._started and text:
            self._started = True
            text = text.removeprefix("\ufeff")
        if self._skip_lf and text:
            self._skip_lf = False
            text = text.removeprefix("\n")
        if not text:
            return []
        *lines, self._pending = _LINE_END.split(self._pending + text)
        self._skip_lf = text.endswith("\r")
        events = []
        for line in lines:
            if line:
                self._field(line)
            elif (event := self._dispatch()) is not None:
                events.append(event)
        return events

    def _field(self, line: str) -> None:
        if line[0] == ":":
            return  # a comment
        name, colon, value = line.partition(":")
        if colon and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)

    def _dispatch(self) -> Event | None:
        self.last_event_id = self._id  # even when no event goes out
        event, self._event = self._event, ""
        if not self._data:
            return None
        data, self._data = "\n".join(self._data), []
        return Event(self.last_event_id, event or "message", data)
