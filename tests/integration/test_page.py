"""The live page at ``GET /`` in a real headless Chromium: its own EventSource, publishing,
a resume across a gateway restart, a prefix, and the setting that turns it on or off."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest
from playwright.async_api import Browser, Page
from starlette.applications import Starlette
from starlette.routing import Mount

from hopcast._http.app import create_app
from hopcast._http.page import CONTENT_SECURITY_POLICY
from tests.support.browser import chromium, wait_true
from tests.support.gateways import serve_asgi, serve_in_loop, settings_for
from tests.support.processes import ChildGateway
from tests.support.rabbitmq import Names, amqp_publish
from tests.support.waits import wait_ready

ROWS = """Array.from(document.querySelectorAll('#rows tr')).reverse().map(
  (r) => [r.className, ...Array.from(r.cells).slice(0, 3).map((c) => c.textContent)])"""
"""The page's table, oldest first: [kind, id, event, data] ("notice", "missed" or "")."""
SECRET = "a page-test secret of more than 32 bytes"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def rows(page: Page) -> list[list[str]]:
    found: list[list[str]] = await page.evaluate(ROWS)
    return found


async def events(page: Page, count: int) -> list[list[str]]:
    """Wait for ``count`` event rows; every row, notices included."""
    await wait_true(page, f"({ROWS}).filter((r) => r[0] === '').length >= {count}")
    return await rows(page)


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.usefixtures("rabbitmq")
async def test_the_page_shows_what_rabbitmq_carries_and_resumes_after_a_restart(
    browser: Browser, names: Names
) -> None:
    env = {**names.env(), "HOPCAST_RETRY": "300", "HOPCAST_SHUTDOWN_GRACE": "1"}
    gateway = ChildGateway(env)
    page = await browser.new_page()
    try:
        await wait_ready(gateway.url)
        await page.goto(f"{gateway.url}/?topic=orders.*&event=paid")
        assert await page.input_value("#patterns") == "orders.*"  # ?topic= preselects
        assert await page.input_value("#names") == "paid"
        await wait_true(page, "document.getElementById('status').textContent.startsWith('live')")
        await amqp_publish(names, [("orders.1", b"0", "paid"), ("orders.2", b"1", None)])
        await amqp_publish(names, [("users.1", b"not mine", None), ("orders.3", b"2", None)])
        before = await events(page, 3)
        last = before[-1][1]
        assert await page.text_content("#last-id") == last

        gateway.close()  # the page's EventSource keeps trying, as browsers do
        await wait_true(page, "document.getElementById('status').textContent === 'reconnecting…'")
        await amqp_publish(names, [("orders.4", b"3", "paid"), ("orders.5", b"4", None)])
        gateway = ChildGateway(env, port=gateway.port)
        await amqp_publish(names, [("orders.6", b"5", None)])
        after = await events(page, 6)
    finally:
        await page.close()
        gateway.close()
    shown = [r for r in after if r[0] == ""]
    assert [r[3] for r in shown] == ["0", "1", "2", "3", "4", "5"]  # none lost, none twice
    assert [r[2] for r in shown] == ["paid", "message", "message", "paid", "message", "message"]
    ids = [int(r[1]) for r in shown]
    assert ids == sorted(set(ids))
    notices = [r[3] for r in after if r[0] == "notice"]
    assert notices[0] == f"connection lost; reconnecting (it resumes after event {last})"
    assert f"reconnected: resumed after event {last}" in notices


@pytest.mark.browser
async def test_publishing_from_the_page_and_what_it_says_of_refusals(browser: Browser) -> None:
    async with serve_in_loop(settings_for("memory")) as gw:
        page = await browser.new_page()
        await page.goto(f"{gw.url}/?topic=orders.*")
        await wait_true(page, "document.getElementById('status').textContent.startsWith('live')")
        await _publish(page, "orders.1", "paid", '{"order": 1}')
        assert await page.text_content("#publish-result") == "published on orders.1 (12 bytes)"
        await _publish(page, "orders.2", "", "two\nlines?")
        shown = await events(page, 2)
        assert [r[2:] for r in shown] == [["paid", '{"order": 1}'], ["message", "two\nlines?"]]
        assert "?topic=orders.*" in await page.evaluate("location.search")  # a link to share

        for topic, data, words in [
            ("orders.*", "x", "400 Bad request: a topic may not contain '*'"),
            ("", "x", "name a topic"),
        ]:
            await _publish(page, topic, "hopcast-x" if topic == "" else "", data)
            result = await page.text_content("#publish-result")
            assert result is not None and result.startswith(words), result
        await _publish(page, "orders.3", "hopcast-mine", "x")
        assert "reserved" in (await page.text_content("#publish-result") or "")

        await page.goto(f"{gw.url}/?topic=orders..x")  # refused: the page says why
        status = "document.getElementById('status').textContent"
        await wait_true(page, f"{status}.startsWith('refused')")
        assert "400 Bad request: pattern has an empty word" in await page.evaluate(status)
        await page.close()


@pytest.mark.browser
async def test_the_page_works_mounted_under_a_prefix(browser: Browser) -> None:
    events_app = create_app(settings_for("memory"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with events_app.router.lifespan_context(events_app):
            yield

    parent = Starlette(routes=[Mount("/live", app=events_app)], lifespan=lifespan)
    async with serve_asgi(parent, gateway=events_app) as url:
        page = await browser.new_page()
        await page.goto(f"{url}/live?topic=a.*")  # redirected to /live/?topic=a.*
        assert page.url == f"{url}/live/?topic=a.*"
        await wait_true(page, "document.getElementById('status').textContent.startsWith('live')")
        await _publish(page, "a.b", "", "through /live")
        shown = await events(page, 1)
        assert shown[-1][2:] == ["message", "through /live"]
        await page.close()


@pytest.mark.parametrize(
    ("overrides", "served"),
    [
        ({}, True),
        ({"page": "off"}, False),
        ({"auth": "jwt", "jwt_secret": SECRET}, False),
        ({"auth": "jwt", "jwt_secret": SECRET, "page": "on"}, True),
    ],
)
async def test_the_page_follows_its_setting(overrides: dict[str, Any], served: bool) -> None:
    async with (
        serve_in_loop(settings_for("memory", **overrides)) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        for path, kind in [("/", "text/html"), ("/page.js", "text/javascript")]:
            response = await http.get(path)
            if not served:
                assert response.status_code == 404, path
                continue
            assert response.status_code == 200, path
            assert response.headers["content-type"].startswith(kind)
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        if served:
            page = (await http.get("/")).text
            assert 'src="page.js"' in page and "<script>" not in page  # relative, nothing inline
            assert (await http.head("/")).status_code == 200
        assert (await http.post("/", content=b"x")).status_code == 405 if served else 404


@pytest.mark.browser
async def test_with_jwt_the_page_subscribes_with_the_cookie(browser: Browser) -> None:
    settings = settings_for("memory", auth="jwt", jwt_secret=SECRET, page="on")
    claims = {"exp": int(time.time() + 3600), "hopcast": {"subscribe": ["a.*"], "publish": ["a.*"]}}
    async with serve_in_loop(settings) as gw:
        context = await browser.new_context()
        await context.add_cookies(
            [{"name": "hopcast_token", "value": jwt.encode(claims, SECRET), "url": gw.url}]
        )
        page = await context.new_page()
        await page.goto(f"{gw.url}/?topic=a.*")
        await wait_true(page, "document.getElementById('status').textContent.startsWith('live')")
        await _publish(page, "a.b", "", "with the cookie")
        assert (await events(page, 1))[-1][3] == "with the cookie"
        await page.goto(f"{gw.url}/?topic=b.*")  # not granted: the page says so
        await wait_true(page, "document.getElementById('status').textContent.includes('403')")
        await context.close()


async def _publish(page: Page, topic: str, event: str, data: str) -> None:
    await page.fill("#pub-topic", topic)
    await page.fill("#pub-event", event)
    await page.fill("#pub-data", data)
    await page.evaluate("document.getElementById('publish-result').textContent = ''")
    await page.click("#publish button")
    await wait_true(page, "document.getElementById('publish-result').textContent !== ''")
