"""A Python subscriber that resumes by itself, as a browser's EventSource does.

>>> async def main() -> None:
...     async with Client("http://127.0.0.1:8080", ["orders.*"]) as client:
...         async for event in client:
...             print(event.id, event.event, event.data)

``token`` is a bearer token, or a function (plain or async) called for a fresh
one before every connection: a stream ends when its token expires, and the
client then resumes with the next token where the last one stopped.
"""

from __future__ import annotations

import asyncio
import codecs
import inspect
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType

import httpx

from hopcast._core.errors import SubscriptionRefused

log = logging.getLogger("hopcast.client")  # named by layer: module paths are internal

RECONNECT_ERRORS = (httpx.TransportError, httpx.RemoteProtocolError)
_LINE_END = re.compile(r"\r\n|\r|\n")

TokenSource = str | Callable[[], str | Awaitable[str]]
"""A bearer token, or a function returning a fresh one (awaited when it is async)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: ``event`` is ``"message"`` when the stream named none."""

    id: str
    event: str
    data: str


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


class Client:
    """Subscribe to patterns; iterate for events; reconnects resume with Last-Event-ID.

    ``since`` (``"first"``, or a time) starts at the stream's beginning or at that
    time instead of now, until a resume point takes over.

    A connection that brings no byte for ``idle_timeout`` seconds is judged
    dead (a network that drops packets closes nothing) and resumed on a new
    one; the gateway sends a heartbeat every ``--heartbeat`` seconds (15 by
    default), so keep it above twice that, or None never to judge. It applies
    to the client's own HTTP client, not to one passed as ``http``.
    """

    def __init__(
        self,
        url: str,
        patterns: Sequence[str],
        *,
        last_event_id: str | None = None,
        since: str | datetime | None = None,
        token: TokenSource | None = None,
        retry: float = 3.0,
        idle_timeout: float | None = 45.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.patterns = list(patterns)
        self.last_event_id = last_event_id
        self.since = since.isoformat() if isinstance(since, datetime) else since
        self.retry = retry
        self.connections = 0
        self._token = token
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=idle_timeout))

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aiter__(self) -> AsyncIterator[Event]:
        while True:
            try:
                async for event in self._connect_once():
                    yield event
            except RECONNECT_ERRORS as exc:
                log.warning(
                    "%s: %s; trying again in %.1f s%s",
                    self.url,
                    exc or type(exc).__name__,
                    self.retry,
                    f", from event {self.last_event_id}" if self.last_event_id else "",
                )
            await asyncio.sleep(self.retry)

    async def _connect_once(self) -> AsyncIterator[Event]:
        headers = {"Accept": "text/event-stream"}
        token = await self._fresh_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        query: dict[str, str | list[str]] = {"topic": self.patterns}
        if self.since is not None and not self.last_event_id:  # once an event came, it resumes
            query["since"] = self.since
        params = httpx.QueryParams(query)
        async with self._http.stream(
            "GET", f"{self.url}/events", params=params, headers=headers
        ) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                if 400 <= response.status_code < 500:
                    raise SubscriptionRefused(response.status_code, body)
                log.warning("%s answered %d; trying again", self.url, response.status_code)
                return
            self.connections += 1
            parser = EventStreamParser(self.last_event_id or "")
            async for chunk in response.aiter_bytes():
                events = parser.feed(chunk)
                if parser.retry_ms is not None:
                    self.retry = parser.retry_ms / 1000
                for event in events:
                    self.last_event_id = event.id or None
                    yield event
                self.last_event_id = parser.last_event_id or None  # heartbeats move it too

    async def _fresh_token(self) -> str | None:
        if self._token is None or isinstance(self._token, str):
            return self._token
        token = self._token()
        return await token if inspect.isawaitable(token) else token
