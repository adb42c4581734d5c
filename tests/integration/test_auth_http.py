"""JWT rights, CORS and limits as an HTTP client meets them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import jwt
import pytest

from tests.support.clients import Listener, post
from tests.support.gateways import serve_in_loop, settings_for
from tests.support.sse import parse

SECRET = "s3cret-" * 6


def token(subscribe: list[str], publish: list[str] | None = None, **claims: Any) -> str:
    payload: dict[str, Any] = {
        "sub": "alice",
        "exp": int(time.time()) + 3600,
        "hopcast": {"subscribe": subscribe, "publish": publish or []},
    }
    payload.update(claims)
    return jwt.encode(payload, SECRET, algorithm="HS256")


def jwt_settings(**overrides: Any) -> Any:
    return settings_for("memory", auth="jwt", jwt_secret=SECRET, public=("news.#",), **overrides)


async def test_subscribe_rights_by_pattern_containment() -> None:
    async with serve_in_loop(jwt_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        missing = await http.get("/events/orders.1")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == 'Bearer realm="hopcast"'
        assert missing.headers["content-type"] == "application/problem+json"

        bad = await http.get("/events/orders.1", headers={"Authorization": "Bearer x.y.z"})
        assert bad.status_code == 401
        assert 'error="invalid_token"' in bad.headers["www-authenticate"]

        grant = token(["orders.#"])
        wide = await http.get("/events/%23", headers={"Authorization": f"Bearer {grant}"})
        assert wide.status_code == 403
        assert "#" in wide.json()["detail"]
        assert grant not in wide.text and SECRET not in wide.text

        narrow = token(["orders.*"])
        refused = await http.get(
            "/events/orders.%23", headers={"Authorization": f"Bearer {narrow}"}
        )
        assert refused.status_code == 403

        query = await http.get(f"/events/orders.1?access_token={grant}")
        assert query.status_code == 400  # off by default: tokens in URLs end up in logs

    async with serve_in_loop(jwt_settings()) as gw:
        auth = {"Authorization": f"Bearer {token(['orders.*'])}"}
        async with (
            Listener(f"{gw.url}/events/orders.*", auth) as by_header,
            Listener(f"{gw.url}/events/news.today") as public,
            Listener(
                f"{gw.url}/events/orders.7", {"Cookie": f"hopcast_token={token(['orders.7'])}"}
            ) as by_cookie,
        ):
            for sub in (by_header, public, by_cookie):
                await sub.wait_started()
                assert sub.status == 200
            publisher = {"Authorization": f"Bearer {token([], ['#'])}"}
            assert (await post(gw.url, "orders.7", b"paid", headers=publisher)).status_code == 202
            assert (await post(gw.url, "news.today", b"rain", headers=publisher)).status_code == 202
            assert [e.data for e in await by_header.wait_for(1)] == ["paid"]
            assert [e.data for e in await by_cookie.wait_for(1)] == ["paid"]
            assert [e.data for e in await public.wait_for(1)] == ["rain"]


async def test_query_token_when_allowed() -> None:
    async with serve_in_loop(jwt_settings(allow_query_token=True)) as gw:
        url = f"{gw.url}/events/orders.1?access_token={token(['orders.*'])}"
        async with Listener(url) as sub:
            await sub.wait_started()
        assert sub.status == 200


async def test_publish_needs_a_publish_grant() -> None:
    async with serve_in_loop(jwt_settings()) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        reader = {"Authorization": f"Bearer {token(['#'])}"}
        writer = {"Authorization": f"Bearer {token([], ['orders.#'])}"}
        assert (await http.post("/events/orders.1", content=b"x")).status_code == 401
        assert (
            await http.post("/events/orders.1", content=b"x", headers=reader)
        ).status_code == 403
        ok = await http.post("/events/orders.1", content=b"x", headers=writer)
        assert ok.status_code == 202
        elsewhere = await http.post("/events/users.1", content=b"x", headers=writer)
        assert elsewhere.status_code == 403


@pytest.mark.slow
async def test_a_stream_ends_when_its_token_expires() -> None:
    async with serve_in_loop(jwt_settings(heartbeat=0.2)) as gw:
        short = token(["orders.*"], exp=int(time.time()) + 2)
        async with Listener(f"{gw.url}/events/orders.*", {"Authorization": f"Bearer {short}"}) as s:
            await asyncio.wait_for(s.ended.wait(), 30)
        assert s.events[-1].type == "hopcast-token-expired"
        assert s.events[-1].last_event_id == s.last_id  # the expiry moves no resume point


async def test_cors_allows_listed_origins_with_credentials() -> None:
    settings = settings_for("memory", cors_origin=("https://app.example",))
    async with serve_in_loop(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        preflight = await http.options(
            "/events/orders.1",
            headers={
                "Origin": "https://app.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "https://app.example"
        assert preflight.headers["access-control-allow-credentials"] == "true"
        other = await http.options(
            "/events/orders.1",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert other.status_code == 400
        assert other.headers["content-type"] == "application/problem+json"
        assert "origin" in other.json()["detail"]
        assert "access-control-allow-origin" not in other.headers
        method = await http.options(
            "/events/orders.1",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PUT"},
        )
        assert method.status_code == 400 and "method" in method.json()["detail"]
        ok = await http.post(
            "/events/orders.1", content=b"x", headers={"Origin": "https://app.example"}
        )
        assert ok.headers["access-control-allow-origin"] == "https://app.example"


async def test_limits() -> None:
    settings = settings_for(
        "memory",
        max_connections_per_address=2,
        publish_rate=0.01,  # no token comes back while the test runs
        publish_burst=2,
        max_patterns=3,
        max_pattern_depth=4,
        max_url_bytes=300,
        max_header_bytes=2000,
    )
    async with serve_in_loop(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        async with Listener(f"{gw.url}/events/a") as one, Listener(f"{gw.url}/events/a") as two:
            for sub in (one, two):
                await sub.wait_started()
            third = await http.get("/events/a")
            # a browser gives up on a non-200 answer: "come back later" is 200 + retry + end
            assert third.status_code == 200
            assert third.text.startswith("retry: ")
            told = parse(third.content).retry
            assert told is not None and 3000 <= told <= 9000
        codes = [(await http.post("/events/a", content=b"x")).status_code for _ in range(4)]
        assert codes[:2] == [202, 202] and 429 in codes[2:]
        limited = await http.post("/events/a", content=b"x")
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        many = "&".join(f"topic=t{i}" for i in range(4))
        assert (await http.get(f"/events?{many}")).status_code == 400
        over = await http.get("/events/p?topic=q&topic=r&topic=s")  # the path's counts too
        assert over.status_code == 400 and "at most 3 patterns" in over.json()["detail"]
        assert (await http.get("/events/a.b.c.d.e")).status_code == 400
        long_url = await http.get("/events/" + "a." * 200 + "a")
        assert long_url.status_code == 414
        assert long_url.headers["content-type"] == "application/problem+json"
        big = await http.get("/healthz", headers={"X-Pad": "x" * 3000})
        assert big.status_code == 431


async def test_trusted_proxy_addresses_count_per_client() -> None:
    settings = settings_for("memory", max_connections_per_address=1, trusted_proxy=("127.0.0.0/8",))
    async with serve_in_loop(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        first = {"X-Forwarded-For": "203.0.113.7"}
        async with Listener(f"{gw.url}/events/a", first) as sub:
            await sub.wait_started()
            same = await http.get("/events/a", headers=first)
            assert same.text.startswith("retry: ")  # that client is at its limit
            async with Listener(f"{gw.url}/events/a", {"X-Forwarded-For": "203.0.113.8"}) as o:
                await o.wait_started()
    untrusted = settings_for("memory", max_connections_per_address=1)
    async with (
        serve_in_loop(untrusted) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
        Listener(f"{gw.url}/events/a", {"X-Forwarded-For": "203.0.113.7"}) as sub,
    ):
        await sub.wait_started()
        other = await http.get("/events/a", headers={"X-Forwarded-For": "203.0.113.8"})
        assert other.text.startswith("retry: ")  # the header is ignored: same peer
