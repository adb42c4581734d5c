"""Helpers shared by the tests: RabbitMQ access, unique names, in-process and child gateways."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import aiormq
import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.types import ASGIApp

from hopcast._broker.base import Broker
from hopcast._client import Event as ClientEvent
from hopcast._client import EventStreamParser
from hopcast._core.settings import Settings
from hopcast._http.app import create_app
from hopcast._http.server import StreamServer
from hopcast._hub.hub import Hub

AMQP_URL = os.environ.get("HOPCAST_TEST_AMQP_URL", "amqp://guest:guest@localhost:5672/")
REQUIRE_RABBITMQ = os.environ.get("HOPCAST_REQUIRE_RABBITMQ", "") not in ("", "0") or bool(
    os.environ.get("CI")
)


def rabbitmq_reachable(url: str = AMQP_URL) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncio.wait_for(aiormq.connect(url), 15)  # a loaded machine is slow
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


def need_rabbitmq() -> None:
    """Skip without RabbitMQ on a laptop; fail in CI (a missing broker is a broken run)."""
    if rabbitmq_reachable():
        return
    message = f"RabbitMQ is not reachable at {AMQP_URL}"
    if REQUIRE_RABBITMQ:
        pytest.fail(message + " (CI requires it)")
    pytest.skip(message)


@dataclass(frozen=True)
class Names:
    """An exchange and a stream that belong to one test."""

    exchange: str
    stream: str
    used: list[bool]

    @classmethod
    def fresh(cls) -> Names:
        tag = uuid.uuid4().hex[:12]
        return cls(f"hopcast-test.{tag}", f"hopcast-test.{tag}.events", [])

    def env(self) -> dict[str, str]:
        self.used.append(True)
        return {"HOPCAST_EXCHANGE": self.exchange, "HOPCAST_STREAM": self.stream}


async def delete_topology(names: Names, url: str = AMQP_URL) -> None:
    """Delete a test's exchange and stream, waiting for RabbitMQ if a test restarted it."""
    if not names.used:
        return
    for _ in range(60):
        try:
            conn = await aiormq.connect(url)
        except (OSError, aiormq.exceptions.AMQPError):
            await asyncio.sleep(1)
            continue
        try:
            channel = await conn.channel()
            await channel.queue_delete(names.stream)
            await channel.exchange_delete(names.exchange)
        finally:
            await conn.close()
        return


async def amqp_publish(
    names: Names,
    items: Sequence[tuple[str, bytes, str | None]],
    url: str = AMQP_URL,
) -> None:
    """Publish straight to RabbitMQ as any AMQP client would, with confirms."""
    from pamqp import commands as spec

    conn = await aiormq.connect(url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        for topic, body, event in items:
            await channel.basic_publish(
                body,
                exchange=names.exchange,
                routing_key=topic,
                properties=spec.Basic.Properties(message_type=event),
                mandatory=True,
            )
    finally:
        await conn.close()


def settings_for(kind: str, names: Names | None = None, **overrides: object) -> Settings:
    env: dict[str, str] = {"HOPCAST_BROKER": "memory://" if kind == "memory" else AMQP_URL}
    if names is not None:
        env.update(names.env())
    return Settings.from_env(env, **overrides)


PORTS_FROM = 10_000
"""Test gateways listen on ports from here up to the ephemeral range."""
_RANDOM = random.SystemRandom()  # not the one Hypothesis seeds


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range.

    A port the kernel handed out (bind to 0) is one it may hand out again, as
    the local end of any outgoing connection, in the moment between a gateway
    stopping and starting again on it; below the range, only a listener takes it.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            ephemeral = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    for _ in range(1000):
        port = _RANDOM.randrange(PORTS_FROM, max(PORTS_FROM + 1000, ephemeral))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port between {PORTS_FROM} and {ephemeral}")


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


@contextlib.asynccontextmanager
async def serve_in_loop(
    settings: Settings, broker: Broker | None = None, *, server: str = "native"
) -> AsyncIterator[Gateway]:
    """Run the gateway in this event loop on a free port until the block ends.

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
            await listener.start(_bound_socket())
            assert listener.address is not None
            try:
                yield f"http://127.0.0.1:{listener.address[1]}", app
            finally:
                listener.begin_shutdown()
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
        hub = getattr(gateway.state, "hub", None) if gateway is not None else None
        if hub is not None:
            hub.begin_shutdown()
        uv.should_exit = True
        await task


def exchange(port: int, data: bytes, timeout: float = 30.0) -> bytes:
    """Send ``data`` as it is, in one write; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def _bound_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    return sock


async def metric(http: httpx.AsyncClient, name: str) -> float:
    """One value of the gateway's ``/metrics`` (``http`` is bound to the gateway's URL)."""
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")


async def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


async def wait_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"{url} did not become ready")


class ChildGateway:
    """``python -m hopcast serve`` in a child process; always stopped by the test."""

    def __init__(self, env: Mapping[str, str], *args: str, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, **env, "HOPCAST_PORT": str(self.port)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hopcast", "serve", *args],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def stderr(self) -> str:
        self.stop()
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode(errors="replace")

    def close(self) -> None:
        """Stop it and let go of its stderr."""
        self.stop()
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@contextlib.contextmanager
def child_gateway(env: Mapping[str, str], *args: str) -> Iterator[ChildGateway]:
    child = ChildGateway(env, *args)
    try:
        yield child
    finally:
        child.close()


class Listener:
    """Reads one SSE response in the background; events and the last id pile up for checks."""

    def __init__(self, url: str, headers: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.events: list[ClientEvent] = []
        self.last_id: str | None = None
        self.status: int | None = None
        self.response_headers: httpx.Headers | None = None
        self.raw = bytearray()
        self.ended = asyncio.Event()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            async with (
                httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None)) as http,
                http.stream("GET", self.url, headers=self.headers) as response,
            ):
                self.status = response.status_code
                self.response_headers = response.headers
                parser = EventStreamParser()
                async for raw in response.aiter_raw():
                    self.raw += raw
                    self.events += parser.feed(raw)
                    self.last_id = parser.last_event_id or self.last_id
                    self._arrived.set()
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()
            self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[ClientEvent]:
        """Wait until ``count`` events arrived (or the stream ended); return them all."""
        async with asyncio.timeout(timeout):
            while len(self.events) < count and not self.ended.is_set():
                self._arrived.clear()
                await self._arrived.wait()
        return self.events

    async def wait_until(self, check: Callable[[Listener], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not check(self):
                if self.ended.is_set():
                    raise AssertionError(f"stream ended; events so far: {self.events[-3:]}")
                self._arrived.clear()
                await self._arrived.wait()

    def data(self) -> list[str]:
        return [e.data for e in self.events]


async def post(
    url: str,
    topic: str,
    body: bytes,
    event: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    params = {"event": event} if event is not None else {}
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{url}/events/{topic}", content=body, params=params, headers=headers
        )
