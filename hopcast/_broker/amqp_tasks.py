"""RabbitMQ work queues: quorum queues with a delivery limit, dead-lettered at least once.

A work queue ``hopcast.q.NAME`` is a quorum queue (``x-delivery-limit``,
``x-dead-letter-strategy: at-least-once``, which needs ``x-overflow:
reject-publish``) that dead-letters through the default exchange into the
classic queue ``hopcast.q.NAME.dead``. A classic queue, not a stream: a
classic queue puts a task given back with ``basic.nack`` where it was, so the
dead letters can be listed (``basic.get`` each, then give them all back) and
redriven (moved, then acknowledged) without reordering them, and a redriven
task leaves it; a stream would keep every dead letter for ever.

Each process also consumes a control queue of its own (``hopcast.ctl.`` and its
start's id: exclusive, auto-delete, so it goes when the process does): another
process sends it settlements of the leases this one holds (``mandatory``, so a
request to a process that is gone comes back unroutable) and waits for the
answer on RabbitMQ's direct reply-to.

Tasks travel on the broker's shared connection (aiormq: they are few next to
the events); each `AmqpChannel` is one AMQP channel, whose unacknowledged
deliveries RabbitMQ gives back when it closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import uuid
from collections import deque
from datetime import datetime
from typing import Any

import aiormq
import aiormq.abc
from pamqp import commands as spec

from hopcast._broker.amqp import CONNECTION_ERRORS, DECLARE_TIMEOUT, AmqpBroker, _reason
from hopcast._broker.base import (
    DEAD_SUFFIX,
    ControlHandler,
    DeadLetter,
    Delivery,
    Outcome,
    QueueShape,
)
from hopcast._core.errors import BrokerUnavailable

log = logging.getLogger("hopcast.broker")

_CHANNEL_KEYS = itertools.count(1)
SETTLE_TIMEOUT = 10.0
CONTROL_ERRORS: tuple[type[BaseException], ...] = (BrokerUnavailable, *CONNECTION_ERRORS)
REPLY_TO = "amq.rabbitmq.reply-to"
CONTROL_PAUSE_MAX = 2.0
SETTLE_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *CONNECTION_ERRORS)


def queue_arguments(queue: str, shape: QueueShape) -> dict[str, Any]:
    """The arguments of a work queue (design §6b).

    >>> queue_arguments("hopcast.q.mail", QueueShape(3))["x-dead-letter-routing-key"]
    'hopcast.q.mail.dead'
    """
    arguments: dict[str, Any] = {
        "x-queue-type": "quorum",
        "x-delivery-limit": shape.delivery_limit,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": queue + DEAD_SUFFIX,
    }
    if shape.max_length is not None:
        arguments["x-max-length"] = shape.max_length
    return arguments


def _unavailable(what: str, exc: BaseException) -> BrokerUnavailable:
    return BrokerUnavailable(f"{what} failed: {_reason(exc)}")


class AmqpTasks:
    """The `TaskBroker` of RabbitMQ, over the `AmqpBroker`'s connection and publisher."""

    def __init__(self, broker: AmqpBroker) -> None:
        self._broker = broker
        self._dead_lock = asyncio.Lock()  # one listing or redrive of dead letters at a time
        self._requests: aiormq.abc.AbstractChannel | None = None  # consumes the direct reply-to
        self._requests_lock = asyncio.Lock()
        self._answers: dict[str, asyncio.Future[bytes]] = {}
        self._answering: set[asyncio.Task[None]] = set()

    async def _channel(self) -> aiormq.abc.AbstractChannel:
        conn = await self._broker.connection()
        return await conn.channel()

    async def declare(self, queue: str, shape: QueueShape) -> None:
        try:
            async with asyncio.timeout(DECLARE_TIMEOUT):
                await self._declare(queue + DEAD_SUFFIX, {})
                await self._declare(queue, queue_arguments(queue, shape))
        except TimeoutError as exc:
            raise BrokerUnavailable(f"declaring {queue} got no answer") from exc
        except CONNECTION_ERRORS as exc:
            raise _unavailable(f"declaring {queue}", exc) from exc

    async def _declare(self, queue: str, arguments: dict[str, Any]) -> None:
        channel = await self._channel()
        try:
            await channel.queue_declare(queue, durable=True, arguments=arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            log.warning(
                "queue %r exists with other arguments (%s); using it as it is: asked for %s",
                queue,
                exc,
                arguments or "a classic queue",
            )
            channel = await self._channel()
            await channel.queue_declare(queue, passive=True)
        await channel.close()

    async def enqueue(self, queue: str, body: bytes, type: str | None, id: str) -> None:
        properties = spec.Basic.Properties(message_type=type, message_id=id, delivery_mode=2)
        await self._broker.send("", queue, body, properties)

    async def channel(self, queue: str, prefetch: int | None) -> AmqpChannel:
        try:
            async with asyncio.timeout(DECLARE_TIMEOUT):
                opened = AmqpChannel(await self._channel(), queue)
                try:
                    if prefetch is not None:
                        await opened.consume(prefetch)
                except BaseException:
                    # not handed to anyone: closed, so that nothing waits on it unacknowledged
                    _close_soon(opened)
                    raise
                return opened
        except TimeoutError as exc:
            raise BrokerUnavailable(f"opening a channel on {queue} got no answer") from exc
        except CONNECTION_ERRORS as exc:
            raise _unavailable(f"consuming {queue}", exc) from exc

    # -- control queues: settlements routed to the process holding the lease -----------

    async def serve_control(
        self, queue: str, handler: ControlHandler, ready: asyncio.Event
    ) -> None:
        pause = 0.2
        while True:
            try:
                channel = await (await self._broker.connection()).channel(publisher_confirms=False)
                await channel.queue_declare(queue, exclusive=True, auto_delete=True)
                await channel.basic_consume(
                    queue, functools.partial(self._answer, channel, handler), no_ack=True
                )
            except CONTROL_ERRORS as exc:
                ready.clear()
                log.warning("consuming the control queue %s: %s; retrying", queue, _reason(exc))
                await asyncio.sleep(pause)
                pause = min(CONTROL_PAUSE_MAX, pause * 2)
                continue
            pause = 0.2
            ready.set()
            try:
                await asyncio.shield(channel.closing)
            except asyncio.CancelledError:
                if not channel.is_closed:
                    await channel.close()
                raise
            except BaseException:  # closed with an error: declared again on a new channel
                ready.clear()  # no lease is granted until it is
                log.info("the control queue %s closed; declaring it again", queue)

    async def _answer(
        self,
        channel: aiormq.abc.AbstractChannel,
        handler: ControlHandler,
        message: aiormq.abc.DeliveredMessage,
    ) -> None:
        async def answer() -> None:
            properties = message.header.properties
            reply = await handler(message.body)
            if properties.reply_to and not channel.is_closed:
                again = spec.Basic.Properties(correlation_id=properties.correlation_id)
                try:
                    await channel.basic_publish(
                        reply, exchange="", routing_key=properties.reply_to, properties=again
                    )
                except CONNECTION_ERRORS as exc:
                    log.info("answering a routed settlement failed: %s", _reason(exc))

        task = asyncio.get_running_loop().create_task(answer())  # the next waits for none
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _request_channel(self) -> aiormq.abc.AbstractChannel:
        channel = self._requests
        if channel is not None and not channel.is_closed:
            return channel
        async with self._requests_lock:
            channel = self._requests
            if channel is None or channel.is_closed:
                channel = await (await self._broker.connection()).channel(publisher_confirms=True)
                await channel.basic_consume(REPLY_TO, self._on_reply, no_ack=True)
                self._requests = channel
            return channel

    async def _on_reply(self, message: aiormq.abc.DeliveredMessage) -> None:
        waiting = self._answers.get(message.header.properties.correlation_id or "")
        if waiting is not None and not waiting.done():
            waiting.set_result(message.body)

    async def request(self, queue: str, body: bytes, timeout: float) -> bytes | None:
        correlation = uuid.uuid4().hex
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._answers[correlation] = answer
        try:
            async with asyncio.timeout(timeout):
                channel = await self._request_channel()
                properties = spec.Basic.Properties(reply_to=REPLY_TO, correlation_id=correlation)
                try:
                    await channel.basic_publish(
                        body, exchange="", routing_key=queue, properties=properties, mandatory=True
                    )
                except aiormq.exceptions.PublishError:
                    return None  # no such control queue: its process is gone
                return await answer
        except TimeoutError as exc:
            raise BrokerUnavailable(f"{queue} did not answer in {timeout:g} s") from exc
        except CONNECTION_ERRORS as exc:
            raise _unavailable(f"asking {queue}", exc) from exc
        finally:
            del self._answers[correlation]

    async def depth(self, queue: str) -> int:
        try:
            channel = await self._channel()
            declared = await channel.queue_declare(queue, passive=True)
            await channel.close()
        except CONNECTION_ERRORS as exc:
            raise _unavailable(f"counting {queue}", exc) from exc
        return declared.message_count or 0

    async def dead_letters(self, queue: str, most: int) -> list[DeadLetter]:
        async with self._dead_lock:
            channel = AmqpChannel(await self._channel(), queue + DEAD_SUFFIX)
            try:
                taken = await channel.get_messages(most)
                return [_dead_letter(message) for message in taken]
            finally:
                await channel.aclose()  # every one goes back where it was

    async def redrive(self, queue: str, ids: frozenset[str] | None) -> int:
        """Take every dead letter; republish the chosen ones (confirmed), then ack them."""
        moved = 0
        async with self._dead_lock:
            channel = AmqpChannel(await self._channel(), queue + DEAD_SUFFIX)
            try:
                for message in await channel.get_messages(None):
                    properties = message.header.properties
                    if ids is not None and properties.message_id not in ids:
                        continue
                    again = spec.Basic.Properties(
                        message_type=properties.message_type,
                        message_id=properties.message_id,
                        delivery_mode=2,
                    )
                    await self._broker.send("", queue, message.body, again)
                    await channel.settle(_tag(message), "ack")
                    moved += 1
            finally:
                await channel.aclose()
        return moved


_CLOSING: set[asyncio.Task[None]] = set()


def _close_soon(channel: AmqpChannel) -> None:
    task = asyncio.get_running_loop().create_task(channel.aclose())
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


def _tag(message: aiormq.abc.DeliveredMessage) -> int:
    tag = getattr(message.delivery, "delivery_tag", None)
    return int(tag) if isinstance(tag, int) else 0


def _delivery(message: aiormq.abc.DeliveredMessage) -> Delivery:
    properties = message.header.properties
    headers = properties.headers or {}
    count = headers.get("x-delivery-count", 0)
    redelivered = bool(getattr(message.delivery, "redelivered", False))
    return Delivery(
        tag=_tag(message),
        id=properties.message_id or "",
        type=properties.message_type,
        body=message.body,
        deliveries=(count if isinstance(count, int) else 0) + 1,
        redelivered=redelivered,
    )


def _dead_letter(message: aiormq.abc.DeliveredMessage) -> DeadLetter:
    properties = message.header.properties
    deaths = (properties.headers or {}).get("x-death") or [{}]
    last = deaths[0] if isinstance(deaths, list) and isinstance(deaths[0], dict) else {}
    died = last.get("time")
    return DeadLetter(
        id=properties.message_id or "",
        type=properties.message_type,
        body=message.body,
        reason=str(last.get("reason", "unknown")),
        count=count if isinstance(count := last.get("count"), int) else 1,
        died=died if isinstance(died, datetime) else None,
    )


class AmqpChannel:
    """One AMQP channel of a work queue: consuming (``basic.consume``) or pulling."""

    def __init__(self, channel: aiormq.abc.AbstractChannel, queue: str) -> None:
        self._channel = channel
        self._queue = queue
        self._arrived: deque[aiormq.abc.DeliveredMessage] = deque()
        self._came = asyncio.Event()
        self.key = next(_CHANNEL_KEYS)
        self._pulling = asyncio.Lock()  # a pull's basic.qos and basic.consume go together
        self._qos: int | None = None

    @property
    def closed(self) -> bool:
        return self._channel.is_closed

    async def consume(self, prefetch: int) -> None:
        await self._channel.basic_qos(prefetch_count=prefetch)
        await self._channel.basic_consume(self._queue, self._take, no_ack=False)

    async def _take(self, message: aiormq.abc.DeliveredMessage) -> None:
        self._arrived.append(message)
        self._came.set()

    async def next(self) -> Delivery:
        # taken from the deque only after the wait, with no await between: a cancelled
        # wait (the stream's heartbeat timeout) never drops a delivery that came meanwhile
        while not self._arrived:
            if self._channel.is_closed:
                raise BrokerUnavailable(f"the channel consuming {self._queue} closed")
            self._came.clear()
            came = asyncio.ensure_future(self._came.wait())
            closing = asyncio.ensure_future(asyncio.shield(self._channel.closing))
            try:
                await asyncio.wait((came, closing), return_when=asyncio.FIRST_COMPLETED)
            finally:
                came.cancel()
                closing.cancel()
                if closing.done() and not closing.cancelled():
                    closing.exception()  # retrieved: the loop need not report it
        return _delivery(self._arrived.popleft())

    def arrived(self) -> list[Delivery]:
        taken = [_delivery(message) for message in self._arrived]
        self._arrived.clear()
        return taken

    async def get(self, most: int) -> list[Delivery]:
        return [_delivery(message) for message in await self.get_messages(most)]

    async def take(self, most: int, wait: float, wake: asyncio.Event) -> list[Delivery]:
        """A consumer of its own with a prefetch of ``most``, cancelled once a first task
        came (or the wait ended): RabbitMQ sends ``basic.cancel-ok`` after the last
        delivery to that consumer, so every one it sent is in the answer, and no more
        than ``most``. One round trip for a batch, and no polling while the queue is empty.
        One task, or none waited for, is a ``basic.get`` first (one round trip).
        """
        if wait <= 0 or most == 1:
            got = await self.get(most)
            if got or wait <= 0:
                return got
        taken: list[Delivery] = []

        async def took(message: aiormq.abc.DeliveredMessage) -> None:
            taken.append(_delivery(message))
            wake.set()

        try:
            async with self._pulling:
                if self._qos != most:
                    await self._channel.basic_qos(prefetch_count=most)
                    self._qos = most
                consumer = await self._channel.basic_consume(self._queue, took, no_ack=False)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await wake.wait()
            tag = consumer.consumer_tag
            if tag is not None:
                await self._channel.basic_cancel(tag)
        except CONNECTION_ERRORS as exc:
            raise _unavailable(f"taking from {self._queue}", exc) from exc
        return taken

    async def get_messages(self, most: int | None) -> list[aiormq.abc.DeliveredMessage]:
        """Up to ``most`` messages (None: all) by ``basic.get``, unacknowledged."""
        queue = self._queue
        taken: list[aiormq.abc.DeliveredMessage] = []
        try:
            while most is None or len(taken) < most:
                message = await self._channel.basic_get(queue, no_ack=False)
                if not isinstance(message.delivery, spec.Basic.GetOk):
                    break
                taken.append(message)
        except CONNECTION_ERRORS as exc:
            raise _unavailable(f"taking from {queue}", exc) from exc
        return taken

    async def settle(self, tag: int, outcome: Outcome) -> None:
        try:
            async with asyncio.timeout(SETTLE_TIMEOUT):
                if outcome == "ack":
                    await self._channel.basic_ack(tag)
                else:
                    await self._channel.basic_nack(tag, requeue=outcome == "requeue")
        except SETTLE_ERRORS as exc:
            raise _unavailable("settling a task", exc) from exc

    async def aclose(self) -> None:
        if self._channel.is_closed:
            return
        try:
            await self._channel.close()
        except CONNECTION_ERRORS:
            log.debug("closing a work queue channel failed", exc_info=True)
