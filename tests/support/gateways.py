"""Gateways serving in the test's own event loop: on the native listener, or as an ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from hopcast._broker.base import Broker
from hopcast._broker.memory import MemoryBroker
from hopcast._core.settings import Settings
from hopcast._http.app import create_app
from hopcast._http.server import StreamServer
from hopcast._hub.hub import Hub
from tests.support.net import bound_socket, free_port
from tests.support.rabbitmq import AMQP_URL, Names, amqp_publish
from tests.support.waits import wait_ready


def settings_for(kind: str, names: Names | None = None, **overrides: object) -> Settings:
    """Settings for a gateway on the memory broker or on RabbitMQ, with a test's own names."""
    env: dict[str, str] = {"HOPCAST_BROKER": "memory://" if kind == "memory" else AMQP_URL}
    if names is not None:
        env.update(names.env())
    return Settings.from_env(env, **overrides)


@dataclass
class Gateway:
    """A gateway serving in this test's event loop."""

    url: str
    app: Starlette
    settings: Settings

    @property
    def hub(self) -> Hub:
        hub: Hub = self.app.state.hub
        return hub

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def serve_in_loop(
    settings: Settings, broker: Broker | None = None, *, server: str = "native"
) -> AsyncIterator[Gateway]:
    """Run the gateway in this event loop on a free port until the block ends, once it is ready.

    ``server="native"`` is what ``hopcast serve`` runs (the streaming listener);
    ``"uvicorn"`` runs the same app as a plain ASGI app, as when it is mounted.
    """
    async with create_app_server(settings, broker, server=server) as (url, app):
        gateway = Gateway(url, app, settings)
        await wait_ready(gateway.url)
        yield gateway


@contextlib.asynccontextmanager
async def create_app_server(
    settings: Settings, broker: Broker | None = None, *, server: str = "native"
) -> AsyncIterator[tuple[str, Starlette]]:
    """Serve the gateway in this loop without waiting for it to be ready; yield URL and app."""
    app = create_app(settings, broker=broker)
    if server == "native":
        async with app.router.lifespan_context(app):
            listener = StreamServer(app)
            await listener.start(bound_socket())
            assert listener.address is not None
            try:
                yield f"http://127.0.0.1:{listener.address[1]}", app
            finally:
                listener.begin_shutdown()
                app.state.queues.begin_shutdown()
                await listener.wait_closed(1.0)
        return
    async with serve_asgi(app, gateway=app) as url:
        yield url, app


@contextlib.asynccontextmanager
async def serve_asgi(app: ASGIApp, *, gateway: Starlette | None = None) -> AsyncIterator[str]:
    """Serve any ASGI app under uvicorn in this loop on a free port; yield its URL.

    ``gateway``: the hopcast app in it, whose streams are ended first (uvicorn waits
    for open responses before it stops).
    """
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        log_config=None,
        lifespan="on",
        proxy_headers=False,  # X-Forwarded-For counts only from --trusted-proxy
        loop="asyncio",
        timeout_graceful_shutdown=1,
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve())
    while not uv.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if gateway is not None and getattr(gateway.state, "hub", None) is not None:
            gateway.state.hub.begin_shutdown()
            gateway.state.queues.begin_shutdown()
        uv.should_exit = True
        await task


def memory_broker(gw: Gateway) -> MemoryBroker:
    """The memory broker a gateway runs on."""
    broker = gw.hub.broker
    assert isinstance(broker, MemoryBroker)
    return broker


async def publish_raw(
    gw: Gateway, kind: str, names: Names, items: Sequence[tuple[str, bytes, str | None]]
) -> None:
    """Publish as a backend service would: straight to the broker, not through the gateway."""
    if kind == "memory":
        broker = memory_broker(gw)
        for topic, body, event in items:
            broker.append(topic, body, event)
    else:
        await amqp_publish(names, items)
