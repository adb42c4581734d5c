"""HEAD, a method not allowed and an offer to switch protocols, on the native listener and
under uvicorn (the app mounted as plain ASGI)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from tests.support.gateways import serve_in_loop, settings_for
from tests.support.net import exchange


@pytest.mark.parametrize("server", ["native", "uvicorn"])
async def test_head_gets_what_get_would_without_a_body(server: str) -> None:
    """HEAD answers at once, with no body: not even on a subscription, whose stream never
    ends, and not on a kept-alive connection, where a body would be read as the next answer."""
    async with serve_in_loop(settings_for("memory"), server=server) as gw:
        port = gw.port
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
        port = gw.port
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
        port = gw.port
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
