"""The routes: subscribe, publish, health, readiness, metrics and the OpenAPI document.

>>> [route.path for route in routes({})][:2]
['/events', '/events/{topic:topic}']
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from hopcast._core.errors import BrokerUnavailable, InvalidInput, NotStarted
from hopcast._core.settings import Settings
from hopcast._core.sse import check_event_name
from hopcast._core.topics import parse_topic
from hopcast._http.metrics import render_metrics
from hopcast._http.page import page_routes
from hopcast._http.params import once, patterns, resume_point, token
from hopcast._http.problems import problem
from hopcast._http.queue_metrics import queue_depths
from hopcast._http.streaming import ComeBackLater, EventStreamResponse, StreamHead
from hopcast._hub.hub import Hub
from hopcast._hub.subscription import Subscription
from hopcast._rights.limits import Admission, RateLimiter, client_address, retry_after
from hopcast._rights.tokens import Authorizer

log = logging.getLogger("hopcast.http")  # named by layer: module paths are internal


class TopicConvertor(Convertor[str]):
    """Starlette's ``path``, newlines included.

    ``.`` stops at a newline, so ``/events/a%0Ab`` would find no route (404);
    it is an invalid topic, refused as such (400), as the streaming listener does.
    """

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("topic", TopicConvertor())


def routes(api: dict[str, Any], *, page: bool = False) -> list[Route]:
    """The gateway's routes; ``api`` is the OpenAPI document ``/openapi.json`` serves,
    ``page`` adds the live page at ``/``."""

    async def openapi(request: Request) -> Response:
        return JSONResponse(api)

    return [
        Route("/events", subscribe, methods=["GET"]),
        Route("/events/{topic:topic}", subscribe_or_publish, methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *(page_routes() if page else []),
    ]


def _hub(request: Request) -> Hub:
    hub: Hub | None = getattr(request.app.state, "hub", None)
    if hub is None:
        raise NotStarted(
            "the gateway's lifespan has not run: an app that mounts hopcast's app must enter "
            "`hopcast_app.router.lifespan_context(hopcast_app)` in its own lifespan"
        )
    return hub


def _state(request: Request) -> tuple[Hub, Settings, Authorizer]:
    state = request.app.state
    return _hub(request), state.settings, state.auth


# -- subscribe ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admitted:
    """A subscription the gateway accepted, with what its writer needs to run it."""

    hub: Hub
    sub: Subscription
    settings: Settings
    expires_at: datetime | None
    release: Callable[[], None]


def open_subscription(request: Request) -> Admitted | Response:
    """Check a subscription request and open it, or answer why not (raises 4xx errors)."""
    hub, settings, auth = _state(request)
    wanted = patterns(request, settings)
    after, since = resume_point(request)
    principal = auth.authorize_subscribe(token(request, auth), wanted)
    if request.method == "HEAD":
        return StreamHead()  # checked as a GET is; nothing to stream
    admission: Admission = request.app.state.admission
    address = client_address(request.scope, request.app.state.trusted)
    if hub.shutting_down:
        return ComeBackLater(settings.retry, "shutting down")
    if not admission.admit(address):
        hub.stats.refused_connections += 1
        return ComeBackLater(settings.retry, "over capacity")
    sub = hub.subscribe(wanted, after=after, since=since)
    expires_at = principal.expires_at if principal is not None else None
    return Admitted(hub, sub, settings, expires_at, lambda: admission.release(address))


async def subscribe(request: Request) -> Response:
    admitted = open_subscription(request)
    if isinstance(admitted, Response):
        return admitted
    return EventStreamResponse(
        admitted.hub,
        admitted.sub,
        admitted.settings,
        expires_at=admitted.expires_at,
        on_done=admitted.release,
    )


async def subscribe_or_publish(request: Request) -> Response:
    """``/events/{topic}``: one route for both methods, so a 405 lists both in ``Allow``."""
    if request.method == "POST":
        return await publish(request)
    return await subscribe(request)


# -- publish --------------------------------------------------------------------


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413: at once when ``Content-Length`` announces too much on a connection
    kept alive (the ASGI server reads the rest and drops it), else after reading (and dropping)
    up to a cap, so that a client still sending sees the 413 and not a reset."""
    length = request.headers.get("content-length", "")
    kept_alive = request.headers.get("connection", "").lower() != "close"
    if length.isdigit() and int(length) > limit and kept_alive:
        raise HTTPException(413, f"the body is larger than {limit} bytes")
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


def over_rate(
    request: Request, subject: str | None, bearer: str | None, what: str
) -> Response | None:
    """The 429 for a publish or an enqueue over ``--publish-rate``, or None."""
    limiter: RateLimiter = request.app.state.limiter
    wait = limiter.check(_rate_key(request, subject, bearer))
    if wait <= 0:
        return None
    rate = request.app.state.settings.publish_rate
    return problem(
        429,
        "Too many requests",
        f"{what} rate above {rate:g}/s; retry later",
        headers={"Retry-After": retry_after(wait)},
    )


def _rate_key(request: Request, subject: str | None, bearer: str | None) -> str:
    """Whose rate a publish or an enqueue counts toward: the token's subject, the token, or
    the client's address."""
    if subject:
        return "sub:" + subject
    if bearer is not None:
        return "tok:" + hashlib.sha256(bearer.encode()).hexdigest()[:32]
    return "addr:" + client_address(request.scope, request.app.state.trusted)


async def publish(request: Request) -> Response:
    hub, settings, auth = _state(request)
    topic = parse_topic(request.path_params["topic"])
    event = once(request, "event")
    if event is not None:
        check_event_name(event)
    bearer = token(request, auth)
    principal = auth.authorize_publish(bearer, topic)
    too_many = over_rate(request, principal.subject if principal else None, bearer, "publish")
    if too_many is not None:
        return too_many
    try:
        body = await read_body(request, settings.max_event_bytes)
    except ClientDisconnect:  # a truncated or malformed body: no traceback per hostile client
        return problem(400, "Bad request", "the connection closed before the body ended")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the body must be UTF-8 text: SSE carries text only") from None
    try:
        await hub.broker.publish(topic, body, event)
    except BrokerUnavailable as exc:
        # while the broker is away the broker's own warning says so: one line per publish here
        level = logging.WARNING if hub.broker.connected else logging.INFO
        log.log(level, "publish to %s answered 503: %s", topic, exc)
        return problem(
            503,
            "Broker unavailable",
            "the broker did not confirm the event; nothing was published, try again",
            headers={"Retry-After": retry_after(settings.retry / 1000)},
        )
    return JSONResponse({"topic": topic, "event": event, "size": len(body)}, 202)


# -- operations -----------------------------------------------------------------


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "alive"})


async def readyz(request: Request) -> Response:
    hub = _hub(request)
    body = {
        "ready": hub.ready,
        "broker_connected": hub.broker.connected,
        "stream_reader": hub.reader_running,
        "position": hub.position,
    }
    return JSONResponse(body, 200 if hub.ready else 503)


async def metrics(request: Request) -> Response:
    hub = _hub(request)
    queues = getattr(request.app.state, "queues", None)
    depths = await queue_depths(queues)
    return PlainTextResponse(
        render_metrics(hub, request.app.state.tally, queues, depths),
        media_type="text/plain; version=0.0.4; charset=utf-8",
    )
