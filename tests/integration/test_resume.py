"""Resuming, over HTTP, on the memory broker and on RabbitMQ: from the ring or the stream,
by header, query or time, past the tail, from a heartbeat's id, and across a recreated stream."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta

import aiormq
import pytest

from tests.support.clients import Listener
from tests.support.gateways import Gateway, memory_broker, publish_raw, serve_in_loop, settings_for
from tests.support.rabbitmq import AMQP_URL, Names
from tests.support.waits import until


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
        ids = [int(e.last_event_id) for e in events]
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
            ids = [e.last_event_id for e in await everything.wait_for(5)]
        url = f"{gw.url}/events/a?lastEventId={ids[0]}&since=first"
        async with Listener(url, {"Last-Event-ID": ids[2]}) as sub:
            await sub.wait_for(2)
            await asyncio.sleep(0.2)
        assert sub.data() == ["3", "4"]


@pytest.mark.slow
async def test_since_a_time(broker_kind: str, names: Names) -> None:
    async with serve_in_loop(settings_for(broker_kind, names)) as gw:
        await publish_raw(gw, broker_kind, names, [("a", b"old", None)])
        await asyncio.sleep(2.5)
        # RabbitMQ stamps a stream's chunks by its own clock, to the second, and that
        # clock may run up to a second behind this one after the machine's clock was
        # stepped: a second of margin on each side of the time asked for
        middle = datetime.now(UTC) - timedelta(milliseconds=1200)
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
        assert missed.type == "hopcast-missed"
        info = json.loads(missed.data)
        assert info["reason"] == "reset"
        assert info["requested"] == 999999
        assert int(missed.last_event_id) == info["first"] - 1
        assert [e.data for e in events[1:]] == ["x", "y"]


async def test_heartbeat_moves_the_id_to_the_latest_safe_offset(
    broker_kind: str, names: Names
) -> None:
    async with serve_in_loop(settings_for(broker_kind, names, heartbeat=0.2)) as gw:
        async with Listener(f"{gw.url}/events/mine") as sub:
            await sub.wait_started()
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


@pytest.mark.slow
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
                        await sub.wait_started()
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


@pytest.mark.slow
async def test_stream_recreated_under_a_running_gateway(broker_kind: str, names: Names) -> None:
    async with serve_in_loop(settings_for(broker_kind, names)) as gw:
        async with Listener(f"{gw.url}/events/z") as sub:
            await sub.wait_started()
            await publish_raw(gw, broker_kind, names, [("z", b"%d" % i, None) for i in range(5)])
            await sub.wait_for(5)
            await _delete_stream(gw, broker_kind, names)
            await until(lambda: gw.hub.ready and gw.hub.position == -1, "the new stream read", 30)
            await publish_raw(gw, broker_kind, names, [("z", b"new", None)])
            events = await sub.wait_for(7)
        assert events[5].type == "hopcast-missed"
        assert json.loads(events[5].data)["reason"] == "reset"
        assert (events[6].last_event_id, events[6].data) == ("0", "new")


async def _delete_stream(gw: Gateway, kind: str, names: Names) -> None:
    if kind == "memory":
        memory_broker(gw).reset()
        return
    conn = await aiormq.connect(AMQP_URL)
    channel = await conn.channel()
    await channel.queue_delete(names.stream)
    await conn.close()
