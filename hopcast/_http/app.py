"""The ASGI application: subscribe, publish, health and metrics routes over one hub.

>>> app = create_app(Settings.from_env({"HOPCAST_BROKER": "memory://"}))
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from hopcast._broker import broker_from_settings
from hopcast._broker.base import Broker
from hopcast._core.errors import (
    BrokerUnavailable,
    Forbidden,
    InvalidInput,
    InvalidOffset,
    NotStarted,
    Unauthorized,
)
from hopcast._core.settings import Settings
from hopcast._core.sse import (
    check_event_name,
)
from hopcast._core.topics import Pattern, parse_topic
from hopcast._http.metrics import render_metrics
from hopcast._http.openapi import document
from hopcast._http.streaming import ComeBackLater, EventStreamResponse, StreamHead
from hopcast._hub.hub import Hub
from hopcast._hub.subscription import Since, Subscription
from hopcast._rights.limits import (
    Admission,
    RateLimiter,
    RequestSizeLimit,
    client_address,
    parse_networks,
    retry_after,
)
from hopcast._rights.tokens import QUERY_PARAM, Authorizer, Principal

log = logging.getLogger("hopcast.http")  # named by layer: module paths are internal

MAX_OFFSET = 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest ``?since=``: no stream holds anything older."""


def problem(
    status: int, title: str, detail: str, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An RFC 9457 problem details response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return JSONResponse(body, status, headers=headers, media_type="application/problem+json")


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, its refused preflights answered as problem details."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        kept = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-length", "content-type")
        }
        detail = f"this gateway's CORS settings do not allow the request's {refused}"
        return problem(400, "CORS preflight refused", detail, headers=kept)


def parse_offset(text: str, source: str) -> int:
    """Parse a Last-Event-ID: an offset from -1 (before the first event) upwards.

    >>> parse_offset("1042", "Last-Event-ID")
    1042
    """
    value = text.strip()
    # removeprefix, not lstrip: "--5" passed the digit test and broke int() (a 500)
    if not value.removeprefix("-").isdigit() or not value.isascii() or len(value) > 20:
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
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    # AMQP timestamps are unsigned: a time before 1970 broke the catch-up consumer
    return max(when, EPOCH)


def _patterns(request: Request, settings: Settings) -> list[Pattern]:
    path = request.path_params.get("topic")
    texts = ([path] if path is not None else []) + request.query_params.getlist("topic")
    if not texts:
        raise InvalidInput("name a topic: /events/{topic} or /events?topic=…")
    if len(texts) > settings.max_patterns:
        raise InvalidInput(f"at most {settings.max_patterns} patterns per subscription")
    patterns = list(dict.fromkeys(Pattern.parse(t) for t in texts))
    for pattern in patterns:
        if len(pattern.words) > settings.max_pattern_depth:
            raise InvalidInput(f"a pattern has at most {settings.max_pattern_depth} words")
    return patterns


def _once(request: Request, name: str) -> str | None:
    """A query parameter that may be given at most once: two would be ambiguous."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidInput(f"give ?{name}= once, not {len(values)} times")
    return values[0] if values else None


def _resume_point(request: Request) -> tuple[int | None, Since | None]:
    query, since = _once(request, "lastEventId"), _once(request, "since")
    header = request.headers.get("last-event-id", "")
    if header.strip():
        return parse_offset(header, "Last-Event-ID"), None
    if query is not None and query.strip():
        return parse_offset(query, "lastEventId"), None
    if since is not None:
        return None, parse_since(since)
    return None, None


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


def _token(request: Request, auth: Authorizer) -> str | None:
    _once(request, QUERY_PARAM)
    return auth.token_from(request.headers, request.cookies, request.query_params)


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
    patterns = _patterns(request, settings)
    after, since = _resume_point(request)
    principal = auth.authorize_subscribe(_token(request, auth), patterns)
    if request.method == "HEAD":
        return StreamHead()  # checked as a GET is; nothing to stream
    admission: Admission = request.app.state.admission
    address = client_address(request.scope, request.app.state.trusted)
    if hub.shutting_down:
        return ComeBackLater(settings.retry, "shutting down")
    if not admission.admit(address):
        hub.stats.refused_connections += 1
        return ComeBackLater(settings.retry, "over capacity")
    sub = hub.subscribe(patterns, after=after, since=since)
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


def _rate_key(request: Request, principal: Principal | None, token: str | None) -> str:
    if principal is not None and principal.subject:
        return "sub:" + principal.subject
    if token is not None:
        return "tok:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return "addr:" + client_address(request.scope, request.app.state.trusted)


async def publish(request: Request) -> Response:
    hub, settings, auth = _state(request)
    topic = parse_topic(request.path_params["topic"])
    event = _once(request, "event")
    if event is not None:
        check_event_name(event)
    token = _token(request, auth)
    principal = auth.authorize_publish(token, topic)
    limiter: RateLimiter = request.app.state.limiter
    wait = limiter.check(_rate_key(request, principal, token))
    if wait > 0:
        return problem(
            429,
            "Too many requests",
            f"publish rate above {settings.publish_rate:g}/s; retry later",
            headers={"Retry-After": retry_after(wait)},
        )
    try:
        body = await _read_body(request, settings.max_event_bytes)
    except ClientDisconnect:  # a truncated or malformed body: no traceback per hostile client
        return problem(400, "Bad request", "the connection closed before the body ended")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the body must be UTF-8 text: SSE carries text only") from None
    try:
        await hub.broker.publish(topic, body, event)
    except BrokerUnavailable as exc:
        log.warning("publish to %s refused: %s", topic, exc)
        return problem(
            503,
            "Broker unavailable",
            "the broker did not confirm the event; nothing was published, try again",
            headers={"Retry-After": retry_after(settings.retry / 1000)},
        )
    return JSONResponse({"topic": topic, "event": event, "size": len(body)}, 202)


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
    return PlainTextResponse(
        render_metrics(hub), media_type="text/plain; version=0.0.4; charset=utf-8"
    )


async def _on_invalid(request: Request, exc: Exception) -> Response:
    return problem(400, "Bad request", str(exc))


async def _on_unauthorized(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, Unauthorized):  # pragma: no cover - registered for Unauthorized
        raise exc
    headers = {"WWW-Authenticate": exc.www_authenticate}
    title = "Unauthorized" if exc.status == 401 else "Bad request"
    return problem(exc.status, title, exc.description, headers=headers)


async def _on_forbidden(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, Forbidden):  # pragma: no cover - registered for Forbidden
        raise exc
    return problem(403, "Forbidden", str(exc), headers={"WWW-Authenticate": exc.www_authenticate})


async def _on_not_started(request: Request, exc: Exception) -> Response:
    log.error("%s", exc)
    return problem(500, "Gateway not started", str(exc))


async def error_response(request: Request, exc: Exception) -> Response:
    """The problem-details answer for a refused request (as the app's handlers give it)."""
    handlers = (
        (Unauthorized, _on_unauthorized),
        (Forbidden, _on_forbidden),
        (InvalidInput, _on_invalid),
        (HTTPException, _on_http),
    )
    for kind, handler in handlers:
        if isinstance(exc, kind):
            return await handler(request, exc)
    raise exc


async def _on_http(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException
        raise exc
    titles = {404: "Not found", 405: "Method not allowed", 413: "Content too large"}
    title = titles.get(exc.status_code, "Error")
    detail = exc.detail if exc.status_code != 404 else f"no route for {request.url.path[:200]}"
    return problem(exc.status_code, title, str(detail), headers=exc.headers)


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


def create_app(settings: Settings, *, broker: Broker | None = None) -> Starlette:
    """The gateway as an ASGI app; its lifespan owns the broker connection and the hub.

    >>> create_app(Settings.from_env({"HOPCAST_BROKER": "memory://"})).routes[0].path
    '/events'
    """
    the_broker = broker if broker is not None else broker_from_settings(settings)
    auth = Authorizer.from_settings(settings)
    api = document(settings)

    async def openapi(request: Request) -> Response:
        return JSONResponse(api)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if auth.remote_keys is not None:  # no token can be checked before its keys are in
                await stack.enter_async_context(auth.remote_keys)
            hub = Hub(the_broker, settings)
            app.state.hub = hub
            async with hub:
                yield
            await the_broker.aclose()

    routes: Sequence[Route] = [
        Route("/events", subscribe, methods=["GET"]),
        Route("/events/{topic:topic}", subscribe_or_publish, methods=["GET", "POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    middleware = [
        Middleware(
            RequestSizeLimit,
            max_url_bytes=settings.max_url_bytes,
            max_header_bytes=settings.max_header_bytes,
        )
    ]
    if settings.cors_origin:
        middleware.append(
            Middleware(
                ProblemCORSMiddleware,
                allow_origins=list(settings.cors_origin),
                allow_credentials=True,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
                max_age=600,
            )
        )
    app = Starlette(
        routes=list(routes),
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={
            InvalidInput: _on_invalid,
            HTTPException: _on_http,
            Unauthorized: _on_unauthorized,
            Forbidden: _on_forbidden,
            NotStarted: _on_not_started,
        },
    )
    app.state.settings = settings
    app.state.auth = auth
    app.state.admission = Admission(
        max_total=settings.max_connections,
        max_per_address=settings.max_connections_per_address,
    )
    app.state.limiter = RateLimiter(rate=settings.publish_rate, burst=settings.publish_burst)
    app.state.trusted = parse_networks(settings.trusted_proxy)
    return app
