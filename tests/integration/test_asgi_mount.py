"""The same gateway as a plain ASGI app (as when mounted in another app), under uvicorn."""

from __future__ import annotations

import asyncio

import httpx

from tests.integration.test_gateway import publish_raw
from tests.support import Listener, Names, post, serve_in_loop, settings_for


async def test_publish_subscribe_resume_under_uvicorn(broker_kind: str, names: Names) -> None:
    settings = settings_for(broker_kind, names, heartbeat=0.3, ring_size=3)
    async with serve_in_loop(settings, server="uvicorn") as gw:
        async with Listener(f"{gw.url}/events/m.*") as sub:
            await sub.wait_until(lambda s: s.last_id is not None)
            assert (await post(gw.url, "m.1", b"one", "e")).status_code == 202
            await publish_raw(gw, broker_kind, names, [("m.2", b"%d" % i, None) for i in range(9)])
            events = await sub.wait_for(10)
            await sub.wait_until(lambda s: s.raw.endswith(f"id: {gw.hub.position}\n\n".encode()))
        assert [e.data for e in events] == ["one", *[str(i) for i in range(9)]]
        back_from = events[2].id
        async with Listener(f"{gw.url}/events/m.*", {"Last-Event-ID": back_from}) as back:
            again = await back.wait_for(7)  # beyond the ring of 3: from the stream
        assert [e.data for e in again] == [str(i) for i in range(2, 9)]
        async with httpx.AsyncClient(base_url=gw.url) as http:
            bad = await http.get("/events/a..b")
            assert bad.status_code == 400
            assert bad.headers["content-type"] == "application/problem+json"


async def test_a_slow_client_is_cut_off_under_uvicorn(names: Names) -> None:
    settings = settings_for("memory", queue_size=20, max_event_bytes=70_000)
    async with serve_in_loop(settings, server="uvicorn") as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))
        writer.write(b"GET /events/big HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\n\n")
        async with Listener(f"{gw.url}/events/big") as fast:
            await fast.wait_until(lambda s: s.last_id is not None)
            for _ in range(30):
                await publish_raw(gw, "memory", names, [("big", b"x" * 60_000, None)] * 10)
                await asyncio.sleep(0.02)
            await fast.wait_for(300, timeout=60)
            async with asyncio.timeout(60):
                while gw.hub.stats.slow_disconnects == 0:
                    await asyncio.sleep(0.05)
        writer.close()
