"""The gateway's behaviour over HTTP, run once on the memory broker and once on RabbitMQ:
publishing and subscribing, odd messages, refusals and health."""

from __future__ import annotations

import asyncio
import json

import httpx
import pika

from tests.support.clients import Listener, post
from tests.support.gateways import publish_raw, serve_in_loop, settings_for
from tests.support.rabbitmq import Names


async def test_publish_and_subscribe(broker_kind: str, names: Names) -> None:
    async with serve_in_loop(settings_for(broker_kind, names)) as gw:
        async with Listener(f"{gw.url}/events/orders.*") as sub:
            await sub.wait_started()
            resp = await post(gw.url, "orders.42", b'{"order": 42}', "order-paid")
            assert resp.status_code == 202
            await post(gw.url, "users.1", b"not for us")
            await post(gw.url, "orders.43", b"two\nlines")
            events = await sub.wait_for(2)
        assert [(e.type, e.data) for e in events] == [
            ("order-paid", '{"order": 42}'),
            ("message", "two\nlines"),
        ]
        assert int(events[0].last_event_id) < int(events[1].last_event_id)
        assert sub.status == 200
        assert sub.response_headers is not None
        assert sub.response_headers["content-type"] == "text/event-stream; charset=utf-8"
        assert sub.response_headers["cache-control"] == "no-cache"
        assert sub.response_headers["x-accel-buffering"] == "no"
        assert bytes(sub.raw).startswith(b"retry: 3000\n: hopcast\n\n")


async def test_amqp_publishers_reach_subscribers_in_stream_order(
    broker_kind: str, names: Names
) -> None:
    async with serve_in_loop(settings_for(broker_kind, names)) as gw:
        async with (
            Listener(f"{gw.url}/events/orders.%23") as everything,
            Listener(f"{gw.url}/events?topic=orders.1&topic=orders.*") as overlap,
            Listener(f"{gw.url}/events/orders.1?topic=orders.2") as path_plus_query,
        ):
            for s in (everything, overlap, path_plus_query):
                await s.wait_started()
            items = [(f"orders.{i % 3}", f"m{i}".encode(), "order-paid") for i in range(30)]
            await publish_raw(gw, broker_kind, names, items)
            got = await everything.wait_for(30)
            # an event matching two patterns of one connection comes once
            both = await overlap.wait_for(30)
            # a topic in the path and more in the query: all of them
            path_and_query = await path_plus_query.wait_for(20)
        assert [e.data for e in got] == [f"m{i}" for i in range(30)]
        assert [e.data for e in both] == [f"m{i}" for i in range(30)]
        assert [e.data for e in path_and_query] == [f"m{i}" for i in range(30) if i % 3]
        ids = [int(e.last_event_id) for e in got]
        assert ids == sorted(ids) and len(set(ids)) == 30
        assert {e.type for e in got} == {"order-paid"}


async def test_odd_bodies_published_straight_to_the_broker(broker_kind: str, names: Names) -> None:
    settings = settings_for(broker_kind, names, max_event_bytes=1000)
    async with serve_in_loop(settings) as gw:
        async with Listener(f"{gw.url}/events/odd") as sub:
            await sub.wait_started()
            items: list[tuple[str, bytes, str | None]] = [
                ("odd", b"\xff\xfe not utf-8", "t"),
                ("odd", b"", None),
                ("odd", b"x" * 5000, "big"),
                ("odd", b"fine", "x\r\ninjected: 1"),
                ("odd", b"a\r\nb\rc", None),
                ("odd", b"last", None),
            ]
            await publish_raw(gw, broker_kind, names, items)
            events = await sub.wait_for(6)
        kinds = [(e.type, e.data) for e in events]
        assert kinds[0][0] == "hopcast-undeliverable"
        assert json.loads(kinds[0][1]) == {"reason": "utf-8", "size": 12, "type": "t"}
        assert kinds[1] == ("message", "")
        assert json.loads(kinds[2][1]) == {"reason": "size", "size": 5000, "type": "big"}
        assert json.loads(kinds[3][1])["reason"] == "type"
        assert kinds[4] == ("message", "a\nb\nc")
        assert kinds[5] == ("message", "last")
        assert sub.ended.is_set() is False or len(events) == 6


async def test_bad_requests_get_problem_details(broker_kind: str, names: Names) -> None:
    async with serve_in_loop(settings_for(broker_kind, names, max_event_bytes=100)) as gw:
        cases = [
            ("GET", "/events/a..b", {}, b"", 400),
            ("GET", "/events/a.b%2A", {}, b"", 400),
            ("GET", "/events/" + "a" * 65, {}, b"", 400),
            ("GET", "/events", {}, b"", 400),
            ("GET", "/events/a", {"Last-Event-ID": "abc"}, b"", 400),
            ("GET", "/events/a", {"Last-Event-ID": "1.5"}, b"", 400),
            ("GET", "/events/a", {"Last-Event-ID": "-2"}, b"", 400),
            ("GET", "/events/a", {"Last-Event-ID": "9" * 30}, b"", 400),
            ("GET", "/events/a?lastEventId=%00", {}, b"", 400),
            ("GET", "/events/a?since=yesterday", {}, b"", 400),
            ("POST", "/events/a.*", {}, b"x", 400),
            ("POST", "/events/a.%23", {}, b"x", 400),
            ("POST", "/events/a?event=hopcast-missed", {}, b"x", 400),
            ("POST", "/events/a?event=x%0Adata:%20evil", {}, b"x", 400),
            ("POST", "/events/a", {}, b"\xff\xfe", 400),
            ("POST", "/events/a", {}, b"x" * 101, 413),
            ("GET", "/nowhere", {}, b"", 404),
            ("DELETE", "/events/a", {}, b"", 405),
        ]
        async with httpx.AsyncClient(base_url=gw.url) as http:
            for method, path, headers, body, status in cases:
                resp = await http.request(method, path, headers=headers, content=body)
                assert resp.status_code == status, (method, path, resp.text)
                assert resp.headers["content-type"] == "application/problem+json"
                problem = resp.json()
                assert problem["status"] == status
                assert problem["title"] and problem["detail"]
            # nothing of that reached the stream
            assert gw.hub.position == -1


async def test_health_ready_and_metrics(broker_kind: str, names: Names) -> None:
    async with serve_in_loop(settings_for(broker_kind, names)) as gw:
        async with httpx.AsyncClient(base_url=gw.url) as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["ready"] is True
            await post(gw.url, "a", b"x")
            metrics = (await http.get("/metrics")).text
        assert "hopcast_subscribers " in metrics
        assert "hopcast_ready 1.0" in metrics


async def test_a_message_the_amqp_client_cannot_parse_is_stepped_over(
    rabbitmq: None, names: Names
) -> None:
    """A non-UTF-8 ``type`` makes the AMQP client drop its connection; nobody gets stuck."""
    async with serve_in_loop(settings_for("amqp", names, ring_size=1)) as gw:
        async with Listener(f"{gw.url}/events/p") as live:
            await live.wait_started()

            def publish_poison() -> None:
                conn = pika.BlockingConnection()
                channel = conn.channel()
                channel.basic_publish(names.exchange, "p", b"before")
                props = pika.BasicProperties(type=b"\xff\xfe")
                channel.basic_publish(names.exchange, "p", b"poison", props)
                channel.basic_publish(names.exchange, "p", b"after")
                conn.close()

            await asyncio.to_thread(publish_poison)
            await live.wait_for(2)
            await publish_raw(gw, "amqp", names, [("p", b"later", None)])
            await live.wait_for(3)
        assert live.data() == ["before", "after", "later"]
        # a resume from before it, served by a catch-up reader, steps over it too
        first = int(live.events[0].last_event_id)
        async with Listener(f"{gw.url}/events/p", {"Last-Event-ID": str(first - 1)}) as back:
            await back.wait_for(3)
        assert back.data() == ["before", "after", "later"]
        assert gw.hub.ready
