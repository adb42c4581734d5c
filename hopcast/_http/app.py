"""The ASGI application: the routes over one hub, with its lifespan, middleware and state.

>>> app = create_app(Settings.from_env({"HOPCAST_BROKER": "memory://"}))
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

from starlette.applications import Starlette
from starlette.middleware import Middleware

from hopcast._broker import broker_from_settings, tasks_of
from hopcast._broker.base import Broker
from hopcast._core.settings import Settings
from hopcast._http.openapi import document
from hopcast._http.problems import EXCEPTION_HANDLERS, ProblemCORSMiddleware
from hopcast._http.queues import queue_routes
from hopcast._http.routes import routes
from hopcast._hub.hub import Hub
from hopcast._queue.queues import WorkQueues
from hopcast._rights.limits import Admission, RateLimiter, RequestSizeLimit, parse_networks
from hopcast._rights.tokens import Authorizer


def create_app(settings: Settings, *, broker: Broker | None = None) -> Starlette:
    """The gateway as an ASGI app; its lifespan owns the broker connection and the hub.

    >>> create_app(Settings.from_env({"HOPCAST_BROKER": "memory://"})).routes[0].path
    '/events'
    """
    the_broker = broker if broker is not None else broker_from_settings(settings)
    auth = Authorizer.from_settings(settings)
    app = Starlette(
        routes=routes(document(settings), page=settings.page_on) + queue_routes(),
        lifespan=_lifespan(settings, the_broker, auth),
        middleware=_middleware(settings),
        exception_handlers=EXCEPTION_HANDLERS,
    )
    app.state.settings = settings
    app.state.auth = auth
    app.state.admission = Admission(
        max_total=settings.max_connections,
        max_per_address=settings.max_connections_per_address,
    )
    app.state.limiter = RateLimiter(rate=settings.publish_rate, burst=settings.publish_burst)
    app.state.trusted = parse_networks(settings.trusted_proxy)
    app.state.tally = None  # a worker of `--workers N` reports here, to answer for all
    return app


def _lifespan(
    settings: Settings, broker: Broker, auth: Authorizer
) -> Callable[[Starlette], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the remote keys (if any), then the hub over the broker."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if auth.remote_keys is not None:  # no token can be checked before its keys are in
                await stack.enter_async_context(auth.remote_keys)
            hub = Hub(broker, settings)
            app.state.hub = hub
            async with hub, _work_queues(settings, broker) as queues:
                app.state.queues = queues
                yield
            await broker.aclose()

    return lifespan


def _work_queues(settings: Settings, broker: Broker) -> WorkQueues:
    """The ``--queue`` work queues over ``broker`` (none configured: an empty set)."""
    return WorkQueues(tasks_of(broker) if settings.queue else None, settings)


def _middleware(settings: Settings) -> list[Middleware]:
    """Request size limits always; CORS (its refusals as problem details) when configured."""
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
    return middleware
