"""The same gateway as a plain ASGI app (as when mounted in another app), under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.routing import Mount

from hopcast import Settings, create_app
from tests.support.clients import Listener, post
from tests.support.gateways import publish_raw, serve_asgi, serve_in_loop, settings_for
from tests.support.rabbitmq import Names


async def test_publish_subscribe_resume_under_uvicorn(broker_kind: str, names: Names) -> None:
    settings = settings_for(broker_kind, names, heartbeat=0.3, ring_size=3)
    async with serve_in_loop(settings, server="uvicorn") as gw:
        async with Listener(f"{gw.url}/events/m.*") as sub:
            await sub.wait_started()
            assert (await post(gw.url, "m.1", b"one", "e")).status_code == 202
            await publish_raw(gw, broker_kind, names, [("m.2", b"%d" % i, None) for i in range(9)])
            events = await sub.wait_for(10)
            await sub.wait_until(lambda s: s.raw.endswith(f"id: {gw.hub.position}\n\n".encode()))
        assert [e.data for e in events] == ["one", *[str(i) for i in range(9)]]
        back_from = events[2].last_event_id
        async with Listener(f"{gw.url}/events/m.*", {"Last-Event-ID": back_from}) as back:
            again = await back.wait_for(7)  # beyond the ring of 3: from the stream
        assert [e.data for e in again] == [str(i) for i in range(2, 9)]
        async with httpx.AsyncClient(base_url=gw.url) as http:
            bad = await http.get("/events/a..b")
            assert bad.status_code == 400
            assert bad.headers["content-type"] == "application/problem+json"


async def test_a_slow_client_is_cut_off_under_uvicorn(names: Names) -> None:
    settings = settings_for("memory", subscriber_buffer=20, max_event_bytes=70_000)
    async with serve_in_loop(settings, server="uvicorn") as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /events/big HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\n\n")
        async with Listener(f"{gw.url}/events/big") as fast:
            await fast.wait_started()
            for _ in range(30):
                await publish_raw(gw, "memory", names, [("big", b"x" * 60_000, None)] * 10)
                await asyncio.sleep(0.02)
            await fast.wait_for(300, timeout=60)
            async with asyncio.timeout(60):
                while gw.hub.stats.slow_disconnects == 0:
                    await asyncio.sleep(0.05)
        writer.close()


def mounting_app(settings: Settings, *, with_lifespan: bool) -> tuple[Starlette, Starlette]:
    """A parent app that mounts the gateway at /live, as the README shows; and the gateway."""
    events = create_app(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with events.router.lifespan_context(events):  # starts and stops the gateway
            yield

    routes = [Mount("/live", app=events)]
    return Starlette(routes=routes, lifespan=lifespan if with_lifespan else None), events


async def test_mounted_in_another_app_under_a_prefix() -> None:
    parent, events = mounting_app(settings_for("memory"), with_lifespan=True)
    async with serve_asgi(parent, gateway=events) as url:
        async with Listener(f"{url}/live/events/m.*") as sub:
            await sub.wait_started()
            assert (await post(f"{url}/live", "m.1", b"one", "e")).status_code == 202
            (event,) = await sub.wait_for(1)
        assert (event.type, event.data) == ("e", "one")
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/live/readyz")).status_code == 200


async def test_mounted_without_its_lifespan_it_says_what_is_missing() -> None:
    parent, _ = mounting_app(settings_for("memory"), with_lifespan=False)
    async with serve_asgi(parent) as url, httpx.AsyncClient(base_url=url) as http:
        for answer in (
            await http.post("/live/events/m.1", content=b"x"),
            await http.get("/live/events/m.1"),
            await http.get("/live/readyz"),
        ):
            assert answer.status_code == 500
            assert answer.headers["content-type"] == "application/problem+json"
            assert "lifespan_context" in answer.json()["detail"]
