"""A Python client for services: publish through the gateway, and subscribe as EventSource does.

>>> async def main() -> None:
...     async with Client("http://127.0.0.1:8080") as client:
...         await client.publish("orders.42", '{"order": 42}', event="order-paid")
...         async for item in client.subscribe("orders.*"):
...             if isinstance(item, Missed):
...                 print("lost events before", item.first)  # reload state from elsewhere
...             else:
...                 print(item.id, item.event, item.data)

``token`` is a bearer token, or a function (plain or async) called for a fresh
one before every connection and every publish: a stream ends when its token
expires, and the subscription then resumes with the next token where the last
one stopped. How a subscription reconnects is drawn in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from hopcast._client.values import Event, EventStreamParser, Missed, Published
from hopcast._core.errors import PublishRefused, Refused, SubscriptionRefused

log = logging.getLogger("hopcast.client")  # named by layer: module paths are internal

RECONNECT_ERRORS = (httpx.TransportError, httpx.RemoteProtocolError)
"""What ends a connection that a reconnect may mend."""
RETRIED_STATUSES = frozenset({429, 503})
"""Publish answers that say nothing was published, come back later (with ``Retry-After``)."""
_MISSED = "hopcast-missed"
_TOKEN_EXPIRED = "hopcast-token-expired"

_R = TypeVar("_R", bound=Refused)

TokenSource = str | Callable[[], str | Awaitable[str]]
"""A bearer token, or a function returning a fresh one (awaited when it is async)."""


class Client:
    """One gateway: publish to it, subscribe to it; an async context manager, as httpx's client.

    ``retry`` is the wait in seconds before a subscription reconnects (until a
    stream's ``retry:`` says otherwise). A connection that brings no byte for
    ``idle_timeout`` seconds is judged dead (a network that drops packets closes
    nothing) and resumed on a new one; the gateway sends a heartbeat every
    ``--heartbeat`` seconds (15 by default), so keep it above twice that, or
    None never to judge; it applies to the client's own HTTP client, not to one
    passed as ``http``. A publish answered ``503`` or ``429`` (nothing was
    published) or that cannot connect is tried again ``publish_retries`` times,
    after the answer's ``Retry-After`` (else ``retry``) seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource | None = None,
        retry: float = 3.0,
        idle_timeout: float | None = 45.0,
        publish_retries: int = 3,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry
        self.publish_retries = publish_retries
        self._token = token
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=idle_timeout))
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()

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
        """Close every subscription still open, then the HTTP client if it is the client's own."""
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        if self._own_http:
            await self._http.aclose()

    def subscribe(
        self,
        *patterns: str,
        since: str | datetime | None = None,
        last_event_id: str | None = None,
    ) -> Subscription:
        """Subscribe to ``patterns``; iterate the answer for `Event` and `Missed` values, in order.

        ``last_event_id`` resumes after that event; ``since`` (``"first"``, or a
        time) starts at the stream's beginning or at that time instead of now.
        """
        if not patterns:
            raise TypeError("subscribe() needs at least one pattern")
        subscription = Subscription(self, patterns, since=since, last_event_id=last_event_id)
        self._subscriptions.add(subscription)
        return subscription

    async def publish(
        self, topic: str, data: str | bytes, *, event: str | None = None
    ) -> Published:
        """Publish ``data`` on ``topic``; `Published` once RabbitMQ confirmed it.

        A refusal raises `PublishRefused` (its ``status``, ``title`` and ``detail``).
        """
        body = data.encode() if isinstance(data, str) else data
        url = f"{self.url}/events/{quote(topic, safe='')}"
        params = {"event": event} if event is not None else {}
        tries = 0
        while True:
            tries += 1
            headers = await self.auth_headers()
            try:
                response = await self._http.post(url, content=body, params=params, headers=headers)
            except httpx.ConnectError:  # nothing was sent: trying again publishes at most once
                if tries > self.publish_retries:
                    raise
                log.warning("%s: cannot connect; publishing again in %.1f s", self.url, self.retry)
                await asyncio.sleep(self.retry)
                continue
            if response.status_code == 202:
                answer = response.json()
                return Published(answer["topic"], answer["event"], answer["size"])
            refused = _problem(PublishRefused, response.status_code, response.text)
            if response.status_code not in RETRIED_STATUSES or tries > self.publish_retries:
                raise refused
            wait = _retry_after(response.headers.get("retry-after"), self.retry)
            log.warning("%s; publishing again in %.1f s", refused, wait)
            await asyncio.sleep(wait)

    async def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header with a fresh token, when the client has a token."""
        if self._token is None:
            return {}
        token = self._token if isinstance(self._token, str) else self._token()
        token = await token if inspect.isawaitable(token) else token
        return {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client the client speaks through."""
        return self._http


class Subscription:
    """An open subscription: an async iterator of `Event` and `Missed` values that resumes itself.

    It keeps ``last_event_id`` (heartbeats move it too) and reconnects with it as
    ``Last-Event-ID``, as a browser does. A refusal (a 4xx) ends the iteration
    with `SubscriptionRefused`. ``break`` leaves its connection open until
    `aclose`, the end of an ``async with`` on it, or the client's `Client.aclose`.
    """

    def __init__(
        self,
        client: Client,
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
                raise _problem(SubscriptionRefused, response.status_code, body)
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


def _problem(kind: type[_R], status: int, body: str) -> _R:
    """A `Refused` of ``kind`` from a problem-details body (or whatever the body was)."""
    title, detail = "", body.strip()[:500]
    with contextlib.suppress(ValueError, AttributeError):
        problem = json.loads(body)
        title, detail = str(problem.get("title", "")), str(problem.get("detail", ""))
    return kind(status, title or httpx.codes.get_reason_phrase(status) or "Error", detail, body)


def _retry_after(value: str | None, default: float) -> float:
    """Seconds from a ``Retry-After`` header (seconds only; the gateway sends no dates)."""
    try:
        return min(60.0, max(0.0, float(value))) if value else default
    except ValueError:
        return default
