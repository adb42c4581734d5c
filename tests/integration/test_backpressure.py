"""Slow clients, a broker that is away, and retention telling a resume what it missed."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest

from tests.support.clients import Listener
from tests.support.gateways import (
    create_app_server,
    memory_broker,
    publish_raw,
    serve_in_loop,
    settings_for,
)
from tests.support.net import free_port
from tests.support.rabbitmq import Names
from tests.support.sse import EventStream
from tests.support.waits import until


async def _raw_subscriber(
    url: str, path: str, headers: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=2**16)
    writer.transport.set_write_buffer_limits(0)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{headers}\r\n"
    writer.write(request.encode())
    await writer.drain()
    return reader, writer


@pytest.mark.slow
async def test_a_slow_client_is_cut_off_and_catches_up(broker_kind: str, names: Names) -> None:
    total = 300
    settings = settings_for(broker_kind, names, subscriber_buffer=50, max_event_bytes=70_000)
    async with serve_in_loop(settings) as gw:
        reader, writer = await _raw_subscriber(gw.url, "/events/big")
        # shrink what the kernel buffers for this client, so it fills quickly
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        stream = EventStream()
        while not stream.last_event_id:  # a fresh subscription begins with its position
            piece = await reader.read(4096)
            assert piece, "the stream ended before it told its position"
            stream.feed(piece)
        start_id = stream.last_event_id
        async with Listener(f"{gw.url}/events/big") as fast:
            await fast.wait_started()
            body = b"x" * 60_000
            for i in range(0, total, 10):
                batch = [("big", body + b"%03d" % n, None) for n in range(i, i + 10)]
                await publish_raw(gw, broker_kind, names, batch)
                await asyncio.sleep(0.02)
            got = await fast.wait_for(total, timeout=60)
            assert len(got) == total
            await until(lambda: gw.hub.stats.slow_disconnects > 0, "the slow client cut off")
        assert gw.hub.stats.slow_disconnects == 1
        writer.close()
        # it comes back with its last id and gets everything, in order
        async with Listener(f"{gw.url}/events/big", {"Last-Event-ID": start_id}) as back:
            again = await back.wait_for(total, timeout=60)
        assert [e.data[-3:] for e in again] == [f"{i:03d}" for i in range(total)]


async def test_memory_retention_gives_missed_event() -> None:
    settings = settings_for("memory", memory_max_events=10, ring_size=5)
    async with serve_in_loop(settings) as gw:
        broker = memory_broker(gw)
        for i in range(30):
            broker.append("r", str(i).encode(), None)
        async with Listener(f"{gw.url}/events/r", {"Last-Event-ID": "3"}) as sub:
            events = await sub.wait_for(11)
        missed = json.loads(events[0].data)
        assert events[0].type == "hopcast-missed"
        assert missed == {"reason": "retention", "requested": 3, "first": 20}
        assert events[0].last_event_id == "19"
        assert [e.data for e in events[1:]] == [str(i) for i in range(20, 30)]


async def test_rabbitmq_retention_gives_missed_event(rabbitmq: None, names: Names) -> None:
    settings = settings_for(
        "amqp", names, stream_max_bytes=3000, stream_segment_bytes=1000, ring_size=2
    )
    async with serve_in_loop(settings) as gw:
        for i in range(60):
            await publish_raw(gw, "amqp", names, [("r", f"{i:03d}".ljust(100).encode(), None)])
        async with Listener(f"{gw.url}/events/r", {"Last-Event-ID": "0"}) as sub:
            events = await sub.wait_for(2)
        assert events[0].type == "hopcast-missed"
        info = json.loads(events[0].data)
        assert info["reason"] == "retention" and info["requested"] == 0 and info["first"] > 1
        assert int(events[1].last_event_id) == info["first"]


async def test_broker_away_subscriptions_accepted_publish_503(names: Names) -> None:
    port = free_port()  # nothing listens here
    settings = settings_for("amqp", names, broker=(f"amqp://guest:guest@127.0.0.1:{port}/",))
    async with (
        create_app_server(settings) as (url, _app),
        httpx.AsyncClient(base_url=url) as http,
    ):
        assert (await http.get("/healthz")).status_code == 200
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        resp = await http.post("/events/a", content=b"x")
        assert resp.status_code == 503
        assert resp.headers["retry-after"].isdigit()
        assert resp.headers["content-type"] == "application/problem+json"
        async with Listener(f"{url}/events/a") as sub:
            await sub.wait_until(lambda s: len(s.raw) > 0, timeout=10)
            assert sub.status == 200
