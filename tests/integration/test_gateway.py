"""The gateway's behaviour over HTTP, run once on the memory broker and once on RabbitMQ."""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from hopcast._broker.memory import MemoryBroker
from tests.support import (
    Gateway,
    Listener,
    Names,
    amqp_publish,
    exchange,
    post,
    serve_in_loop,
    settings_for,
    until,
)


async def publish_raw(
    gw: Gateway, kind: str, names: Names, items: Sequence[tuple[str, bytes, str | None]]
) -> None:
    """Publish as a backend service would: straight to the broker, not through the gateway."""
    if kind == "memory":
        broker = gw.hub.broker
        assert isinstance(broker, MemoryBroker)
        for topic, body, event in items:
            broker.append(topic, body, event)
    else:
        await amqp_publish(names, items)


async def test_publish_and_subscribe(broker_kind: str, names: Names) -> None:
    async with serve_in_loop(settings_for(broker_kind, names)) as gw:
        async with Listener(f"{gw.url}/events/orders.*") as sub:
            await sub.wait_until(lambda s: s.last_id is not None)
            resp = await post(gw.url, "orders.42", b'{"order": 42}', "order-paid")
            assert resp.status_code == 202
            await post(gw.url, "users.1", b"not for us")
            await post(gw.url, "orders.43", b"two\nlines")
            events = await sub.wait_for(2)
        assert [(e.event, e.data) for e in events] == [
            ("order-paid", '{"order": 42}'),
            ("message", "two\nlines"),
        ]
        assert int(events[0].id) < int(events[1].id)
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
                await s.wait_until(lambda s: s.last_id is not None)
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
        ids = [int(e.id) for e in got]
        assert ids == sorted(ids) and len(set(ids)) == 30
        assert {e.event for e in got} == {"order-paid"}


@pytest.mark.parametrize("ring_size", [10_000, 3], ids=["from-ring", "from-stream"])
async def test_resume_gets_every_event_after_the_id_then_live(
    broker_kind: str, names: Names, ring_size: int
) -> None:
    settings = settings_for(broker_kind, names, ring_size=ring_size)
    async with serve_in_loop(settings) as gw:
        items = [(f"t.{i % 2}", f"{i}".encode(), None) for i in range(40)]
        await publish_raw(gw, broker_kind, names, items)
        async with Listener(f"{gw.url}/events/t.%23") as first:
            pass
        async with Listener(f"{gw.url}/events/t.%23?since=first") as all_events:
            events = await all_events.wait_for(40)
        ids = [int(e.id) for e in events]
        after = ids[9]
        async with (
            Listener(f"{gw.url}/events/t.0", {"Last-Event-ID": str(after)}) as header,
            Listener(f"{gw.url}/events/t.0?lastEventId={after}") as query,
        ):
            expected = [str(i) for i in range(10, 40) if i % 2 == 0]
            for s in (header, query):
                await s.wait_for(len(expected))
            await publish_raw(gw, broker_kind, names, [("t.0", b"live", None)])
            for s in (header, query):
                got = await s.wait_for(len(expected) + 1)
                assert [e.data for e in got] == [*expected, "live"]
        del first


async def test_header_wins_over_query_and_since(broker_kind: str, names: Names) -> None:
    async with serve_in_loop(settings_for(broker_kind, names)) as gw:
        await publish_raw(gw, broker_kind, names, [("a", f"{i}".encode(), None) for i in range(5)])
        async with Listener(f"{gw.url}/events/a?since=first") as everything:
            ids = [e.id for e in await everything.wait_for(5)]
        url = f"{gw.url}/events/a?lastEventId={ids[0]}&since=first"
        async with Listener(url, {"Last-Event-ID": ids[2]}) as sub:
            await sub.wait_for(2)
            await asyncio.sleep(0.2)
        assert sub.data() == ["3", "4"]


async def test_since_a_time(broker_kind: str, names: Names) -> None:
    async with serve_in_loop(settings_for(broker_kind, names)) as gw:
        await publish_raw(gw, broker_kind, names, [("a", b"old", None)])
        await asyncio.sleep(1.5)
        middle = datetime.now(UTC) - timedelta(milliseconds=200)
        await publish_raw(gw, broker_kind, names, [("a", b"new", None)])
        async with Listener(f"{gw.url}/events/a?since={middle.isoformat()}") as sub:
            await sub.wait_for(1)
            await asyncio.sleep(0.3)
        assert sub.data() == ["new"]


async def test_resume_beyond_the_tail_says_reset_and_continues(
    broker_kind: str, names: Names
) -> None:
    async with serve_in_loop(settings_for(broker_kind, names)) as gw:
        await publish_raw(gw, broker_kind, names, [("a", b"x", None), ("a", b"y", None)])
        async with Listener(f"{gw.url}/events/a", {"Last-Event-ID": "999999"}) as sub:
            events = await sub.wait_for(3)
        missed = events[0]
        assert missed.event == "hopcast-missed"
        info = json.loads(missed.data)
        assert info["reason"] == "reset"
        assert info["requested"] == 999999
        assert int(missed.id) == info["first"] - 1
        assert [e.data for e in events[1:]] == ["x", "y"]


async def test_heartbeat_moves_the_id_to_the_latest_safe_offset(
    broker_kind: str, names: Names
) -> None:
    async with serve_in_loop(settings_for(broker_kind, names, heartbeat=0.2)) as gw:
        async with Listener(f"{gw.url}/events/mine") as sub:
            await sub.wait_until(lambda s: s.last_id is not None)
            await publish_raw(gw, broker_kind, names, [("other", b"1", None)] * 5)
            position = gw.hub.position
            await until(lambda: gw.hub.position >= position, "the hub at the position", 10)
            await sub.wait_until(lambda s: s.last_id == str(gw.hub.position), timeout=10)
            assert sub.events == []
            # resuming from the heartbeat id loses nothing that came after it
            await publish_raw(gw, broker_kind, names, [("mine", b"after", None)])
            await sub.wait_for(1)
        last = sub.last_id
        assert last is not None
        async with Listener(f"{gw.url}/events/mine", {"Last-Event-ID": str(int(last) - 1)}) as r:
            assert [e.data for e in await r.wait_for(1)] == ["after"]


async def test_odd_bodies_published_straight_to_the_broker(broker_kind: str, names: Names) -> None:
    settings = settings_for(broker_kind, names, max_event_bytes=1000)
    async with serve_in_loop(settings) as gw:
        async with Listener(f"{gw.url}/events/odd") as sub:
            await sub.wait_until(lambda s: s.last_id is not None)
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
        kinds = [(e.event, e.data) for e in events]
        assert kinds[0][0] == "hopcast-undeliverable"
        assert json.loads(kinds[0][1]) == {"reason": "utf-8", "size": 12, "type": "t"}
        assert kinds[1] == ("message", "")
        assert json.loads(kinds[2][1]) == {"reason": "size", "size": 5000, "type": "big"}
        assert json.loads(kinds[3][1])["reason"] == "type"
        assert kinds[4] == ("message", "a\nb\nc")
        assert kinds[5] == ("message", "last")
        assert sub.ended.is_set() is False or len(events) == 6


async def test_resume_exactness_while_subscribers_reconnect(broker_kind: str, names: Names) -> None:
    """Many subscribers drop and resume while events flow; each ends with the exact sequence."""
    total = 300
    settings = settings_for(broker_kind, names, ring_size=50)
    async with serve_in_loop(settings) as gw:
        done = asyncio.Event()

        async def publisher() -> None:
            for i in range(total):
                await publish_raw(gw, broker_kind, names, [(f"seq.{i % 3}", f"{i}".encode(), None)])
                if i % 10 == 0:
                    await asyncio.sleep(0.01)
            done.set()

        async def subscriber(seed: int) -> list[str]:
            rnd = random.Random(seed)
            got: list[str] = []
            last: str | None = None
            while True:
                headers = {"Last-Event-ID": last} if last is not None else {}
                async with Listener(f"{gw.url}/events/seq.%23", headers) as sub:
                    if last is None:
                        await sub.wait_until(lambda s: s.last_id is not None)
                        live.append(seed)
                        if len(live) == subscribers:
                            all_live.set()
                    want = len(got) + rnd.randint(1, 60)
                    await sub.wait_for(min(want, total - len(got)), timeout=60)
                    got.extend(sub.data())
                    last = sub.last_id
                if len(got) >= total:
                    return got

        subscribers, live, all_live = 12, list[int](), asyncio.Event()
        subs = [asyncio.create_task(subscriber(n)) for n in range(subscribers)]
        await asyncio.wait_for(all_live.wait(), 60)  # each is live before the first event
        pub = asyncio.create_task(publisher())
        results = await asyncio.wait_for(asyncio.gather(*subs), 240)
        await pub
        for got in results:
            assert got == [str(i) for i in range(total)]


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


async def test_stream_recreated_under_a_running_gateway(broker_kind: str, names: Names) -> None:
    async with serve_in_loop(settings_for(broker_kind, names)) as gw:
        async with Listener(f"{gw.url}/events/z") as sub:
            await sub.wait_until(lambda s: s.last_id is not None)
            await publish_raw(gw, broker_kind, names, [("z", b"%d" % i, None) for i in range(5)])
            await sub.wait_for(5)
            await _delete_stream(gw, broker_kind, names)
            await wait_ready_again(gw)
            await publish_raw(gw, broker_kind, names, [("z", b"new", None)])
            events = await sub.wait_for(7)
        assert events[5].event == "hopcast-missed"
        assert json.loads(events[5].data)["reason"] == "reset"
        assert (events[6].id, events[6].data) == ("0", "new")


async def _delete_stream(gw: Gateway, kind: str, names: Names) -> None:
    if kind == "memory":
        broker = gw.hub.broker
        assert isinstance(broker, MemoryBroker)
        broker.reset()
        return
    import aiormq

    from tests.support import AMQP_URL

    conn = await aiormq.connect(AMQP_URL)
    channel = await conn.channel()
    await channel.queue_delete(names.stream)
    await conn.close()


async def wait_ready_again(gw: Gateway) -> None:
    async with asyncio.timeout(30):
        while not (gw.hub.ready and gw.hub.position == -1):
            await asyncio.sleep(0.05)


async def test_a_message_the_amqp_client_cannot_parse_is_stepped_over(
    rabbitmq: None, names: Names
) -> None:
    """A non-UTF-8 ``type`` makes the AMQP client drop its connection; nobody gets stuck."""
    import pika

    async with serve_in_loop(settings_for("amqp", names, ring_size=1)) as gw:
        async with Listener(f"{gw.url}/events/p") as live:
            await live.wait_until(lambda s: s.last_id is not None)

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
        first = int(live.events[0].id)
        async with Listener(f"{gw.url}/events/p", {"Last-Event-ID": str(first - 1)}) as back:
            await back.wait_for(3)
        assert back.data() == ["before", "after", "later"]
        assert gw.hub.ready


@pytest.mark.parametrize("server", ["native", "uvicorn"])
async def test_head_gets_what_get_would_without_a_body(server: str) -> None:
    """HEAD answers at once, with no body: not even on a subscription, whose stream never
    ends, and not on a kept-alive connection, where a body would be read as the next answer."""
    async with serve_in_loop(settings_for("memory"), server=server) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        close = b"Host: x\r\nConnection: close\r\n\r\n"
        kept = await asyncio.to_thread(
            exchange,
            port,
            b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n" + close,
        )
        head, _, rest = kept.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"content-length: 18" in head.lower()
        assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b'{"status":"alive"}')
        stream = await asyncio.to_thread(exchange, port, b"HEAD /events/a.b HTTP/1.1\r\n" + close)
        head, _, body = stream.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and body == b"", stream
        assert b"content-type: text/event-stream; charset=utf-8" in head.lower()
        assert gw.hub.subscribers == 0
        refused = await asyncio.to_thread(exchange, port, b"HEAD /events/a..b HTTP/1.1\r\n" + close)
        head, _, body = refused.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 ") and body == b"", refused
        assert b"content-type: application/problem+json" in head.lower()


@pytest.mark.parametrize("server", ["native", "uvicorn"])
async def test_a_method_not_allowed_names_every_method_that_is(server: str) -> None:
    async with serve_in_loop(settings_for("memory"), server=server) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        for target, allowed in [
            (b"/events/a", {"GET", "HEAD", "POST"}),
            (b"/events", {"GET", "HEAD"}),
            (b"/healthz", {"GET", "HEAD"}),
        ]:
            answer = await asyncio.to_thread(
                exchange,
                port,
                b"DELETE " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            head = answer.partition(b"\r\n\r\n")[0].decode().lower().split("\r\n")
            assert head[0].startswith("http/1.1 405 "), answer
            allow = next(line.split(":", 1)[1] for line in head if line.startswith("allow:"))
            assert {m.strip().upper() for m in allow.split(",")} == allowed, answer


@pytest.mark.parametrize("server", ["native", "uvicorn"])
async def test_an_offer_to_switch_protocols_is_answered_in_http_1_1(server: str) -> None:
    """Java's HttpClient offers h2c on every http:// request; a gateway that refused the
    offer instead of ignoring it (RFC 9110 §7.8) would refuse those clients."""
    h2c = (
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n"
    )
    websocket = b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    async with serve_in_loop(settings_for("memory"), server=server) as gw:
        port = int(gw.url.rsplit(":", 1)[1])
        # (uvicorn, running the mounted app, takes websocket offers up itself)
        offers = (h2c, websocket) if server == "native" else (h2c,)
        for offer, path in itertools.product(offers, (b"/healthz", b"/events/a")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n" + offer + b"\r\n")
            async with asyncio.timeout(30):
                head = (await reader.readuntil(b"\r\n\r\n")).lower()
                assert head.startswith(b"http/1.1 200 "), (path, head)
                if path == b"/healthz":
                    assert await reader.readexactly(18) == b'{"status":"alive"}'
                else:
                    assert b"text/event-stream" in head
                    assert b"retry: " in await reader.readuntil(b"\n\n")
            writer.close()
            await writer.wait_closed()
        if server == "native":  # a CONNECT has no HTTP/1.1 answer but a refusal
            refused = await asyncio.to_thread(exchange, port, b"CONNECT x:443 HTTP/1.1\r\n\r\n")
            head = refused.partition(b"\r\n\r\n")[0].lower()
            assert head.startswith(b"http/1.1 4"), refused
            assert b"content-type: application/problem+json" in head, refused
