"""One stream consumer on a connection of its own, speaking AMQP 0-9-1 itself.

Reading the stream is the gateway's hot path: every event passes here once.
`StreamConsumer` is an asyncio protocol that parses deliveries straight from
the socket's bytes into `Message` values, in batches of whatever one read
holds, and acknowledges with one ``basic.ack`` (``multiple``) once the hub has
taken a quarter of the prefetch: the acks are the stream's credit, so an
unread backlog stops the broker at ``prefetch`` messages. A message it cannot
decode (no integer ``x-stream-offset``, a routing key or ``type`` that is not
UTF-8) is acknowledged, logged and stepped over; the read goes on.

Example::

    consumer = await StreamConsumer.open(url, "events", "first", prefetch=1000)
    async for batch in consumer:
        ...
    await consumer.aclose()
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, cast
from urllib.parse import parse_qsl, unquote, urlsplit

from hopcast._broker import wire
from hopcast._broker.base import Message
from hopcast._core.errors import BrokerUnavailable, FrameError

log = logging.getLogger("hopcast.broker")  # named by layer: module paths are internal

Offset = int | datetime | str
"""An ``x-stream-offset``: an offset, a time, or ``first``, ``next``, ``last``."""

CLIENT_PROPERTIES = {
    "product": "hopcast",
    "capabilities": {
        "consumer_cancel_notify": True,
        "connection.blocked": True,
        "authentication_failure_close": True,
    },
}
CHANNEL = 1
ACK_SHARE = 4
"""Acknowledge once a quarter of the prefetch is taken."""


class StreamConsumer(asyncio.Protocol):
    """A connection with one channel consuming one stream; iterate it for batches."""

    def __init__(self, name: str, heartbeat: int) -> None:
        self._name = name
        self._heartbeat = heartbeat
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._rest = b""
        self._replies: dict[wire.Method, asyncio.Future[bytes]] = {}
        self._delivery: wire.Delivery | None = None
        self._messages: list[Message] = []
        self._received_tag = 0
        self._acked_tag = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: BrokerUnavailable | None = None
        self._last_heard = self._loop.time()
        self._ticker: asyncio.TimerHandle | None = None
        self._ack_every = 1
        self._frame_max = wire.FRAME_MAX
        self.skipped = 0

    @classmethod
    async def open(
        cls,
        url: str,
        stream: str,
        offset: Offset,
        *,
        prefetch: int,
        timeout: float = 5.0,
    ) -> StreamConsumer:
        """Connect, open a channel and start consuming ``stream`` from ``offset``."""
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        tls = parts.scheme == "amqps"
        heartbeat = int(query.get("heartbeat", "60"))
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, consumer = await loop.create_connection(
                lambda: cls(query.get("name", "hopcast"), heartbeat),
                parts.hostname or "localhost",
                parts.port or (5671 if tls else 5672),
                ssl=ssl.create_default_context() if tls else None,
            )
            try:
                await consumer._handshake(
                    unquote(parts.username or "guest"),
                    unquote(parts.password or "guest"),
                    unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
                )
                await consumer._consume(stream, offset, prefetch)
            except BaseException:
                consumer._abort()
                raise
        return consumer

    # -- the conversation ------------------------------------------------------

    async def _call(self, method: wire.Method, arguments: bytes, reply: wire.Method) -> bytes:
        channel = 0 if method[0] == 10 else CHANNEL
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._replies[reply] = future
        self._send(wire.encode_method(channel, method, arguments))
        return await future

    async def _handshake(self, user: str, password: str, vhost: str) -> None:
        start = self._replies[wire.CONNECTION_START] = self._loop.create_future()
        tune = self._replies[wire.CONNECTION_TUNE] = self._loop.create_future()
        self._send(wire.PROTOCOL_HEADER)
        await start
        properties = dict(CLIENT_PROPERTIES, connection_name=self._name)
        credentials = f"\0{user}\0{password}".encode()
        start_ok = (
            wire.table(properties)
            + wire.shortstr("PLAIN")
            + wire.longstr(credentials)
            + wire.shortstr("en_US")
        )
        self._send(wire.encode_method(0, wire.CONNECTION_START_OK, start_ok))
        tuned = await tune
        channel_max, frame_max = tuned[4:6], int.from_bytes(tuned[6:10], "big")
        self._frame_max = frame_max or self._frame_max
        heartbeat = self._heartbeat.to_bytes(2, "big")
        arguments = channel_max + frame_max.to_bytes(4, "big") + heartbeat
        self._send(wire.encode_method(0, wire.CONNECTION_TUNE_OK, arguments))
        if self._heartbeat:
            self._tick()
        await self._call(
            wire.CONNECTION_OPEN, wire.shortstr(vhost) + b"\0\0", wire.CONNECTION_OPEN_OK
        )
        await self._call(wire.CHANNEL_OPEN, b"\0", wire.CHANNEL_OPEN_OK)

    async def _consume(self, stream: str, offset: Offset, prefetch: int) -> None:
        prefetch = min(prefetch, 0xFFFF)  # a short on the wire
        self._ack_every = max(1, prefetch // ACK_SHARE)
        qos = (0).to_bytes(4, "big") + prefetch.to_bytes(2, "big") + b"\0"
        await self._call(wire.BASIC_QOS, qos, wire.BASIC_QOS_OK)
        arguments: dict[str, Any] = {"x-stream-offset": offset}
        consume = (
            b"\0\0" + wire.shortstr(stream) + wire.shortstr("") + b"\0" + wire.table(arguments)
        )
        await self._call(wire.BASIC_CONSUME, consume, wire.BASIC_CONSUME_OK)

    def _tick(self) -> None:
        """Send a heartbeat every half interval; give up after a whole one of silence."""
        now = self._loop.time()
        if now - self._last_heard > self._heartbeat:
            self._fail(f"no heartbeat from the broker for {self._heartbeat} s")
            self._abort()
            return
        self._send(wire.HEARTBEAT)
        self._ticker = self._loop.call_later(self._heartbeat / 4, self._tick)

    def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _fail(self, reason: str) -> None:
        if self._error is None:
            self._error = BrokerUnavailable(reason)
        for future in self._replies.values():
            if not future.done():
                future.set_exception(self._error)
        self._replies.clear()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _abort(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._transport is not None:
            self._transport.abort()

    async def aclose(self) -> None:
        """Say goodbye to the broker (briefly) and close the socket."""
        self._fail("the consumer was closed")
        transport = self._transport
        if transport is None or transport.is_closing():
            self._abort()
            return
        closed = self._replies[wire.CONNECTION_CLOSE_OK] = self._loop.create_future()
        goodbye = (200).to_bytes(2, "big") + wire.shortstr("bye") + b"\0\0\0\0"
        self._send(wire.encode_method(0, wire.CONNECTION_CLOSE, goodbye))
        try:
            async with asyncio.timeout(1.0):
                await closed
        except (TimeoutError, BrokerUnavailable):
            pass
        finally:
            self._abort()  # also when the close itself is cancelled (shutdown)

    # -- batches -----------------------------------------------------------------

    async def __aiter__(self) -> AsyncIterator[Sequence[Message]]:
        while True:
            # Acknowledging a quarter of the credit at a time leaves the broker
            # three quarters to send with, so it never waits on us for credit.
            if self._received_tag - self._acked_tag >= self._ack_every:
                self._acked_tag = self._received_tag
                self._send(wire.encode_ack(CHANNEL, self._acked_tag))
            if not self._messages:
                if self._error is not None:
                    raise self._error
                self._waiter = self._loop.create_future()
                await self._waiter
                continue
            batch, self._messages = self._messages, []
            yield batch

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self._fail(f"the connection was lost: {exc!r}" if exc else "the connection was closed")

    def data_received(self, data: bytes) -> None:
        self._last_heard = self._loop.time()
        buf = self._rest + data if self._rest else data
        before = len(self._messages)
        delivery_tag = self._received_tag
        try:
            pos = self._take_frames(buf)
        except (IndexError, ValueError, struct.error) as exc:  # FrameError is a ValueError
            self._fail(f"the broker sent bytes that are not AMQP 0-9-1: {exc}")
            self._abort()
            return
        self._rest = buf[pos:] if pos < len(buf) else b""
        if len(self._messages) != before or delivery_tag != self._received_tag:
            self._wake()

    def _take_frames(self, buf: bytes) -> int:
        """Take every whole frame of ``buf``; return where the partial frame left over starts.

        The loop runs once per frame of every delivery, so its steps stay inline:
        per frame it calls only the codec and, once a message is whole,
        `_complete`; the rare frames (a method other than ``basic.deliver``, a
        heartbeat) go to `_control`.
        """
        pos, size = 0, len(buf)
        head = wire.FRAME_HEAD.unpack_from
        delivery = self._delivery
        while size - pos >= 8:
            kind, _channel, length = head(buf, pos)
            if kind not in wire.FRAME_TYPES or length > self._frame_max:
                raise FrameError(f"a frame of type {kind} and {length} bytes")
            start = pos + 7
            end = start + length
            if end >= size:
                break
            if buf[end] != wire.FRAME_END:
                raise FrameError("a frame without its end octet")
            pos = end + 1
            if kind in wire.CONTENT_FRAMES:
                if delivery is None:
                    raise FrameError(f"a {wire.FRAME_NAMES[kind]} frame outside a delivery")
                if kind == wire.FRAME_BODY:
                    delivery.parts.append(buf[start:end])
                    delivery.size -= length
                else:
                    wire.decode_header(buf, start, delivery)
                if delivery.size <= 0:  # its last body frame, or a header announcing no body
                    self._complete(delivery)
                    delivery = None
            elif kind == wire.FRAME_METHOD and buf[start : start + 4] == wire.BASIC_DELIVER_ID:
                delivery = wire.decode_deliver(buf, start)
            else:
                self._control(kind, buf[start:end])
        self._delivery = delivery
        return pos

    def _complete(self, delivery: wire.Delivery) -> None:
        self._received_tag = delivery.tag
        try:
            if delivery.offset is None:
                raise ValueError("no integer x-stream-offset header")
            topic = delivery.routing_key.decode()
            event = delivery.type.decode() if delivery.type is not None else None
        except ValueError as exc:
            self.skipped += 1
            log.warning("stream message after offset %s stepped over: %s", self._last_offset(), exc)
            return
        parts = delivery.parts
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        self._messages.append(Message(delivery.offset, topic, event, body))

    def _last_offset(self) -> int | str:
        return self._messages[-1].offset if self._messages else "unknown"

    def _control(self, kind: int, payload: bytes) -> None:
        """A frame outside the deliveries: a reply awaited, a close, a cancel or a heartbeat."""
        if kind == wire.FRAME_HEARTBEAT:
            return  # hearing it was the point (`_last_heard`)
        method = wire.method_of(payload)
        if method == wire.CONNECTION_CLOSE:
            self._send(wire.encode_method(0, wire.CONNECTION_CLOSE_OK))
            self._fail(f"the broker closed the connection: {wire.close_reason(payload)}")
            self._abort()
        elif method == wire.CHANNEL_CLOSE:
            self._send(wire.encode_method(CHANNEL, wire.CHANNEL_CLOSE_OK))
            self._fail(f"the broker closed the channel: {wire.close_reason(payload)}")
            self._abort()
        elif method == wire.BASIC_CANCEL:
            self._fail("the broker cancelled the consumer (stream deleted?)")
            self._abort()
        else:
            future = self._replies.pop(method, None)
            if future is not None and not future.done():
                future.set_result(bytes(payload))
