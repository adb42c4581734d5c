"""The numbered sequence: its topics, a publisher that retries until confirmed, the stream's truth.

A `Publisher` sends numbers 0, 1, 2 … with publisher confirms, retrying each one
until it is confirmed, through whatever fault comes; so a number whose confirm was
lost may be stored twice, and the stream, not the publisher, is the truth:
`read_stream` reads it straight from RabbitMQ once the fault is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import aiormq
import aiormq.abc
from pamqp import commands as spec

from tests.support.rabbitmq import AMQP_URL

AMQP_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
    RuntimeError,  # aiormq: "connection closed" when a channel is opened on a dying connection
)
"""What a publish or a connect can raise while the broker is away or the link is cut."""

WORDS = ("a", "b", "c")
KINDS = ("x", "y")
PATTERNS: tuple[tuple[str, ...], ...] = (("f.#",), ("f.a.*",), ("f.*.y", "f.b.#"), ("f.c.x",))
"""The subscribers' patterns: everything, one word, two overlapping patterns, one topic."""


def topic_of(number: int) -> str:
    """The topic of event ``number``: six topics in turn, ``f.a.x`` … ``f.c.y``."""
    return f"f.{WORDS[number % 3]}.{KINDS[(number // 3) % 2]}"


def type_of(number: int) -> str | None:
    """Odd events carry an event name, even ones none (``message`` on the client side)."""
    return "tick" if number % 2 else None


def body_of(number: int, padding: int = 0) -> bytes:
    return b"%d:" % number + b"x" * padding


def number_in(data: str) -> int:
    """The sequence number an event's data carries (-1 for anything else)."""
    head = data.split(":", 1)[0]
    return int(head) if head.isdigit() else -1


def topic_matches(pattern: str, topic: str) -> bool:
    """RabbitMQ's topic matching, written out independently of the gateway's trie."""

    def walk(words: Sequence[str], topic_words: Sequence[str]) -> bool:
        if not words:
            return not topic_words
        head, rest = words[0], words[1:]
        if head == "#":
            return any(walk(rest, topic_words[i:]) for i in range(len(topic_words) + 1))
        if not topic_words:
            return False
        return head in ("*", topic_words[0]) and walk(rest, topic_words[1:])

    return walk(pattern.split("."), topic.split("."))


# -- the truth: what the stream holds ---------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """One message as the stream holds it."""

    offset: int
    topic: str
    type: str | None
    body: bytes

    @property
    def number(self) -> int:
        return int(self.body.split(b":", 1)[0])

    def as_event(self) -> tuple[int, str, str]:
        return self.offset, self.type or "message", self.body.decode()


async def read_stream(
    urls: Sequence[str], stream: str, total: int, timeout: float = 90.0
) -> list[Stored]:
    """Every message of ``stream`` from its first offset, read straight from RabbitMQ.

    Reads until every number below ``total`` was seen and a second passed with
    nothing more (a number may be stored twice when its first confirm was lost).
    """
    stored: dict[int, Stored] = {}
    arrived = asyncio.Event()
    async with asyncio.timeout(timeout):
        conn = await _connect_any(urls)
        try:
            channel = await conn.channel()
            await channel.basic_qos(prefetch_count=1000)

            async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
                props = message.header.properties
                offset = (props.headers or {})["x-stream-offset"]
                assert isinstance(offset, int), offset
                routing_key = getattr(message.delivery, "routing_key", "")
                stored[offset] = Stored(offset, routing_key, props.message_type, message.body)
                arrived.set()
                await channel.basic_ack(message.delivery_tag or 0)

            await channel.basic_consume(stream, on_message, arguments={"x-stream-offset": "first"})
            wanted = set(range(total))
            while True:
                arrived.clear()
                try:
                    async with asyncio.timeout(1.0):
                        await arrived.wait()
                except TimeoutError:
                    if wanted <= {s.number for s in stored.values()}:
                        break
        finally:
            await conn.close()
    return [stored[k] for k in sorted(stored)]


def check_sequence(truth: Sequence[Stored], total: int) -> int:
    """Every number below ``total`` is stored, first occurrences in order; returns repeats."""
    numbers = [s.number for s in truth]
    assert set(numbers) == set(range(total)), sorted(set(range(total)) ^ set(numbers))[:20]
    firsts = list(dict.fromkeys(numbers))
    assert firsts == sorted(firsts), "the stream holds the sequence out of order"
    return len(numbers) - len(firsts)


async def _connect_any(urls: Sequence[str]) -> aiormq.abc.AbstractConnection:
    errors = []
    for url in urls:
        try:
            async with asyncio.timeout(5):
                return await aiormq.connect(url)
        except AMQP_ERRORS as exc:
            errors.append(f"{url}: {exc!r}")
    raise ConnectionError("; ".join(errors))


# -- the publisher -------------------------------------------------------------------------


class Publisher:
    """Publishes the numbered sequence with confirms; retries each number until confirmed.

    ``mandatory`` is set: right after a broker restart a message can be confirmed
    yet unroutable, and a return counts as a failure, as a lost confirm does.
    """

    def __init__(
        self, exchange: str, urls: Sequence[str] = (AMQP_URL,), *, padding: int = 0
    ) -> None:
        self.exchange = exchange
        self.urls = list(urls)
        self.padding = padding
        self.confirmed = 0
        """Numbers 0 … confirmed-1 are confirmed."""
        self.failures: list[str] = []
        self._turn = 0
        self._conn: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._progress = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def publish(self, count: int, *, interval: float = 0.0, deadline: float = 150.0) -> None:
        """Publish the next ``count`` numbers, one at a time, each retried until confirmed."""
        give_up = time.monotonic() + deadline
        for number in range(self.confirmed, self.confirmed + count):
            await self._publish_one(number, give_up)
            self.confirmed = number + 1
            self._progress.set()
            if interval:
                await asyncio.sleep(interval)

    async def run(self, *, interval: float, limit: int = 20000, deadline: float = 200.0) -> None:
        """Publish the next numbers until `stop` (or ``limit`` numbers, or ``deadline`` s)."""
        give_up = time.monotonic() + deadline
        while not self._stopping and self.confirmed < limit and time.monotonic() < give_up:
            await self.publish(1, deadline=max(1.0, give_up - time.monotonic()))
            await asyncio.sleep(interval)

    def start(self, *, interval: float) -> None:
        """Publish in the background, through whatever fault comes, until `stop`."""
        self._task = asyncio.create_task(self.run(interval=interval), name="publisher")
        self._task.add_done_callback(lambda _: self._progress.set())

    async def stop(self, more: int = 0, timeout: float = 150.0) -> int:
        """Stop once ``more`` numbers beyond those confirmed now are confirmed; return the total."""
        if self._task is None:
            return self.confirmed
        await self.wait_confirmed(self.confirmed + more, timeout)
        self._stopping = True
        await asyncio.wait_for(self._task, timeout)
        return self.confirmed

    async def wait_confirmed(self, count: int, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while self.confirmed < count:
                if self._task is not None and self._task.done():
                    self._task.result()  # raises what stopped it
                    raise AssertionError(f"the publisher stopped at {self.confirmed} < {count}")
                self._progress.clear()
                await self._progress.wait()

    async def _publish_one(self, number: int, give_up: float) -> None:
        while time.monotonic() < give_up:
            try:
                channel = await self._ensure_channel()
                async with asyncio.timeout(10):
                    confirm = await channel.basic_publish(
                        body_of(number, self.padding),
                        exchange=self.exchange,
                        routing_key=topic_of(number),
                        properties=spec.Basic.Properties(
                            message_type=type_of(number), delivery_mode=2
                        ),
                        mandatory=True,
                    )
                if isinstance(confirm, spec.Basic.Ack):
                    return
                self._failed(number, repr(confirm))
            except AMQP_ERRORS as exc:
                self._failed(number, repr(exc))
                await self._drop()
            await asyncio.sleep(0.2)
        raise AssertionError(f"event {number} was never confirmed: {self.failures[-3:]}")

    def _failed(self, number: int, why: str) -> None:
        self.failures.append(f"{number}: {why}")
        if len(self.failures) <= 3 or len(self.failures) % 50 == 0:  # shown with -s, or on failure
            print(f"  publisher: {len(self.failures)} failed attempts; event {number}: {why[:200]}")

    async def _ensure_channel(self) -> aiormq.abc.AbstractChannel:
        if self._channel is not None and not self._channel.is_closed:
            return self._channel
        await self._drop()
        url = self.urls[self._turn % len(self.urls)]
        self._turn += 1  # the next connect tries the next broker (failover)
        async with asyncio.timeout(5):
            self._conn = await aiormq.connect(url)
            self._channel = await self._conn.channel(publisher_confirms=True)
        return self._channel

    async def _drop(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(*AMQP_ERRORS):
                async with asyncio.timeout(2):
                    await conn.close()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop()
