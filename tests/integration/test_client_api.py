"""`hopcast.Client` as a newcomer first uses it: publish, subscribe, lost events, ``break``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest

from hopcast import Client, Event, Missed, Published, PublishRefused
from tests.support.gateways import serve_in_loop, settings_for
from tests.support.processes import child_gateway
from tests.support.rabbitmq import Names
from tests.support.waits import wait_ready

SECRET = "a client-API-test secret of more than 32 bytes"


async def test_what_a_service_publishes_its_subscription_receives() -> None:
    async with serve_in_loop(settings_for("memory")) as gw, Client(gw.url) as client:
        sent = [
            await client.publish("orders.42", '{"order": 42}', event="order-paid"),
            await client.publish("orders.7", b"two\nlines"),
        ]
        assert sent == [Published("orders.42", "order-paid", 13), Published("orders.7", None, 9)]
        got: list[Event | Missed] = []
        async with asyncio.timeout(30):
            async for item in client.subscribe("orders.*", since="first"):
                got.append(item)
                if len(got) == 2:
                    break
    assert got == [Event("0", "order-paid", '{"order": 42}'), Event("1", "message", "two\nlines")]


async def test_a_refused_publish_raises_with_the_problem() -> None:
    settings = settings_for("memory", auth="jwt", jwt_secret=SECRET)
    writer = jwt.encode(
        {"exp": int(time.time() + 3600), "hopcast": {"publish": ["orders.#"]}}, SECRET, "HS256"
    )
    async with serve_in_loop(settings) as gw:
        async with Client(gw.url, token=writer) as client:
            cases: list[tuple[str, str | bytes, str | None, int, str, str]] = [
                ("users.1", "x", None, 403, "Forbidden", "publish on 'users.1'"),
                ("orders.*", "x", None, 400, "Bad request", "pattern"),
                ("orders.1", "x", "hopcast-x", 400, "Bad request", "reserved"),
                ("orders.1", b"\xff", None, 400, "Bad request", "UTF-8"),
            ]
            for topic, data, event, status, title, words in cases:
                with pytest.raises(PublishRefused) as refused:
                    await client.publish(topic, data, event=event)
                assert (refused.value.status, refused.value.title) == (status, title), topic
                assert words in refused.value.detail, refused.value.detail
        async with Client(gw.url) as anonymous:
            with pytest.raises(PublishRefused) as refused:
                await anonymous.publish("orders.1", "x")
            assert refused.value.status == 401
            assert '"status":401' in refused.value.body


async def test_a_publish_told_to_come_back_later_is_tried_again() -> None:
    """A 429 (as a 503) says nothing was published: the client waits its Retry-After and retries."""
    settings = settings_for("memory", publish_rate=0.5, publish_burst=1)  # one per 2 s
    tries: list[int] = []

    async def count(response: httpx.Response) -> None:
        tries.append(response.status_code)

    async with (
        serve_in_loop(settings) as gw,
        httpx.AsyncClient(event_hooks={"response": [count]}) as http,
    ):
        async with Client(gw.url, http=http, publish_retries=0) as impatient:
            await impatient.publish("a.b", "1")  # the burst
            with pytest.raises(PublishRefused) as refused:
                await impatient.publish("a.b", "2")
        assert refused.value.status == 429
        assert tries == [202, 429]
        async with Client(gw.url, http=http) as client:
            assert await client.publish("a.b", "3") == Published("a.b", None, 1)
        assert tries[2:] == [429, 202]  # told to wait, it waited, and it went through


async def test_a_publish_while_the_broker_is_away_is_a_503_after_the_retries(
    names: Names,
) -> None:
    """Nothing listens where the broker should be: each try is refused, then the error says so."""
    tries: list[int] = []

    async def count(response: httpx.Response) -> None:
        tries.append(response.status_code)

    env = {**names.env(), "HOPCAST_BROKER": "amqp://guest:guest@127.0.0.1:1/"}
    env["HOPCAST_RETRY"] = "100"  # Retry-After: 1
    with child_gateway(env) as gw:
        await wait_ready(gw.url, ready=False)
        async with (
            httpx.AsyncClient(event_hooks={"response": [count]}) as http,
            Client(gw.url, http=http, publish_retries=2) as client,
        ):
            with pytest.raises(PublishRefused) as refused:
                await client.publish("a.b", "lost?")
    assert (refused.value.status, refused.value.title) == (503, "Broker unavailable")
    assert "nothing was published" in refused.value.detail
    assert tries == [503, 503, 503]


async def test_lost_events_come_as_a_missed_value_in_order() -> None:
    """A resume point older than retention: a `Missed`, then the events still kept, then live."""
    settings = settings_for("memory", memory_max_events=5, ring_size=0)
    async with serve_in_loop(settings) as gw, Client(gw.url) as client:
        for n in range(20):
            await client.publish("orders.1", str(n))
        got: list[Event | Missed] = []
        events = client.subscribe("orders.*", last_event_id="2")
        async with asyncio.timeout(30):
            async for item in events:
                got.append(item)
                if len(got) == 6:
                    break
        await events.aclose()
    assert got[0] == Missed("14", "retention", 2, 15)
    assert got[1:] == [Event(str(n), "message", str(n)) for n in range(15, 20)]


def test_breaking_out_reports_no_error_when_the_loop_ends() -> None:
    """``break``, then the program ends: no "error occurred during closing of asynchronous
    generator" from the event loop, whether the client or the subscription is closed, or neither."""
    reported: list[dict[str, Any]] = []

    async def main(url: str, how: str) -> None:
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: reported.append(ctx))
        client = Client(url)
        events = client.subscribe("a.*", since="first")
        async for _ in events:
            break
        if how == "subscription":
            await events.aclose()
            async for _ in client.subscribe("a.*", since="first"):
                break  # a second one on the same client, left open
        if how in ("client", "subscription"):
            await client.aclose()

    with child_gateway({"HOPCAST_BROKER": "memory://"}) as gw:
        asyncio.run(wait_ready(gw.url))
        asyncio.run(_publish(gw.url))
        for how in ("client", "subscription", "neither"):
            asyncio.run(main(gw.url, how))
            assert reported == [], (how, reported)


async def _publish(url: str) -> None:
    async with Client(url) as client:
        await client.publish("a.b", "x")


async def test_a_token_function_is_called_before_every_publish() -> None:
    calls = 0

    async def fresh() -> str:
        nonlocal calls
        calls += 1
        claims = {"exp": int(time.time() + 60), "hopcast": {"publish": ["a.*"]}}
        return jwt.encode(claims, SECRET, "HS256")

    settings = settings_for("memory", auth="jwt", jwt_secret=SECRET)
    async with serve_in_loop(settings) as gw, Client(gw.url, token=fresh) as client:
        for n in range(3):
            await client.publish("a.b", str(n))
    assert calls == 3
