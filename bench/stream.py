"""Plain stream consumers the gateway is measured against, and stream helpers.

- `LatencyProbe`: a bare stream consumer timing each event from its publish
  timestamp: the part of the latency that RabbitMQ's stream delivery itself
  costs, which no gateway reading the stream can go below; and when each event
  arrived, which a step's subscribers measure the gateway's own share against.
- `aio_pika_ingest`: the plain aio-pika consumer with one ack per message that
  the gateway's ingest rate is compared with.
- `stream_tail`: the last offset of a stream, read as the gateway learns it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
import aiormq.abc
import uvloop
from pamqp import commands as spec
from pamqp.common import FieldTable

from bench.amqp import AmqpLink
from bench.tally import HIST_SIZE, Histogram, bucket_of

PREFETCH = 1000
"""Prefetch of every consumer here: the gateway's default, so the comparison is like for like."""
_SEQ_TS = re.compile(rb'"seq": *(\d+), "ts": *([0-9.]+)')


async def stream_tail(url: str, stream: str) -> int | None:
    """The stream's last offset: read from ``last`` (its last chunk) until it goes quiet."""
    connection = await aiormq.connect(url)
    last: list[int] = []
    arrived = asyncio.Event()

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        headers = message.header.properties.headers or {}
        last.append(int(str(headers["x-stream-offset"])))
        arrived.set()

    try:
        channel = await connection.channel()
        await channel.basic_qos(prefetch_count=PREFETCH)
        await channel.basic_consume(
            stream, on_message, arguments={"x-stream-offset": "last"}, no_ack=False
        )
        wait = 2.0
        while True:
            arrived.clear()
            try:
                async with asyncio.timeout(wait):
                    await arrived.wait()
            except TimeoutError:
                return max(last) if last else None
            wait = 0.3
            if len(last) % PREFETCH == 0:
                await channel.basic_ack(0, multiple=True)
    finally:
        await connection.close()


@dataclass
class ProbeResult:
    received: int
    latency: Histogram
    error: str | None = None
    arrivals: dict[tuple[str, int], float] = field(default_factory=dict)
    """When each event arrived here: (topic, seq) to epoch seconds."""
    cpu_seconds: float = 0.0
    """The probe process's CPU while it consumed."""


class _BareConsumer(AmqpLink):
    """A stream consumer that reads frames by hand: one clock reading per socket read, the
    routing key from each ``basic.deliver``, ``seq`` and ``ts`` from each body, one
    ``basic.ack`` (``multiple``) per quarter of the prefetch. aiormq, which parses every
    frame into objects and starts a task per delivery, had the events later than the
    gateway's own subscribers about half the time: too late to measure the gateway by."""

    PRODUCT = "hopcast-bench-bare-consumer"

    async def consume(self, stream: str) -> None:
        self._send(spec.Basic.Qos(prefetch_count=PREFETCH), self.CHANNEL)
        await self._expect(spec.Basic.QosOk)
        offset: FieldTable = {"x-stream-offset": "next"}
        self._send(spec.Basic.Consume(queue=stream, arguments=offset), self.CHANNEL)
        await self._expect(spec.Basic.ConsumeOk)

    async def read(self, on_body: Callable[[float, str, bytes], None]) -> None:
        """Call ``on_body(receipt time, routing key, body)`` for each delivery, until cancelled."""
        rest, key, tag, acked = b"", "", 0, 0
        while True:
            data = await self._reader.read(1 << 16)
            if not data:
                raise ConnectionError("the broker closed the connection")
            now = time.time()
            rest += data
            while len(rest) >= 8:
                size = int.from_bytes(rest[3:7], "big")
                if len(rest) < size + 8:
                    break
                kind, payload, rest = rest[0], rest[7 : 7 + size], rest[size + 8 :]
                if kind == 1 and payload[:4] == _DELIVER:
                    key, tag = _deliver_key_and_tag(payload)
                elif kind == 3:
                    on_body(now, key, payload)
            if tag - acked >= PREFETCH // 4:
                self._send(spec.Basic.Ack(delivery_tag=tag, multiple=True), self.CHANNEL)
                acked = tag


_DELIVER = (60).to_bytes(2, "big") + (60).to_bytes(2, "big")


def _deliver_key_and_tag(payload: bytes) -> tuple[str, int]:
    """The routing key and delivery tag of a ``basic.deliver`` method frame's payload."""
    pos = 4
    pos += 1 + payload[pos]  # consumer tag
    tag = int.from_bytes(payload[pos : pos + 8], "big")
    pos += 9  # delivery tag, redelivered
    pos += 1 + payload[pos]  # exchange
    return payload[pos + 1 : pos + 1 + payload[pos]].decode(), tag


async def _probe(url: str, stream: str, link: multiprocessing.connection.Connection) -> ProbeResult:
    hist = [0] * HIST_SIZE
    state = {"received": 0, "max": 0.0}
    arrivals: dict[tuple[str, int], float] = {}

    def on_body(now: float, key: str, body: bytes) -> None:
        found = _SEQ_TS.search(body)
        if found is not None:
            lat = now - float(found.group(2))
            state["max"] = max(state["max"], lat)
            hist[bucket_of(int(lat * 10_000))] += 1
            state["received"] += 1
            arrivals[(key, int(found.group(1)))] = now

    try:
        consumer = await _BareConsumer.connect(url)
    except (OSError, ConnectionError) as exc:
        return ProbeResult(0, Histogram(), repr(exc))
    try:
        await consumer.consume(stream)
        reading = asyncio.create_task(consumer.read(on_body))
        link.send("ready")
        cpu = time.process_time()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, link.poll, 600.0)
        cpu = time.process_time() - cpu
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await reading
    except (OSError, ConnectionError, asyncio.IncompleteReadError) as exc:
        return ProbeResult(0, Histogram(), repr(exc))
    finally:
        await consumer.close()
    latency = Histogram(maximum=float(state["max"]))
    latency.counts.update({i: n for i, n in enumerate(hist) if n})
    return ProbeResult(int(state["received"]), latency, arrivals=arrivals, cpu_seconds=cpu)


def _probe_main(url: str, stream: str, link: multiprocessing.connection.Connection) -> None:
    link.send(uvloop.run(_probe(url, stream, link)))


class LatencyProbe:
    """A bare stream consumer in its own process; `stop` returns what it measured."""

    def __init__(self, url: str, stream: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._link, child = ctx.Pipe()
        self._proc = ctx.Process(target=_probe_main, args=(url, stream, child), daemon=True)

    def start(self) -> LatencyProbe:
        self._proc.start()
        if not self._link.poll(30) or self._link.recv() != "ready":
            raise RuntimeError("the stream latency probe did not start")
        return self

    def stop(self) -> ProbeResult:
        self._link.send("stop")
        try:
            if not self._link.poll(30):
                return ProbeResult(0, Histogram(), "the probe did not answer")
            result: ProbeResult = self._link.recv()
            return result
        finally:
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()


@dataclass
class IngestResult:
    events: int
    seconds: float
    error: str | None = None
    cpu_seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def _aio_pika_ingest(url: str, stream: str, expected: int, limit: float) -> IngestResult:
    connection = await aio_pika.connect(url)
    done = asyncio.Event()
    stamps: dict[str, float] = {}
    count = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal count
        if not count:
            stamps["first"] = time.perf_counter()
            stamps["cpu first"] = time.process_time()
        count += 1
        await message.ack()
        if count >= expected:
            stamps["last"] = time.perf_counter()
            stamps["cpu last"] = time.process_time()
            done.set()

    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.get_queue(stream, ensure=False)
        await queue.consume(on_message, arguments={"x-stream-offset": "first"})
        try:
            async with asyncio.timeout(limit):
                await done.wait()
        except TimeoutError:
            stamps["last"] = time.perf_counter()
            stamps["cpu last"] = time.process_time()
    finally:
        await connection.close()
    # The first message's own handling is not timed: count it out.
    return IngestResult(
        count - 1,
        stamps.get("last", 0.0) - stamps.get("first", 0.0),
        cpu_seconds=stamps.get("cpu last", 0.0) - stamps.get("cpu first", 0.0),
    )


def _ingest_main(
    url: str, stream: str, expected: int, limit: float, link: multiprocessing.connection.Connection
) -> None:
    link.send(uvloop.run(_aio_pika_ingest(url, stream, expected, limit)))


def aio_pika_ingest(url: str, stream: str, expected: int, limit: float = 300.0) -> IngestResult:
    """Events/s a plain aio-pika consumer (one ack per message) reads from ``stream``."""
    result: IngestResult = _in_process(_ingest_main, (url, stream, expected, limit), limit + 30)
    return result


def _in_process(target: Callable[..., None], args: tuple[Any, ...], timeout: float) -> Any:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    try:
        if not parent.poll(timeout):
            return IngestResult(0, 0.0, f"no answer within {timeout:.0f} s")
        answer: Any = parent.recv()
        return answer
    finally:
        proc.join(5)
        if proc.is_alive():
            proc.kill()
