"""The ASGI application: subscribe, publish, health and metrics routes over one hub.

>>> app = create_app(Settings.from_env({"HOPCAST_BROKER": "memory://"}))
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from hopcast.broker import Broker, broker_from_settings
from hopcast.config import Settings
from hopcast.errors import (
    BrokerUnavailable,
    InvalidInput,
    InvalidOffset,
    SubscriptionClosed,
)
from hopcast.hub import Hub, Since, Subscription
from hopcast.metrics import render_metrics
from hopcast.sse import check_event_name, encode_heartbeat, encode_preamble, encode_retry
from hopcast.topics import Pattern, parse_topic

log = logging.getLogger(__name__)

MAX_PATTERNS = 32
MAX_OFFSET = 2**63 - 1
SEND_TIMEOUT = 30.0
"""Seconds one write may wait on a client's full socket before the client is cut off."""
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def problem(
    status: int, title: str, detail: str, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An RFC 9457 problem details response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return JSONResponse(body, status, headers=headers, media_type="application/problem+json")


def parse_offset(text: str, source: str) -> int:
    """Parse a Last-Event-ID: an offset from -1 (before the first event) upwards.

    >>> parse_offset("1042", "Last-Event-ID")
    1042
    """
    value = text.strip()
    if not value.lstrip("-").isdigit() or not value.isascii() or len(value) > 20:
        raise InvalidOffset(f"{source} must be an event id (an integer), got {text[:40]!r}")
    offset = int(value)
    if not -1 <= offset <= MAX_OFFSET:
        raise InvalidOffset(f"{source} must be between -1 and {MAX_OFFSET}")
    return offset


def parse_since(text: str) -> Since:
    """Parse ``?since=``: ``first`` or an ISO-8601 time (UTC when no zone is given).

    >>> parse_since("first")
    'first'
    """
    if text == "first":
        return "first"
    if "T" in text and " " in text:
        text = text.replace(" ", "+")  # an unencoded '+' in a URL arrives as a space
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidOffset(
            f"since must be 'first' or an ISO-8601 time, got {text[:40]!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _patterns(request: Request) -> list[Pattern]:
    path = request.path_params.get("topic")
    texts = [path] if path is not None else request.query_params.getlist("topic")
    if not texts:
        raise InvalidInput("name a topic: /events/{topic} or /events?topic=…")
    if len(texts) > MAX_PATTERNS:
        raise InvalidInput(f"at most {MAX_PATTERNS} patterns per subscription")
    return list(dict.fromkeys(Pattern.parse(t) for t in texts))


def _resume_point(request: Request) -> tuple[int | None, Since | None]:
    header = request.headers.get("last-event-id", "")
    if header.strip():
        return parse_offset(header, "Last-Event-ID"), None
    query = request.query_params.get("lastEventId")
    if query is not None and query.strip():
        return parse_offset(query, "lastEventId"), None
    since = request.query_params.get("since")
    if since is not None:
        return None, parse_since(since)
    return None, None


class EventStreamResponse(Response):
    """Streams a subscription as text/event-stream; one task owns all the writes."""

    def __init__(self, hub: Hub, sub: Subscription, settings: Settings) -> None:
        self.hub = hub
        self.sub = sub
        self.settings = settings
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.sub
        writer = asyncio.current_task()
        if writer is None:  # pragma: no cover - always inside a task under ASGI servers
            raise RuntimeError("no current task")
        watcher = asyncio.create_task(self._watch(receive, writer))
        sub.on_cut = writer.cancel
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await self._write(send, encode_preamble(self.settings.retry, None))
            first_id = await sub.start()
            if first_id is not None:
                await self._write(send, encode_heartbeat(first_id))
            await self._stream(send)
        except SubscriptionClosed as closed:
            await self._finish(send, closed.reason)
        except (asyncio.CancelledError, TimeoutError, OSError):
            pass  # the client left, or stopped reading: it resumes with Last-Event-ID
        finally:
            watcher.cancel()
            sub.close("done")

    async def _stream(self, send: Send) -> None:
        sub = self.sub
        heartbeat = self.settings.heartbeat
        while True:
            chunk = await sub.next_chunk(heartbeat)
            if chunk is None:
                chunk = encode_heartbeat(sub.safe_offset)
            await self._write(send, chunk)

    @staticmethod
    async def _write(send: Send, body: bytes) -> None:
        async with asyncio.timeout(SEND_TIMEOUT):
            await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _finish(self, send: Send, reason: str) -> None:
        """End the response; ask a client sent away by shutdown to come back a bit later."""
        tail = b""
        if reason == "shutdown":
            spread = self.settings.retry * random.uniform(1.0, 3.0)
            tail = encode_retry(int(spread))
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(1.0):
                await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _watch(self, receive: Receive, writer: asyncio.Task[Any]) -> None:
        """Cancel the writer when the client disconnects or the subscription is cut off."""
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                if self.sub.closed is None:
                    writer.cancel()
                return


async def subscribe(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    settings: Settings = request.app.state.settings
    patterns = _patterns(request)
    after, since = _resume_point(request)
    sub = hub.subscribe(patterns, after=after, since=since)
    if hub.shutting_down:
        sub.close("shutdown")
    return EventStreamResponse(hub, sub, settings)


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 after reading (and dropping) up to a cap, so the client sees the 413."""
    chunks = []
    size = 0
    stream = request.stream()
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            async for more in stream:
                size += len(more)
                if size > limit * 4 + 1_048_576:
                    break
            raise HTTPException(413, f"the body is larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def publish(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    settings: Settings = request.app.state.settings
    topic = parse_topic(request.path_params["topic"])
    event = request.query_params.get("event")
    if event is not None:
        check_event_name(event)
    body = await _read_body(request, settings.max_event_bytes)
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the body must be UTF-8 text: SSE carries text only") from None
    try:
        await hub.broker.publish(topic, body, event)
    except BrokerUnavailable as exc:
        log.warning("publish to %s refused: %s", topic, exc)
        retry_after = str(max(1, round(settings.retry / 1000)))
        return problem(
            503,
            "Broker unavailable",
            "the broker did not confirm the event; nothing was published, try again",
            headers={"Retry-After": retry_after},
        )
    return JSONResponse({"topic": topic, "event": event, "size": len(body)}, 202)


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    body = {
        "ready": hub.ready,
        "broker_connected": hub.broker.connected,
        "stream_reader": hub.reader_running,
        "position": hub.position,
    }
    return JSONResponse(body, 200 if hub.ready else 503)


async def metrics(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    return PlainTextResponse(
        render_metrics(hub), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


async def _on_invalid(request: Request, exc: Exception) -> Response:
    return problem(400, "Bad request", str(exc))


async def _on_http(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException
        raise exc
    titles = {404: "Not found", 405: "Method not allowed", 413: "Content too large"}
    title = titles.get(exc.status_code, "Error")
    detail = exc.detail if exc.status_code != 404 else f"no route for {request.url.path[:200]}"
    return problem(exc.status_code, title, str(detail), headers=exc.headers)


def create_app(settings: Settings, *, broker: Broker | None = None) -> Starlette:
    """The gateway as an ASGI app; its lifespan owns the broker connection and the hub.

    >>> create_app(Settings.from_env({"HOPCAST_BROKER": "memory://"})).routes[0].path
    '/events'
    """
    the_broker = broker if broker is not None else broker_from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        hub = Hub(the_broker, settings)
        app.state.hub = hub
        app.state.settings = settings
        async with hub:
            yield
        await the_broker.aclose()

    routes: Sequence[Route] = [
        Route("/events", subscribe, methods=["GET"]),
        Route("/events/{topic:path}", subscribe, methods=["GET"]),
        Route("/events/{topic:path}", publish, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(
        routes=list(routes),
        lifespan=lifespan,
        exception_handlers={InvalidInput: _on_invalid, HTTPException: _on_http},
    )
