"""The publishing side of the load generator: paced JSON events over AMQP or HTTP POST.

Bodies have a fixed layout so subscribers can find the numbers without
parsing JSON: ``{"seq": <10 wide>, "ts": <17 wide>, "pad": "…"}``, 100 bytes
(numbers are right-aligned with spaces, which JSON allows). ``seq`` counts per
topic from ``seq_start``, so a subscriber tells a gap or a repeat by comparing
it with the last one it saw. The publisher runs in its own process.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import uvloop
from pamqp import commands as spec
from pamqp import frame, header

from bench.amqp import AmqpLink

BODY_LEN = 100
_HEAD = b'{"seq": %10d, "ts": %17.6f, "pad": "'
_PAD = b"x" * (BODY_LEN - len(_HEAD % (0, 0.0)) - 2) + b'"}'
TICK = 0.002
"""Seconds between paced publishing rounds."""
HTTP_CONNECTIONS = 8
AMQP_BATCH = 500
"""Publishes between yields to the loop when publishing as fast as possible."""


def make_body(seq: int, ts: float | None = None) -> bytes:
    """One event body: 100 bytes of JSON with ``seq``, the send time ``ts`` and padding.

    >>> len(make_body(7))
    100
    """
    return _HEAD % (seq, time.time() if ts is None else ts) + _PAD


@dataclass(frozen=True)
class PublishPlan:
    """``count`` events round-robin over ``topics`` at ``rate`` per second (0: flat out)."""

    topics: tuple[str, ...]
    count: int
    rate: float
    amqp_url: str = ""
    exchange: str = ""
    http_host: str = ""
    http_port: int = 0
    http_path: str = "/pub/"
    seq_start: int = 0
    max_seconds: float = 600.0


@dataclass
class PublishResult:
    """How many events each topic got, and when publishing started and ended (epoch s)."""

    per_topic: dict[str, int] = field(default_factory=dict)
    started: float = 0.0
    ended: float = 0.0
    failed: int = 0
    error: str | None = None
    cpu: float = 0.0
    """CPU seconds the publisher process used, connecting and closing included."""

    @property
    def sent(self) -> int:
        return sum(self.per_topic.values())


Send = Callable[[list[tuple[str, bytes]]], Awaitable[int]]
"""Publishes a batch of (topic, body); returns how many failed."""


async def _paced(plan: PublishPlan, send: Send) -> PublishResult:
    topics = plan.topics
    n = len(topics)
    result = PublishResult(per_topic=dict.fromkeys(topics, 0))
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + plan.max_seconds
    result.started = time.time()
    sent = 0
    while sent < plan.count and loop.time() < deadline:
        if plan.rate > 0:
            due = min(plan.count, int((loop.time() - start) * plan.rate) + 1)
            if due <= sent:
                await asyncio.sleep(TICK)
                continue
        else:
            due = min(plan.count, sent + AMQP_BATCH)
        batch = []
        now = time.time()
        for i in range(sent, due):
            topic = topics[i % n]
            batch.append((topic, make_body(plan.seq_start + i // n, now)))
            result.per_topic[topic] += 1
        result.failed += await send(batch)
        sent = due
        if plan.rate <= 0:
            await asyncio.sleep(0)
    result.ended = time.time()
    return result


class _AmqpPublisher(AmqpLink):
    """A publish-only AMQP 0-9-1 connection: byte templates frame the publishes, and a
    batch goes out in one write.

    A client library awaits each publish on its own, and at a few thousand
    events/s that cost (about 165 µs per event measured here with aiormq) took
    a third of the machine that the targets under test share. Without confirms
    nothing comes back while publishing; an error closes the channel, and
    `sync` finds that out.
    """

    PRODUCT = "hopcast-bench-publisher"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self._prefix: dict[tuple[str, str, int], bytes] = {}

    def _frames(self, exchange: str, topic: str, size: int) -> bytes:
        """The method frame, content header and body frame head of a publish."""
        key = (exchange, topic, size)
        prefix = self._prefix.get(key)
        if prefix is None:
            ch = self.CHANNEL
            method = frame.marshal(spec.Basic.Publish(exchange=exchange, routing_key=topic), ch)
            props = spec.Basic.Properties(content_type="application/json")
            content = frame.marshal(header.ContentHeader(0, size, props), ch)
            prefix = self._prefix[key] = (
                method + content + b"\x03" + ch.to_bytes(2, "big") + size.to_bytes(4, "big")
            )
        return prefix

    async def publish(self, exchange: str, batch: list[tuple[str, bytes]]) -> None:
        if self._writer.is_closing():  # uvloop raises RuntimeError on a write to it
            raise ConnectionResetError("the broker closed the connection")
        frames = self._frames
        self._writer.write(
            b"".join(frames(exchange, topic, len(body)) + body + b"\xce" for topic, body in batch)
        )
        await self._writer.drain()

    async def sync(self, exchange: str) -> None:
        """A synchronous method after the publishes: the broker has routed them all."""
        self._send(spec.Exchange.Declare(exchange=exchange, passive=True), self.CHANNEL)
        await self._expect(spec.Exchange.DeclareOk)


async def _publish_amqp(plan: PublishPlan) -> PublishResult:
    connection = await _AmqpPublisher.connect(plan.amqp_url)
    try:

        async def send(batch: list[tuple[str, bytes]]) -> int:
            await connection.publish(plan.exchange, batch)
            return 0

        result = await _paced(plan, send)
        await connection.sync(plan.exchange)
        return result
    finally:
        await connection.close()


async def _post_all(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, requests: list[bytes]
) -> int:
    writer.write(b"".join(requests))
    failed = 0
    for _ in requests:
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 2"):
            failed += 1
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await reader.readexactly(length)
    return failed


async def _publish_http(plan: PublishPlan) -> PublishResult:
    pairs = [
        await asyncio.open_connection(plan.http_host, plan.http_port)
        for _ in range(HTTP_CONNECTIONS)
    ]
    host = f"{plan.http_host}:{plan.http_port}"

    def request(topic: str, body: bytes) -> bytes:
        return (
            f"POST {plan.http_path}{topic} HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    # One connection per topic keeps each topic's events in publish order.
    lane = {topic: i % len(pairs) for i, topic in enumerate(plan.topics)}

    async def send(batch: list[tuple[str, bytes]]) -> int:
        shares: list[list[bytes]] = [[] for _ in pairs]
        for topic, body in batch:
            shares[lane[topic]].append(request(topic, body))
        counts = await asyncio.gather(
            *(_post_all(r, w, share) for (r, w), share in zip(pairs, shares, strict=True) if share)
        )
        return sum(counts)

    try:
        return await _paced(plan, send)
    finally:
        for _, writer in pairs:
            writer.close()


async def publish(plan: PublishPlan) -> PublishResult:
    """Publish the plan in this process: over HTTP when it names a host, else over AMQP."""
    try:
        if plan.http_host:
            return await _publish_http(plan)
        return await _publish_amqp(plan)
    except (OSError, asyncio.IncompleteReadError) as exc:
        return PublishResult(error=repr(exc))


def _process_main(plan: PublishPlan, link: multiprocessing.connection.Connection) -> None:
    started = time.process_time()
    result = uvloop.run(publish(plan))
    result.cpu = time.process_time() - started
    link.send(result)


class Publisher:
    """A publisher process: `start`, then `result` waits for it."""

    def __init__(self, plan: PublishPlan) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._link, child = ctx.Pipe()
        self._proc = ctx.Process(target=_process_main, args=(plan, child), daemon=True)

    def start(self) -> Publisher:
        self._proc.start()
        return self

    def result(self, timeout: float) -> PublishResult:
        try:
            if not self._link.poll(timeout):
                return PublishResult(error=f"the publisher did not finish within {timeout:.0f} s")
            outcome: PublishResult = self._link.recv()
            return outcome
        except EOFError:
            return PublishResult(error="the publisher process died")
        finally:
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(5)
