"""A subscription of the Python client: `Event` and `Missed` values, resuming itself as
EventSource does (``Last-Event-ID``, the gateway's ``retry:``), a fresh token per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, Protocol

import httpx

from hopcast._client.problems import RECONNECT_ERRORS, refusal
from hopcast._client.values import Event, EventStreamParser, Missed
from hopcast._core.errors import SubscriptionRefused

log = logging.getLogger("hopcast.client")  # named by layer: module paths are internal

_MISSED = "hopcast-missed"
_TOKEN_EXPIRED = "hopcast-token-expired"


class Subscriber(Protocol):
    """What a subscription needs of its client (the `Client`)."""

    url: str
    retry: float

    @property
    def http(self) -> httpx.AsyncClient: ...

    async def auth_headers(self) -> dict[str, str]: ...


class Subscription:
    """An open subscription: an async iterator of `Event` and `Missed` values that resumes itself.

    It keeps ``last_event_id`` (heartbeats move it too) and reconnects with it as
    ``Last-Event-ID``, as a browser does. A refusal (a 4xx) ends the iteration
    with `SubscriptionRefused`. ``break`` leaves its connection open until
    `aclose`, the end of an ``async with`` on it, or the client's `Client.aclose`.
    """

    def __init__(
        self,
        client: Subscriber,
        patterns: tuple[str, ...],
        *,
        since: str | datetime | None,
        last_event_id: str | None,
    ) -> None:
        self.client = client
        self.patterns = patterns
        self.since = since.isoformat() if isinstance(since, datetime) else since
        self.last_event_id = last_event_id
        self.connections = 0
        """Connections that the gateway answered with a stream."""
        self.retry = client.retry
        self._ready: deque[Event | Missed] = deque()
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
        self._parser = EventStreamParser()
        self._wait = 0.0
        self._closed = False

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event | Missed:
        while not self._ready:
            if self._closed:
                raise StopAsyncIteration
            if self._chunks is None:
                await self._connect()
                continue
            try:
                chunk = await anext(self._chunks)
            except StopAsyncIteration:
                await self._drop(None)
                continue
            except RECONNECT_ERRORS as exc:
                await self._drop(exc)
                continue
            self._take(chunk)
        return self._ready.popleft()

    async def aclose(self) -> None:
        """End the subscription and its connection; the iteration stops."""
        self._closed = True
        await self._release()

    async def _connect(self) -> None:
        """Open the next connection, after the wait a reconnect takes; refusals raise."""
        if self._wait:
            await asyncio.sleep(self._wait)
        self._wait = self.retry
        headers = {"Accept": "text/event-stream", **await self.client.auth_headers()}
        if self.last_event_id:
            headers["Last-Event-ID"] = self.last_event_id
        query: dict[str, Any] = {"topic": list(self.patterns)}
        if self.since is not None and not self.last_event_id:  # once an event came, it resumes
            query["since"] = self.since
        http = self.client.http
        request = http.build_request(
            "GET", f"{self.client.url}/events", params=query, headers=headers
        )
        try:
            response = await http.send(request, stream=True)
        except RECONNECT_ERRORS as exc:
            self._log_retry(exc)
            return
        if response.status_code != 200:
            body = (await response.aread()).decode(errors="replace")
            await response.aclose()
            if 400 <= response.status_code < 500:
                self._closed = True
                raise refusal(SubscriptionRefused, response.status_code, body)
            log.warning("%s answered %d; trying again", self.client.url, response.status_code)
            return
        self.connections += 1
        self._response = response
        self._chunks = response.aiter_bytes()
        self._parser = EventStreamParser(self.last_event_id or "")

    def _take(self, chunk: bytes) -> None:
        parser = self._parser
        for event in parser.feed(chunk):
            if event.event == _TOKEN_EXPIRED:
                log.info("%s: the token expired; resuming with a fresh one", self.client.url)
                continue  # the stream ends now; the next connection asks for a token
            self.last_event_id = event.id or None
            self._ready.append(_missed(event) if event.event == _MISSED else event)
        if parser.retry_ms is not None:
            self.retry = parser.retry_ms / 1000
        self.last_event_id = parser.last_event_id or None  # heartbeats move it too

    async def _drop(self, exc: BaseException | None) -> None:
        """The connection ended (or broke): let it go; the next `_connect` resumes."""
        await self._release()
        if exc is not None:
            self._log_retry(exc)

    async def _release(self) -> None:
        chunks, self._chunks = self._chunks, None
        response, self._response = self._response, None
        aclose = getattr(chunks, "aclose", None)  # httpx's chunks: an async generator
        if aclose is not None:
            with contextlib.suppress(*RECONNECT_ERRORS):
                await aclose()
        if response is not None:
            with contextlib.suppress(*RECONNECT_ERRORS):
                await response.aclose()

    def _log_retry(self, exc: BaseException) -> None:
        log.warning(
            "%s: %s; trying again in %.1f s%s",
            self.client.url,
            exc or type(exc).__name__,
            self.retry,
            f", from event {self.last_event_id}" if self.last_event_id else "",
        )


def _missed(event: Event) -> Event | Missed:
    """The gateway's ``hopcast-missed`` as a `Missed` (left as it came if it is not one)."""
    try:
        data = json.loads(event.data)
        return Missed(event.id, str(data["reason"]), int(data["requested"]), int(data["first"]))
    except (ValueError, TypeError, KeyError):
        return event
