"""A real headless Chromium's EventSource against the gateway: resume without loss or repeat."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from tests.support.browser import chromium, wait_true
from tests.support.gateways import Gateway, publish_raw, serve_in_loop, settings_for
from tests.support.rabbitmq import Names

pytestmark = pytest.mark.browser

SUBSCRIBE = """
(path) => {
  window.got = []; window.opens = 0; window.errors = 0;
  const source = new EventSource(path);
  window.source = source;
  source.onopen = () => { window.opens += 1; };
  source.onerror = () => { window.errors += 1; };
  source.onmessage = (e) => window.got.push([e.lastEventId, "message", e.data]);
  source.addEventListener("tick", (e) => window.got.push([e.lastEventId, "tick", e.data]));
}
"""


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def _wait(page: Page, expression: str, timeout: float = 30) -> Any:
    return await wait_true(page, expression, timeout)


def _cut_everyone(gw: Gateway) -> None:
    for sub in list(gw.hub._subscriptions):
        sub.close("test")


async def test_eventsource_resumes_after_a_cut_without_loss_or_repeat(
    browser: Browser, broker_kind: str, names: Names
) -> None:
    settings = settings_for(broker_kind, names, retry=300, heartbeat=0.3)
    async with serve_in_loop(settings) as gw:
        page = await browser.new_page()
        await page.goto(f"{gw.url}/healthz")  # same origin as the stream
        await page.evaluate(SUBSCRIBE, "/events/b.*")
        await _wait(page, "window.opens === 1")
        await publish_raw(gw, broker_kind, names, [("b.1", b"%d" % i, "tick") for i in range(5)])
        await _wait(page, "window.got.length === 5")

        _cut_everyone(gw)  # the stream ends; the browser reconnects with Last-Event-ID
        await publish_raw(gw, broker_kind, names, [("b.2", b"%d" % i, None) for i in range(5, 10)])
        await _wait(page, "window.opens === 2")
        await publish_raw(
            gw, broker_kind, names, [("b.1", b"%d" % i, "tick") for i in range(10, 12)]
        )
        got = await _wait(page, "window.got.length === 12 && window.got")
        await asyncio.sleep(0.5)
        got = await page.evaluate("window.got")
        assert [g[2] for g in got] == [str(i) for i in range(12)]
        assert [g[1] for g in got] == ["tick"] * 5 + ["message"] * 5 + ["tick"] * 2
        ids = [int(g[0]) for g in got]
        assert ids == sorted(set(ids))
        await page.close()


async def test_heartbeat_id_moves_the_browsers_resume_point(
    browser: Browser, broker_kind: str, names: Names
) -> None:
    settings = settings_for(broker_kind, names, retry=300, heartbeat=0.2)
    async with serve_in_loop(settings) as gw:
        page = await browser.new_page()
        await page.goto(f"{gw.url}/healthz")
        await page.evaluate(SUBSCRIBE, "/events/mine")
        await _wait(page, "window.opens === 1")
        await publish_raw(gw, broker_kind, names, [("other", b"x", None)] * 3)
        async with asyncio.timeout(30):
            while gw.hub.position < 2 or gw.hub.position < gw.hub.tail_hint:
                await asyncio.sleep(0.05)
        target = gw.hub.position
        await asyncio.sleep(3.0)  # heartbeats every 0.2 s carry the new position
        seen = []
        real_subscribe = gw.hub.subscribe

        def spy(*args: Any, **kwargs: Any) -> Any:
            seen.append(kwargs.get("after"))
            return real_subscribe(*args, **kwargs)

        gw.hub.subscribe = spy  # type: ignore[method-assign]
        _cut_everyone(gw)
        await _wait(page, "window.opens === 2")
        assert seen == [target]
        assert await page.evaluate("window.got.length") == 0
        await page.close()


async def test_an_eventsource_over_the_limit_comes_back_once_there_is_room(
    browser: Browser,
) -> None:
    settings = settings_for("memory", retry=200, max_connections=1)
    async with serve_in_loop(settings) as gw:
        first = await browser.new_page()
        await first.goto(f"{gw.url}/healthz")
        await first.evaluate(SUBSCRIBE, "/events/room")
        await _wait(first, "window.opens === 1")
        second = await browser.new_page()
        await second.goto(f"{gw.url}/healthz")
        await second.evaluate(SUBSCRIBE, "/events/room")
        # told to come back later: it keeps retrying (200 + retry:), it never gives up
        await _wait(second, "window.opens >= 2")
        assert await second.evaluate("window.source.readyState") != 2  # not CLOSED
        assert gw.hub.stats.refused_connections >= 2
        await first.evaluate("window.source.close()")
        await publish_raw(gw, "memory", Names.fresh(), [("room", b"hello", "tick")])
        async with asyncio.timeout(30):
            while (await second.evaluate("window.got.length")) == 0:
                await asyncio.sleep(0.2)
                await publish_raw(gw, "memory", Names.fresh(), [("room", b"hello", "tick")])
        got = await second.evaluate("window.got")
        assert got[0][2] == "hello"
        await first.close()
        await second.close()
