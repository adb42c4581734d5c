"""The physical reference server: subscribe, publish by POST, one frame per event."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from bench.baselines.reference import STREAM, serve
from bench.targets import free_port


@pytest.fixture
async def port() -> AsyncIterator[int]:
    port = free_port()
    server = asyncio.create_task(serve(port))
    for _ in range(100):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            break
        await asyncio.sleep(0.02)
    yield port
    server.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await server


async def subscribe(port: int, topic: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET /events/{topic} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert await reader.readexactly(len(STREAM)) == STREAM
    return reader, writer


def post(topic: str, body: bytes) -> bytes:
    head = f"POST /pub/{topic} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def test_each_post_reaches_its_topics_subscribers_once(port: int) -> None:
    subscribers = [await subscribe(port, t) for t in ("a", "a", "b")]
    (first, _), (second, _), (other, _) = subscribers
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    # Pipelined, and the last one cut in two writes.
    whole = post("a", b'{"n": 1}') + post("b", b'{"n": 2}') + post("a", b'{"n": 3}')
    writer.write(whole[:-5])
    await asyncio.sleep(0.05)
    writer.write(whole[-5:])
    answers = [await reader.readuntil(b"\r\n\r\n") for _ in range(3)]
    assert all(a.startswith(b"HTTP/1.1 201 ") for a in answers)
    wanted = b'data: {"n": 1}\n\ndata: {"n": 3}\n\n'
    for subscriber in (first, second):
        assert await subscriber.readexactly(len(wanted)) == wanted
    assert await other.readexactly(16) == b'data: {"n": 2}\n\n'
    for _, subscription in [*subscribers, (reader, writer)]:
        subscription.close()


async def test_it_answers_readyz(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await reader.readuntil(b"ready\n")).startswith(b"HTTP/1.1 200 ")
    writer.close()
