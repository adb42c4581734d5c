"""`hopcast.Client` as a Python service uses it: publishing, tokens, refusals, resumes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import pytest

from hopcast import Client, Event, Missed, SubscriptionRefused
from tests.support.clients import metric, post
from tests.support.gateways import Gateway, serve_in_loop, settings_for
from tests.support.processes import ChildGateway
from tests.support.proxy import BlackHoleProxy
from tests.support.rabbitmq import Names, amqp_publish
from tests.support.waits import wait_ready

SECRET = "a client-test secret of more than 32 bytes"


def token(lifetime: float) -> str:
    claims = {"exp": int(time.time() + lifetime), "hopcast": {"subscribe": ["orders.*"]}}
    return jwt.encode(claims, SECRET, algorithm="HS256")


@contextlib.asynccontextmanager
async def jwt_gateway() -> AsyncIterator[Gateway]:
    settings = settings_for("memory", auth="jwt", jwt_secret=SECRET, retry=100, heartbeat=0.2)
    async with serve_in_loop(settings) as gw:
        yield gw


@pytest.mark.slow
async def test_a_token_function_carries_the_stream_across_expiries() -> None:
    """Each connection ends when its token does; the next resumes where it stopped."""
    issued: list[str] = []

    async def fresh() -> str:  # an async source, as one that asks an identity provider
        issued.append(token(2))
        return issued[-1]

    async with jwt_gateway() as gw:
        publisher = asyncio.create_task(_publish_numbers(gw.url))
        got: list[Event | Missed] = []
        try:
            async with Client(gw.url, token=fresh) as client:
                events = client.subscribe("orders.*")
                async with asyncio.timeout(60):
                    async for event in events:
                        got.append(event)
                        if events.connections >= 3:
                            break
        finally:
            publisher.cancel()
        assert len(issued) >= 3  # one fresh token per connection
        # the gateway's hopcast-token-expired is the client's business, not the caller's
        assert all(isinstance(e, Event) and e.event == "message" for e in got)
        data = [e.data for e in got if isinstance(e, Event)]
        assert data == [str(n) for n in range(int(data[0]), int(data[-1]) + 1)]  # no gap, no repeat


async def test_a_plain_function_is_called_too() -> None:
    calls = 0

    def fresh() -> str:
        nonlocal calls
        calls += 1
        return token(3600)

    async with jwt_gateway() as gw:
        publisher = asyncio.create_task(_publish_numbers(gw.url))
        try:
            async with Client(gw.url, token=fresh) as client:
                events = client.subscribe("orders.*")
                async with asyncio.timeout(30):
                    async for event in events:
                        first = event
                        break
        finally:
            publisher.cancel()
        assert isinstance(first, Event)
        # one call for the connection; the publisher posts with its own token
        assert (first.event, events.connections, calls) == ("message", 1, 1)


@pytest.mark.parametrize(
    ("credential", "status", "words"),
    [
        (None, 401, "needs a bearer token"),
        (token(-60), 401, "expired"),
        ("not-a-token", 401, "not a JWT"),
        (jwt.encode({"hopcast": {"subscribe": ["users.*"]}}, SECRET), 403, "orders.*"),
    ],
)
async def test_a_refusal_ends_the_iteration(
    credential: str | None, status: int, words: str
) -> None:
    async with jwt_gateway() as gw:
        async with Client(gw.url, token=credential) as client:
            events = client.subscribe("orders.*")
            with pytest.raises(SubscriptionRefused) as refused:
                async with asyncio.timeout(30):
                    async for _ in events:
                        pass
        assert refused.value.status == status
        assert words in refused.value.detail
        assert refused.value.title == ("Forbidden" if status == 403 else "Unauthorized")
        assert events.connections == 0


async def test_a_connection_gone_silent_is_judged_dead_and_resumed() -> None:
    """Packets dropped, no socket closed: only the silence tells, and the client listens for it."""
    settings = settings_for("memory", retry=100, heartbeat=0.2)
    async with serve_in_loop(settings) as gw:
        port = gw.port
        async with BlackHoleProxy("127.0.0.1", port) as proxy:
            url = f"http://127.0.0.1:{proxy.port}"
            got: list[str] = []
            start = asyncio.create_task(_post_once_subscribed(gw.url, b"start"))
            async with Client(url, idle_timeout=1.0) as client:
                events = client.subscribe("orders.*")
                async with asyncio.timeout(60):
                    async for event in events:
                        assert isinstance(event, Event)
                        got.append(event.data)
                        if event.data == "start":
                            proxy.black_hole()  # the link goes silent
                            proxy.heal()  # new links pass
                            for n in range(3):  # while the client waits on the silent one
                                await post(gw.url, "orders.1", b"%d" % n)
                        if len(got) == 4:
                            break
            await start
        assert got == ["start", "0", "1", "2"]
        assert events.connections == 2


@pytest.mark.usefixtures("rabbitmq")
@pytest.mark.slow
async def test_every_event_once_across_gateway_restarts(names: Names) -> None:
    """Published straight to RabbitMQ, some while no gateway runs; read through two restarts."""
    env = {**names.env(), "HOPCAST_RETRY": "200"}
    gateway = ChildGateway(env)
    sent = 0

    async def publish(count: int) -> None:
        nonlocal sent
        await amqp_publish(
            names, [("orders.1", b"%d" % n, None) for n in range(sent, sent + count)]
        )
        sent += count

    got: list[str] = []
    try:
        await wait_ready(gateway.url)
        await publish(5)  # offsets 0-4 of a new stream: the client starts after the first
        async with Client(gateway.url) as client:
            events = client.subscribe("orders.*", last_event_id="0")
            async with asyncio.timeout(120):
                async for event in events:
                    assert isinstance(event, Event)
                    got.append(event.data)
                    if len(got) in (1, 10):
                        gateway.close()  # the stream ends; the client keeps trying
                        await publish(10)  # while nothing serves it
                        gateway = ChildGateway(env, port=gateway.port)
                        await wait_ready(gateway.url)
                        await publish(5)
                    if len(got) == sent - 1:
                        break
    finally:
        gateway.close()
    assert got == [str(n) for n in range(1, sent)]
    assert (sent, events.connections) == (35, 3)


async def _post_once_subscribed(url: str, body: bytes) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        while await metric(http, "hopcast_subscribers") < 1:
            await asyncio.sleep(0.05)
    await post(url, "orders.1", body)


async def _publish_numbers(url: str) -> None:
    n = 0
    while True:
        response = await post(url, "orders.1", str(n).encode(), headers=_publisher())
        assert response.status_code == 202, response.text
        n += 1
        await asyncio.sleep(0.05)


def _publisher() -> dict[str, str]:
    claims = {"exp": int(time.time() + 3600), "hopcast": {"publish": ["orders.#"]}}
    return {"Authorization": f"Bearer {jwt.encode(claims, SECRET, algorithm='HS256')}"}


async def test_since_a_time_starts_in_the_past() -> None:
    async with serve_in_loop(settings_for("memory")) as gw:
        for n in range(3):
            await post(gw.url, "orders.1", b"%d" % n)
        got: list[str] = []
        since = datetime.now(UTC) - timedelta(hours=1)
        async with Client(gw.url) as client:
            async with asyncio.timeout(30):
                async for event in client.subscribe("orders.*", since=since):
                    assert isinstance(event, Event)
                    got.append(event.data)
                    if len(got) == 3:
                        break
        assert got == ["0", "1", "2"]
