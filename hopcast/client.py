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
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import httpx
from httpx_sse._decoders import SSEDecoder, SSELineDecoder

log = logging.getLogger(__name__)

RECONNECT_ERRORS = (httpx.TransportError, httpx.RemoteProtocolError)

TokenSource = str | Callable[[], str | Awaitable[str]]
"""A bearer token, or a function returning a fresh one (awaited when it is async)."""


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event: ``event`` is ``"message"`` when the stream named none."""

    id: str
    event: str
    data: str


class SubscriptionRefused(Exception):
    """The gateway answered the subscription with an error; retrying would not help."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:500]}")
        self.status = status
        self.body = body


class _Decoder(SSEDecoder):
    """httpx-sse's decoder, plus what WHATWG needs: a block with no data line is not an event."""

    def __init__(self) -> None:
        super().__init__()
        self.has_data = False

    def feed(self, line: str) -> tuple[str, Event | None]:
        if line.startswith("data"):
            field = line.partition(":")[0]
            self.has_data = self.has_data or field == "data"
        had_data = self.has_data
        sse = self.decode(line)
        if sse is None:
            return self._last_event_id, None
        self.has_data = False
        if not had_data:
            return sse.id, None
        return sse.id, Event(sse.id, sse.event or "message", sse.data)


class Client:
    """Subscribe to patterns; iterate for events; reconnects resume with Last-Event-ID."""

    def __init__(
        self,
        url: str,
        patterns: Sequence[str],
        *,
        last_event_id: str | None = None,
        token: TokenSource | None = None,
        retry: float = 3.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.patterns = list(patterns)
        self.last_event_id = last_event_id
        self.retry = retry
        self.connections = 0
        self._token = token
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None))

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
        params = httpx.QueryParams([("topic", p) for p in self.patterns])
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
            decoder = _Decoder()
            lines = SSELineDecoder()
            async for text in response.aiter_text():
                for line in lines.decode(text):
                    last_id, event = decoder.feed(line)
                    if decoder._retry is not None:
                        self.retry = decoder._retry / 1000
                    if last_id:
                        self.last_event_id = last_id
                    if event is not None:
                        yield event

    async def _fresh_token(self) -> str | None:
        if self._token is None or isinstance(self._token, str):
            return self._token
        token = self._token()
        return await token if inspect.isawaitable(token) else token
