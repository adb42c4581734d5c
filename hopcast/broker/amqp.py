"""RabbitMQ: a topic exchange bound with ``#`` to a stream, read over AMQP 0-9-1.

The pitfalls of design §7 shape this module: stream consumers need a prefetch
and manual acks (the acks are their credit); offsets are validated before they
reach the broker; publishes use confirms and ``mandatory`` so that a message
confirmed but unroutable right after a broker restart counts as a failure.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiormq
import aiormq.abc
from pamqp import commands as spec

from hopcast.broker import Message, StartAt
from hopcast.config import Settings
from hopcast.errors import BrokerUnavailable, PublishNotConfirmed, UndecodableMessage

log = logging.getLogger(__name__)

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,  # aiormq: "connection closed" when opening a channel on a dying connection
)
"""What a broken or refused connection can raise from aiormq."""

PUBLISH_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
TAIL_FIRST_WAIT = 0.5
TAIL_IDLE_WAIT = 0.1
TAIL_MAX_READ = 1.0
"""Seconds a tail probe reads at most: while publishers publish, deliveries never pause,
and an offset read within the last second is tail enough (it is a hint and a floor)."""
BACKOFF_MAX = 5.0
MAX_TAIL_SKIPS = 100


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _with_defaults(url: str, settings: Settings) -> str:
    """Add the AMQP heartbeat and a connection name operators can find in RabbitMQ's lists."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.setdefault("heartbeat", str(settings.amqp_heartbeat))
    query.setdefault("name", f"hopcast {settings.stream} pid {os.getpid()}")
    return urlunsplit(parts._replace(query=urlencode(query)))


def _named(url: str, purpose: str) -> str:
    """The URL with the connection's purpose added to its name."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query["name"] = f"{query.get('name', 'hopcast')} {purpose}"
    return urlunsplit(parts._replace(query=urlencode(query)))


def _offset_argument(start: StartAt | Literal["last"]) -> Any:
    """The ``x-stream-offset`` value; anything else would close the connection (541)."""
    if isinstance(start, bool):
        raise TypeError("offset must be an int, a datetime, 'first' or 'next'")
    if isinstance(start, int):
        return max(0, start)
    if isinstance(start, datetime) or start in ("first", "next", "last"):
        return start
    raise TypeError(f"not a stream offset: {start!r}")


def to_message(delivered: aiormq.abc.DeliveredMessage) -> Message:
    props = delivered.header.properties
    headers = props.headers or {}
    delivery = delivered.delivery
    offset = headers["x-stream-offset"]
    if not isinstance(offset, int):
        raise BrokerUnavailable(f"a delivery without an integer x-stream-offset: {offset!r}")
    topic = delivery.routing_key if isinstance(delivery, spec.Basic.Deliver) else None
    return Message(offset, topic or "", props.message_type, delivered.body)


class AmqpBroker:
    """The RabbitMQ broker: one connection per process, failing over across URLs."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._urls = [_with_defaults(u, settings) for u in settings.broker]
        self._url_index = 0
        self._connection: aiormq.abc.AbstractConnection | None = None
        self._publish_channel: aiormq.abc.AbstractChannel | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def start(self) -> None:
        """Connect and declare the exchange and the stream, retrying until RabbitMQ answers."""
        delay = 0.2
        while True:
            try:
                await self._declare()
                return
            except BrokerUnavailable as exc:
                log.warning("waiting for RabbitMQ: %s; retrying in %.1f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX, delay * 2)

    async def _declare(self) -> None:
        s = self._settings
        conn = await self._connect()
        try:
            ch = await conn.channel()
            await ch.exchange_declare(s.exchange, exchange_type="topic", durable=True)
            arguments: dict[str, Any] = {
                "x-queue-type": "stream",
                "x-max-age": f"{s.stream_max_age}s",
                "x-max-length-bytes": s.stream_max_bytes,
                "x-stream-max-segment-size-bytes": s.stream_segment_bytes,
            }
            try:
                await ch.queue_declare(s.stream, durable=True, arguments=arguments)
            except aiormq.exceptions.ChannelPreconditionFailed as exc:
                log.warning(
                    "stream %r exists with other arguments (%s); using it as it is: "
                    "asked for max-age %ss, max-length-bytes %s; change retention with a policy",
                    s.stream,
                    exc,
                    s.stream_max_age,
                    s.stream_max_bytes,
                )
                ch = await conn.channel()
                await ch.queue_declare(s.stream, passive=True)
            await ch.queue_bind(s.stream, s.exchange, routing_key="#")
            await ch.close()
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"declaring the topology failed: {exc!r}") from exc

    async def _connect(self) -> aiormq.abc.AbstractConnection:
        """The shared connection (declaring, publishing), opened when there is none."""
        conn = self._connection
        if conn is not None and not conn.is_closed:
            return conn
        async with self._lock:
            conn = self._connection
            if conn is None or conn.is_closed:
                conn = self._connection = await self._open("publish")
                self._publish_channel = None
            return conn

    async def _open(self, purpose: str) -> aiormq.abc.AbstractConnection:
        """A new connection, trying each broker URL in turn from the last one that worked.

        Every reader has a connection of its own: the AMQP client drops a whole
        connection on a frame it cannot parse, and that must break only the
        read that met it.
        """
        if self._closed:
            raise BrokerUnavailable("the broker is closed")
        errors = []
        for _ in range(len(self._urls)):
            url = self._urls[self._url_index]
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    conn = await aiormq.connect(_named(url, purpose))
            except CONNECTION_ERRORS as exc:
                errors.append(f"{_safe_url(url)}: {exc!r}")
                self._url_index = (self._url_index + 1) % len(self._urls)
                continue
            level = logging.DEBUG if purpose in ("tail", "catch-up") else logging.INFO
            log.log(level, "connected to %s (%s)", _safe_url(url), purpose)
            return conn
        raise BrokerUnavailable("; ".join(errors))

    async def publish(self, topic: str, body: bytes, event: str | None) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                channel = self._publish_channel
                if channel is None or channel.is_closed:
                    conn = await self._connect()
                    channel = self._publish_channel = await conn.channel(publisher_confirms=True)
                result = await channel.basic_publish(
                    body,
                    exchange=self._settings.exchange,
                    routing_key=topic,
                    properties=spec.Basic.Properties(message_type=event, delivery_mode=2),
                    mandatory=True,
                )
        except aiormq.exceptions.PublishError as exc:
            raise PublishNotConfirmed("the broker returned the message as unroutable") from exc
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"publish failed: {exc!r}") from exc
        if not isinstance(result, spec.Basic.Ack):
            raise PublishNotConfirmed("the broker did not confirm the message")

    def read(self, start: StartAt, *, purpose: str = "live") -> AmqpReader:
        return AmqpReader(self, start, purpose)

    async def tail(self) -> int | None:
        """Learn the last offset by reading from ``last`` (the start of the last chunk).

        A message the AMQP client cannot parse breaks the read; when an offset
        before it is known, the read goes on past it.
        """
        last: int | None = None
        start: StartAt | Literal["last"] = "last"
        for _ in range(MAX_TAIL_SKIPS):
            try:
                return await self._read_to_idle(start, last)
            except _PartialTail as partial:
                if partial.last is None:
                    raise UndecodableMessage(
                        "the stream's last chunk starts with a message the AMQP client "
                        "cannot parse; its tail is unknown until the next publish"
                    ) from None
                last = partial.last
                start = last + 2
        return last

    async def _read_to_idle(self, start: StartAt | Literal["last"], last: int | None) -> int | None:
        """Read until deliveries pause, or for at most `TAIL_MAX_READ` under steady publishing."""
        reader = AmqpReader(self, start, "tail")
        give_up = asyncio.get_running_loop().time() + TAIL_MAX_READ
        async with reader:
            batches = reader.__aiter__()
            wait = TAIL_FIRST_WAIT
            while last is None or asyncio.get_running_loop().time() < give_up:
                try:
                    async with asyncio.timeout(wait):
                        batch = await anext(batches)
                except TimeoutError:
                    return last
                except UndecodableMessage:
                    raise _PartialTail(last) from None
                last = batch[-1].offset
                wait = TAIL_IDLE_WAIT
        return last

    async def aclose(self) -> None:
        self._closed = True
        conn, self._connection = self._connection, None
        if conn is not None:
            try:
                await conn.close()
            except CONNECTION_ERRORS:
                log.debug("closing the connection failed", exc_info=True)


class AmqpReader:
    """One stream consumer on its own channel; iterate it for batches in offset order."""

    def __init__(self, broker: AmqpBroker, start: StartAt | Literal["last"], purpose: str) -> None:
        self._broker = broker
        self._start = _offset_argument(start)
        self._purpose = purpose
        self._buffer: list[aiormq.abc.DeliveredMessage] = []
        self._arrived = asyncio.Event()
        self._cancelled = False
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._connection: aiormq.abc.AbstractConnection | None = None

    def _on_message(self, message: aiormq.abc.DeliveredMessage) -> None:
        # Runs as its own task in aiormq: append before any await keeps the order.
        self._buffer.append(message)
        self._arrived.set()

    def _on_cancel(self, consumer_tag: str | None) -> None:
        # The broker cancels a stream consumer when the stream is deleted.
        self._cancelled = True
        self._arrived.set()

    async def __aenter__(self) -> AmqpReader:
        broker = self._broker
        try:
            conn = self._connection = await broker._open(self._purpose)
            channel = self._channel = await conn.channel(publisher_confirms=False)
            channel.on_consumer_cancel_callbacks.add(self._on_cancel)  # type: ignore[arg-type]
            await channel.basic_qos(prefetch_count=broker._settings.prefetch)
            await channel.basic_consume(
                broker._settings.stream,
                self._on_message,  # type: ignore[arg-type]
                arguments={"x-stream-offset": self._start},
            )
        except CONNECTION_ERRORS as exc:
            await self._close_channel()
            raise BrokerUnavailable(f"stream consumer ({self._purpose}) failed: {exc!r}") from exc
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close_channel()

    async def _close_channel(self) -> None:
        conn, self._connection = self._connection, None
        self._channel = None
        if conn is not None and not conn.is_closed:
            try:
                await asyncio.wait_for(conn.close(), 2)
            except CONNECTION_ERRORS:
                log.debug("closing a reader's connection failed", exc_info=True)

    def _raise_for_close(self, closing: asyncio.Future[Any]) -> None:
        reason = closing.exception() if closing.done() and not closing.cancelled() else None
        if isinstance(reason, aiormq.exceptions.InvalidFrameError):
            raise UndecodableMessage(f"stream consumer ({self._purpose}): {reason}")
        lost = "was cancelled (stream deleted?)" if self._cancelled else "lost its channel"
        raise BrokerUnavailable(f"stream consumer ({self._purpose}) {lost}")

    async def __aiter__(self) -> AsyncIterator[Sequence[Message]]:
        channel = self._channel
        if channel is None:
            raise BrokerUnavailable("the reader is not open")
        closing = channel.closing
        while True:
            if not self._buffer:
                self._arrived.clear()
                waiter = asyncio.ensure_future(self._arrived.wait())
                try:
                    await asyncio.wait((waiter, closing), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                if not self._buffer:
                    self._raise_for_close(closing)
            batch, self._buffer = self._buffer, []
            try:
                await channel.basic_ack(batch[-1].delivery_tag or 0, multiple=True, wait=False)
            except CONNECTION_ERRORS as exc:
                raise BrokerUnavailable(f"acknowledging failed: {exc!r}") from exc
            yield [to_message(m) for m in batch]


class _PartialTail(Exception):
    def __init__(self, last: int | None) -> None:
        super().__init__(last)
        self.last = last
