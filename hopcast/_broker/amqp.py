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
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextvars import ContextVar
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiormq
import aiormq.abc
from pamqp import commands as spec

from hopcast._broker.base import Message, StartAt
from hopcast._broker.consumer import StreamConsumer
from hopcast._core.errors import BrokerUnavailable, PublishNotConfirmed
from hopcast._core.settings import Settings

log = logging.getLogger("hopcast.broker")  # named by layer: module paths are internal

CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
    RuntimeError,  # aiormq: "connection closed" when opening a channel on a dying connection
)
"""What a broken or refused connection can raise from aiormq."""
_COUNT_ERRORS: tuple[type[BaseException], ...] = (BrokerUnavailable, *CONNECTION_ERRORS)

PUBLISH_TIMEOUT = 10.0
DECLARE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
TAIL_FIRST_WAIT = 0.5
"""Seconds a tail probe waits for a first delivery before it calls the stream empty.

An empty stream is one that delivers nothing from ``last`` in this time, and that
RabbitMQ does not count any messages in: the count ``queue.declare`` answers for
a stream lags its writes by seconds (and reads 0 just after a broker restart), so
it can only say "not empty", never "empty".
"""
TAIL_PATIENT_WAIT = 5.0
"""The same wait for a caller that has seen the stream hold messages (after a
reconnect, or for a client's resume point), or for a stream RabbitMQ counts
messages in, where a wrong "empty" would be taken for a recreated stream and send
clients everything again, or, at start-up, send a stream's history to fresh
subscribers as if it were new."""
TAIL_IDLE_WAIT = 0.1
TAIL_MAX_READ = 1.0
"""Seconds a tail probe reads at most: while publishers publish, deliveries never pause,
and an offset read within the last second is tail enough (it is a hint and a floor)."""
BACKOFF_MAX = 5.0
_T = TypeVar("_T")
_CONNECTING: ContextVar[bool] = ContextVar("hopcast_connecting", default=False)


class _ReportedByHopcast(logging.Filter):
    """Drops aiormq's ERROR line for a connection attempt of hopcast's, which hopcast reports
    itself (one line, at its level); aiormq's other lines, and other callers', pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_CONNECTING.get() and str(record.msg).startswith("error when creating"))


_AIORMQ_FILTER = _ReportedByHopcast()


def _reason(exc: BaseException) -> str:
    """An aiormq or socket error in words: ``Connection refused``, not its repr."""
    if isinstance(exc, BrokerUnavailable):
        return str(exc)
    args = exc.args
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        return args[1]  # aiormq's (errno, text)
    return str(exc) or type(exc).__name__


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
        self._discarded: set[asyncio.Task[Any]] = set()
        logging.getLogger("aiormq.connection").addFilter(_AIORMQ_FILTER)  # once: a set

    @property
    def connected(self) -> bool:
        return self._connection is not None and not self._connection.is_closed

    async def start(self) -> None:
        """Connect and declare the exchange and the stream, retrying until RabbitMQ answers."""
        delay = 0.2
        while True:
            try:
                async with asyncio.timeout(DECLARE_TIMEOUT):
                    await _survive_drop(self._declare())
                return
            except TimeoutError:
                self._discard()  # a link that went silent: the next try opens another
                log.warning("waiting for RabbitMQ: no answer in %.0f s", DECLARE_TIMEOUT)
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
            if s.stream_replicas is not None:
                arguments["x-initial-cluster-size"] = s.stream_replicas
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
            raise BrokerUnavailable(f"declaring the topology failed: {_reason(exc)}") from exc

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
        """A new aiormq connection (declaring, publishing)."""
        return await self._try_urls(lambda url: aiormq.connect(_named(url, purpose)), purpose)

    def _discard(self) -> None:
        """Forget the shared connection (it stopped answering) and close it in the background."""
        conn, self._connection = self._connection, None
        self._publish_channel = None
        if conn is not None and not conn.is_closed:
            task = asyncio.get_running_loop().create_task(conn.close())
            task.add_done_callback(_ignore_failure)
            self._discarded.add(task)
            task.add_done_callback(self._discarded.discard)

    async def _try_urls(self, connect: Callable[[str], Awaitable[_T]], purpose: str) -> _T:
        """Connect to each broker URL in turn, from the last one that worked."""
        if self._closed:
            raise BrokerUnavailable("the broker is closed")
        errors = []
        for _ in range(len(self._urls)):
            url = self._urls[self._url_index]
            reporting = _CONNECTING.set(True)
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    connection = await connect(url)
            except CONNECTION_ERRORS as exc:
                errors.append(f"{_safe_url(url)}: {_reason(exc)}")
                self._url_index = (self._url_index + 1) % len(self._urls)
                continue
            finally:
                _CONNECTING.reset(reporting)
            level = logging.DEBUG if purpose in ("tail", "catch-up") else logging.INFO
            log.log(level, "connected to %s (%s)", _safe_url(url), purpose)
            return connection
        raise BrokerUnavailable("; ".join(errors))

    async def publish(self, topic: str, body: bytes, event: str | None) -> None:
        properties = spec.Basic.Properties(message_type=event, delivery_mode=2)
        await self.send(self._settings.exchange, topic, body, properties)

    async def send(
        self, exchange: str, routing_key: str, body: bytes, properties: spec.Basic.Properties
    ) -> None:
        """Publish with confirms and ``mandatory``; return once the broker confirmed and routed."""
        await _survive_drop(self._send(exchange, routing_key, body, properties))

    async def _send(
        self, exchange: str, routing_key: str, body: bytes, properties: spec.Basic.Properties
    ) -> None:
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT):
                channel = self._publish_channel
                if channel is None or channel.is_closed:
                    conn = await self._connect()
                    channel = self._publish_channel = await conn.channel(publisher_confirms=True)
                result = await channel.basic_publish(
                    body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=properties,
                    mandatory=True,
                )
        except aiormq.exceptions.PublishError as exc:
            raise PublishNotConfirmed("the broker returned the message as unroutable") from exc
        except BrokerUnavailable:
            raise  # no connection: already in words
        except TimeoutError as exc:
            self._discard()
            raise BrokerUnavailable("publish failed: the broker did not answer in time") from exc
        except CONNECTION_ERRORS as exc:
            raise BrokerUnavailable(f"publish failed: {_reason(exc)}") from exc
        if not isinstance(result, spec.Basic.Ack):
            raise PublishNotConfirmed("the broker did not confirm the message")

    async def connection(self) -> aiormq.abc.AbstractConnection:
        """The shared connection (declaring, publishing, work queues), opened when there is none."""
        return await _survive_drop(self._connect())

    def read(self, start: StartAt, *, purpose: str = "live") -> AmqpReader:
        return AmqpReader(self, start, purpose)

    async def tail(self, *, patient: bool = False) -> int | None:
        """Learn the last offset by reading from ``last`` (the start of the last chunk)."""
        if not patient:
            patient = await self._counts_messages()  # then a slow broker is given time
        reader = AmqpReader(self, "last", "tail")
        last: int | None = None
        give_up = asyncio.get_running_loop().time() + TAIL_MAX_READ
        async with reader:
            batches = reader.__aiter__()
            wait = TAIL_PATIENT_WAIT if patient else TAIL_FIRST_WAIT
            while last is None or asyncio.get_running_loop().time() < give_up:
                try:
                    async with asyncio.timeout(wait):
                        batch = await anext(batches)
                except TimeoutError:
                    return last
                last = batch[-1].offset
                wait = TAIL_IDLE_WAIT
        return last

    async def _counts_messages(self) -> bool:
        """Whether RabbitMQ counts any message in the stream (False when it cannot say)."""
        try:
            async with asyncio.timeout(DECLARE_TIMEOUT):
                return bool(await _survive_drop(self._message_count()))
        except _COUNT_ERRORS:
            log.debug("counting the stream's messages failed", exc_info=True)
            return False

    async def _message_count(self) -> int:
        conn = await self._connect()
        channel = await conn.channel()
        declared = await channel.queue_declare(self._settings.stream, passive=True)
        await channel.close()
        return declared.message_count or 0

    async def aclose(self) -> None:
        self._closed = True
        if self._discarded:
            await asyncio.wait(self._discarded, timeout=2)
        conn, self._connection = self._connection, None
        if conn is not None:
            try:
                await conn.close()
            except CONNECTION_ERRORS:
                log.debug("closing the connection failed", exc_info=True)


async def _survive_drop(call: Coroutine[Any, Any, _T]) -> _T:
    """Await an aiormq call in a task of its own.

    When aiormq drops a connection that stopped answering, it cancels whatever
    waits on it; that must fail the call, not cancel the task that made it.
    """
    task = asyncio.ensure_future(call)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if task.cancelled() and current is not None and not current.cancelling():
            raise BrokerUnavailable("the connection was dropped (no heartbeat)") from None
        task.cancel()
        raise


def _ignore_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("closing a silent connection failed", exc_info=task.exception())


class AmqpReader:
    """One stream consumer on a connection of its own; iterate it for batches in offset order.

    Every reader has a connection of its own, so that a slow or failing read
    (a catch-up, a tail probe) never holds up the live one.
    """

    def __init__(
        self,
        broker: AmqpBroker,
        start: StartAt | Literal["last"],
        purpose: str,
    ) -> None:
        self._broker = broker
        self._start = _offset_argument(start)
        self._purpose = purpose
        self._consumer: StreamConsumer | None = None

    async def __aenter__(self) -> AmqpReader:
        broker = self._broker
        settings = broker._settings

        def consume(url: str) -> Awaitable[StreamConsumer]:
            return StreamConsumer.open(
                _named(url, self._purpose),
                settings.stream,
                self._start,
                prefetch=settings.prefetch,
                timeout=CONNECT_TIMEOUT,
            )

        self._consumer = await broker._try_urls(consume, self._purpose)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.aclose()

    async def __aiter__(self) -> AsyncIterator[Sequence[Message]]:
        consumer = self._consumer
        if consumer is None:
            raise BrokerUnavailable("the reader is not open")
        try:
            async for batch in consumer:
                yield batch
        except BrokerUnavailable as exc:
            raise BrokerUnavailable(f"stream consumer ({self._purpose}): {exc}") from None
