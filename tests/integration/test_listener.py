"""HTTP/1.1 as the streaming listener speaks it: keep-alive, pipelining, 100-continue, garbage."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from hopcast._http import connection as listener
from hopcast._http import writes as coalescing
from tests.support.clients import Listener
from tests.support.gateways import Gateway, publish_raw, serve_in_loop, settings_for
from tests.support.rabbitmq import Names
from tests.support.sse import Event, EventStream


async def _open(gw: Gateway) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", gw.port)


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def test_keep_alive_and_pipelining() -> None:
    async with serve_in_loop(settings_for("memory")) as gw:
        reader, writer = await _open(gw)
        writer.write(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /events/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        first, second, third = [await _response(reader) for _ in range(3)]
        assert first[0] == 200 and json.loads(first[2]) == {"status": "alive"}
        assert second[0] == 202
        assert third[0] == 404 and third[1]["content-type"] == "application/problem+json"
        writer.close()


async def test_expect_100_continue() -> None:
    async with serve_in_loop(settings_for("memory", max_event_bytes=10)) as gw:
        reader, writer = await _open(gw)
        writer.write(
            b"POST /events/a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        assert (await _response(reader))[0] == 202
        writer.close()
        reader, writer = await _open(gw)
        writer.write(
            b"POST /events/a HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        status, _, body = await _response(reader)
        assert status == 413 and json.loads(body)["status"] == 413
        writer.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"GET /events/a HTTP/1.1\r\nBad Header Line\r\n\r\n",
        b"\x00\x01\x02\xff\r\n\r\n",
    ],
)
async def test_malformed_requests_get_400_problem_details(raw: bytes) -> None:
    async with serve_in_loop(settings_for("memory")) as gw:
        reader, writer = await _open(gw)
        writer.write(raw)
        status, headers, body = await _response(reader)
        assert status == 400
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["detail"]
        assert await reader.read() == b""  # and the connection is closed
        writer.close()


async def test_a_request_head_that_never_ends_is_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(listener, "HEAD_TIMEOUT", 0.5)
    async with serve_in_loop(settings_for("memory", heartbeat=0.4)) as gw:
        reader, writer = await _open(gw)
        writer.write(b"GET /events/a HTTP/1.1\r\nHost: x\r\n")  # ... and nothing more
        assert await asyncio.wait_for(reader.read(), 30) == b""
        writer.close()


async def test_cors_headers_on_event_streams_for_listed_origins() -> None:
    settings = settings_for("memory", cors_origin=("https://app.example",))
    async with serve_in_loop(settings) as gw:
        for origin, allowed in [(b"https://app.example", True), (b"https://evil.example", False)]:
            reader, writer = await _open(gw)
            writer.write(b"GET /events/a HTTP/1.1\r\nHost: x\r\nOrigin: " + origin + b"\r\n\r\n")
            head = (await reader.readuntil(b"\r\n\r\n")).lower()
            assert (b"access-control-allow-origin: " + origin in head) is allowed
            assert (b"access-control-allow-credentials: true" in head) is allowed
            writer.close()


async def test_http_1_0_client_gets_a_closed_connection() -> None:
    async with serve_in_loop(settings_for("memory")) as gw:
        reader, writer = await _open(gw)
        writer.write(b"GET /healthz HTTP/1.0\r\n\r\n")
        status, headers, _ = await _response(reader)
        assert status == 200 and headers["connection"] == "close"
        assert await reader.read() == b""
        writer.close()


async def test_held_writes_delay_but_keep_every_event(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hopcast.http")
    monkeypatch.setattr(coalescing, "BUSY_ON", 0.0)  # as if the process were busy
    monkeypatch.setattr(coalescing, "FILL_ON", 0.0)  # and its connections too
    async with serve_in_loop(settings_for("memory", max_write_delay=0.03, heartbeat=0.2)) as gw:
        await asyncio.sleep(0.3)  # a sample turns holding on
        assert "writes held up to 30 ms" in caplog.text
        async with Listener(f"{gw.url}/events/c.*") as a, Listener(f"{gw.url}/events/c.1") as b:
            for sub in (a, b):
                await sub.wait_started()
            for i in range(50):
                await publish_raw(gw, "memory", Names.fresh(), [(f"c.{i % 2}", b"%d" % i, None)])
                await asyncio.sleep(0.002)
            await a.wait_for(50)
            await b.wait_for(25)
        assert a.data() == [str(i) for i in range(50)]
        assert b.data() == [str(i) for i in range(1, 50, 2)]


async def test_pipelined_requests_are_answered_in_order_after_a_slow_one() -> None:
    async with serve_in_loop(settings_for("memory")) as gw:
        broker = gw.hub.broker
        entered, release = asyncio.Event(), asyncio.Event()
        publish = broker.publish

        async def slow_publish(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            await release.wait()
            return await publish(*args, **kwargs)

        broker.publish = slow_publish  # type: ignore[method-assign]
        reader, writer = await _open(gw)
        writer.write(
            b"POST /events/a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await entered.wait()
        await asyncio.sleep(0.2)  # room for an out-of-turn answer to be written, were there one
        release.set()
        first, second, third = [await _response(reader) for _ in range(3)]
        assert first[0] == 202
        assert second[0] == 200 and json.loads(second[2]) == {"status": "alive"}
        assert third[0] == 414 and third[1]["content-type"] == "application/problem+json"
        writer.close()


async def test_a_request_pipelined_behind_an_event_stream_is_dropped() -> None:
    settings = settings_for("memory", cors_origin=["https://app.example"])
    async with serve_in_loop(settings) as gw:
        reader, writer = await _open(gw)
        writer.write(
            b"GET /events/a HTTP/1.1\r\nHost: x\r\nOrigin: https://app.example\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nOrigin: https://other.example\r\n\r\n"
            b"GET /" + b"u" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert b"access-control-allow-origin: https://app.example" in head.lower()
        await publish_raw(gw, "memory", Names.fresh(), [("a", b"after", None)])
        stream, received, events = EventStream(), b"", list[Event]()
        while not any(e.data == "after" for e in events):
            piece = await asyncio.wait_for(reader.read(65536), 10)
            assert piece, received
            received += piece
            events += stream.feed(piece)
        assert b"HTTP/1.1" not in received and b"alive" not in received
        writer.close()
