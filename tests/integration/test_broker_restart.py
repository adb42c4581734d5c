"""A RabbitMQ restart while clients are connected: nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest

from tests.support.clients import Listener
from tests.support.gateways import serve_in_loop, settings_for
from tests.support.proxy import BlackHoleProxy
from tests.support.rabbitmq import Names, amqp_host_port, amqp_publish, rabbitmq_stopped
from tests.support.waits import wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]


@pytest.mark.broker_restart
async def test_broker_restart_with_connected_clients(names: Names) -> None:
    settings = settings_for("amqp", names, amqp_heartbeat=2)
    async with serve_in_loop(settings) as gw:
        patterns = ["r.%23", "r.1", "r.*"]
        async with (
            Listener(f"{gw.url}/events/{patterns[0]}") as everything,
            Listener(f"{gw.url}/events/{patterns[1]}") as ones,
            Listener(f"{gw.url}/events/{patterns[2]}") as stars,
        ):
            subs = [everything, ones, stars]
            for sub in subs:
                await sub.wait_started()
            await amqp_publish(names, [(f"r.{i % 3}", b"%d" % i, None) for i in range(30)])
            await everything.wait_for(30)
            async with rabbitmq_stopped(), httpx.AsyncClient(base_url=gw.url) as http:
                await wait_ready(gw.url, ready=False)
                refused = await http.post("/events/r.1", content=b"while away")
                assert refused.status_code == 503
                assert "retry-after" in refused.headers
            await wait_ready(gw.url)
            # the gateway waits up to 10 s for a confirm; httpx's own default is 5
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as http:
                # the gateway's own publish path is back too (confirmed and routed)
                for _ in range(100):
                    resp = await http.post("/events/r.1", content=b"30")
                    if resp.status_code == 202:
                        break
                    await asyncio.sleep(0.2)
                assert resp.status_code == 202
            await amqp_publish(names, [(f"r.{i % 3}", b"%d" % i, None) for i in range(31, 60)])
            await everything.wait_for(60, timeout=60)
            await ones.wait_for(20, timeout=60)
            await stars.wait_for(60, timeout=60)
            await asyncio.sleep(0.5)
        assert everything.data() == [str(i) for i in range(60)]
        assert stars.data() == [str(i) for i in range(60)]
        assert ones.data() == [str(i) for i in range(60) if i % 3 == 1 or i == 30]
        for sub in subs:
            ids = sub.ids()
            assert ids == sorted(set(ids))


async def test_a_reconnect_just_before_a_new_segment_is_not_taken_for_retention(
    names: Names,
) -> None:
    """Each stream segment opens with a record of RabbitMQ's own, which takes an offset:
    the offset after the live reader's position may never hold an event. One event at a
    time, each published while the reader is cut off, until segments have turned over."""
    async with BlackHoleProxy(*amqp_host_port()) as proxy:
        proxied = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        settings = settings_for("amqp", names, broker=(proxied,), stream_segment_bytes=2000)
        async with serve_in_loop(settings) as gw, Listener(f"{gw.url}/events/s") as sub:
            await sub.wait_started()
            for n in range(30):
                for link in proxy.links:  # the gateway's connections drop (ours go direct)
                    link.abort()
                proxy.links.clear()
                await amqp_publish(names, [("s", b"%d" % n, None)])
                await sub.wait_for(n + 1)
    offsets = sub.ids()
    assert any(b > a + 1 for a, b in itertools.pairwise(offsets)), offsets  # segments turned
    assert [(e.type, e.data) for e in sub.events] == [("message", str(n)) for n in range(30)]
