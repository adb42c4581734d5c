"""One stream consumer speaking RabbitMQ's own stream protocol (port 5552).

Over AMQP 0-9-1, RabbitMQ turns every stored message back into AMQP 0-9-1
frames for the consumer, one by one; over its stream protocol it sends the
stream's chunks as they lie on disk. `NativeConsumer` reads those chunks
straight from the socket and decodes the messages in them (RabbitMQ stores a
message published over AMQP 0-9-1 as an AMQP 1.0 message: the routing key is
the ``x-routing-key`` message annotation, the ``type`` property the
``x-basic-type`` application property, the body the data sections).

It has the interface of `hopcast.broker.consumer.StreamConsumer`: iterate it
for batches of `Message` in offset order; `aclose` ends it. Credit is counted
in chunks: the broker sends `CREDIT` chunks ahead, and one more for each the
hub has taken. A message it cannot decode is logged, counted in ``skipped``
and stepped over; the read goes on.

Example::

    consumer = await NativeConsumer.open(url, "events", "first", port=5552)
    async for batch in consumer:
        ...
    await consumer.aclose()
"""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib
from datetime import datetime
from urllib.parse import parse_qsl, unquote, urlsplit

from hopcast.broker import Message
from hopcast.broker.reading import ConsumerProtocol
from hopcast.errors import BrokerUnavailable

log = logging.getLogger(__name__)

PEER_PROPERTIES = 0x11
SASL_HANDSHAKE = 0x12
SASL_AUTHENTICATE = 0x13
TUNE = 0x14
OPEN = 0x15
CLOSE = 0x16
HEARTBEAT = 0x17
SUBSCRIBE = 0x07
DELIVER = 0x08
CREDIT_COMMAND = 0x09
METADATA_UPDATE = 0x10
RESPONSE = 0x8000

OK = 1
STREAM_DOES_NOT_EXIST = 2
RESPONSE_CODES = {
    2: "stream does not exist",
    6: "stream not available",
    8: "authentication failure",
    12: "virtual host access failure",
    16: "access refused",
}

SUBSCRIPTION = 1
TUNED = 0
"""Where the broker's Tune waits among the replies (correlation ids start at 1)."""
CREDIT = 10
"""Chunks the broker may send ahead of what the hub has taken."""
FRAME_MAX = 8 * 1024 * 1024
CHUNK_HEADER = struct.Struct(">BBHIqQQiIII")
"""Magic and version, chunk type, entries, records, timestamp, epoch, first offset,
CRC, data length, trailer length, reserved: 48 bytes."""
USER_CHUNK = 0
_U32 = struct.Struct(">I")
_SUB_BATCH = struct.Struct(">BHII")

# AMQP 1.0 section descriptors, and the keys that carry what the hub needs.
SECTION_MESSAGE_ANNOTATIONS = 0x72
SECTION_APPLICATION_PROPERTIES = 0x74
SECTION_DATA = 0x75
SECTION_AMQP_VALUE = 0x77
ROUTING_KEY = b"x-routing-key"
BASIC_TYPE = b"x-basic-type"

_FIXED_WIDTH = {
    **dict.fromkeys(range(0x40, 0x46), 0),
    **dict.fromkeys(range(0x50, 0x57), 1),
    **dict.fromkeys((0x60, 0x61), 2),
    **dict.fromkeys(range(0x70, 0x75), 4),
    **dict.fromkeys(range(0x80, 0x85), 8),
    **dict.fromkeys((0x94, 0x98), 16),
}
"""AMQP 1.0 constructors of a fixed width, and that width."""
_STRINGS = (0xA0, 0xA1, 0xA3, 0xB0, 0xB1, 0xB3)


class NativeUnavailable(BrokerUnavailable):
    """The stream protocol cannot serve this read (port closed, plugin off, no such stream)."""


def _skip(buf: bytes, pos: int) -> int:
    """The position just after the AMQP 1.0 value that starts at ``pos``."""
    code = buf[pos]
    if code == 0:  # a described value: its descriptor, then the value
        return _skip(buf, _skip(buf, pos + 1))
    width = _FIXED_WIDTH.get(code)
    if width is not None:
        return pos + 1 + width
    kind = code & 0xF0
    if kind in (0xA0, 0xC0, 0xE0):  # one-byte size: binaries, strings, symbols, lists, maps, arrays
        return pos + 2 + buf[pos + 1]
    if kind in (0xB0, 0xD0, 0xF0):  # four-byte size
        size: int = _U32.unpack_from(buf, pos + 1)[0]
        return pos + 5 + size
    raise ValueError(f"an AMQP 1.0 value with constructor 0x{code:02x}")


def _string(buf: bytes, pos: int) -> bytes:
    """The bytes of the string, symbol or binary at ``pos``."""
    code = buf[pos]
    if code in (0xA0, 0xA1, 0xA3):
        return buf[pos + 2 : pos + 2 + buf[pos + 1]]
    if code in (0xB0, 0xB1, 0xB3):
        size = _U32.unpack_from(buf, pos + 1)[0]
        return buf[pos + 5 : pos + 5 + size]
    raise ValueError(f"a string expected, found constructor 0x{code:02x}")


def _lookup(buf: bytes, pos: int, wanted: bytes) -> bytes | None:
    """The string value of key ``wanted`` in the AMQP 1.0 map at ``pos`` (None if absent)."""
    code = buf[pos]
    if code == 0x40:  # null
        return None
    if code == 0xC1:
        count, at = buf[pos + 2], pos + 3
    elif code == 0xD1:
        count, at = _U32.unpack_from(buf, pos + 5)[0], pos + 9
    else:
        raise ValueError(f"a map expected, found constructor 0x{code:02x}")
    for _ in range(count // 2):
        value_at = _skip(buf, at)
        if buf[at] in _STRINGS and _string(buf, at) == wanted:
            return _string(buf, value_at)
        at = _skip(buf, value_at)
    return None


def decode_message(buf: bytes) -> tuple[str, str | None, bytes]:
    """Topic, event type and body of one stored AMQP 1.0 message.

    >>> decode_message(bytes.fromhex("0053 72 c1 15 02 a3 0d") + b"x-routing-key"
    ...                + b"\\xa1\\x03a.b" + b"\\x00\\x53\\x75\\xa0\\x02hi")
    ('a.b', None, b'hi')
    """
    topic: bytes | None = None
    event: bytes | None = None
    body: list[bytes] = []
    pos, end = 0, len(buf)
    while pos < end:
        if buf[pos] != 0:
            raise ValueError("an AMQP 1.0 section without a descriptor")
        if buf[pos + 1] == 0x53:  # smallulong
            section, pos = buf[pos + 2], pos + 3
        elif buf[pos + 1] == 0x80:  # ulong
            section, pos = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
        else:
            raise ValueError("an AMQP 1.0 section with a descriptor that is not a number")
        if section == SECTION_DATA:
            body.append(_string(buf, pos))
        elif section == SECTION_MESSAGE_ANNOTATIONS:
            topic = _lookup(buf, pos, ROUTING_KEY)
        elif section == SECTION_APPLICATION_PROPERTIES:
            event = _lookup(buf, pos, BASIC_TYPE)
        elif section == SECTION_AMQP_VALUE and buf[pos] in _STRINGS:
            body.append(_string(buf, pos))
        pos = _skip(buf, pos)
    if pos != end:
        raise ValueError("an AMQP 1.0 section runs past the message's end")
    if topic is None:
        raise ValueError("no x-routing-key annotation (not published through an exchange)")
    return (
        topic.decode(),
        event.decode() if event is not None else None,
        body[0] if len(body) == 1 else b"".join(body),
    )


def _retrieved(future: asyncio.Future[bytes]) -> None:
    if not future.cancelled():
        future.exception()


def _offset_spec(offset: int | datetime | str) -> bytes:
    if isinstance(offset, datetime):
        return struct.pack(">Hq", 5, int(offset.timestamp() * 1000))
    if isinstance(offset, int):
        return struct.pack(">HQ", 4, max(0, offset))
    kinds = {"first": 1, "last": 2, "next": 3}
    return struct.pack(">H", kinds[offset])


def _string_field(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _properties(items: dict[str, str]) -> bytes:
    out = [len(items).to_bytes(4, "big")]
    out.extend(_string_field(k) + _string_field(v) for k, v in items.items())
    return b"".join(out)


class NativeConsumer(ConsumerProtocol):
    """A stream-protocol connection with one subscription; iterate it for batches."""

    HEARTBEAT = struct.pack(">IHH", 4, HEARTBEAT, 1)

    def __init__(self, name: str, heartbeat: int, floor: int) -> None:
        super().__init__(name, heartbeat)
        self._floor = floor
        """Messages below this offset are dropped (a chunk may begin before the start)."""
        self._correlation = 0
        self._chunks = 0
        """Chunks received since credit was last given for them."""

    @classmethod
    async def open(
        cls,
        url: str,
        stream: str,
        offset: int | datetime | str,
        *,
        port: int,
        timeout: float = 5.0,
    ) -> NativeConsumer:
        """Connect to ``port`` on the URL's host and subscribe to ``stream`` from ``offset``.

        Raises `NativeUnavailable` when the port or the stream is not there.
        """
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        heartbeat = int(query.get("heartbeat", "60"))
        floor = offset if isinstance(offset, int) else 0
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, consumer = await loop.create_connection(
                    lambda: cls(query.get("name", "hopcast"), heartbeat, floor),
                    parts.hostname or "localhost",
                    port,
                )
        except (OSError, TimeoutError) as exc:
            raise NativeUnavailable(f"stream protocol port {port}: {exc!r}") from None
        try:
            async with asyncio.timeout(timeout):
                await consumer._handshake(
                    unquote(parts.username or "guest"),
                    unquote(parts.password or "guest"),
                    unquote(parts.path[1:]) if len(parts.path) > 1 else "/",
                )
                await consumer._subscribe(stream, offset)
        except TimeoutError:
            consumer._abort()
            raise NativeUnavailable(f"stream protocol port {port}: no answer") from None
        except NativeUnavailable:
            consumer._abort()
            raise
        except BrokerUnavailable as exc:
            consumer._abort()
            raise NativeUnavailable(f"stream protocol port {port}: {exc}") from None
        except BaseException:
            consumer._abort()
            raise
        return consumer

    # -- the conversation ------------------------------------------------------

    def _request(self, key: int, content: bytes) -> asyncio.Future[bytes]:
        self._correlation += 1
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._replies[self._correlation] = future
        head = struct.pack(">IHHI", 8 + len(content), key, 1, self._correlation)
        self._send(head + content)
        return future

    async def _call(self, key: int, content: bytes, what: str) -> bytes:
        """Send a request; return the response's content after its code, which must be OK."""
        reply = await self._request(key, content)
        code = int.from_bytes(reply[:2], "big")
        if code != OK:
            reason = RESPONSE_CODES.get(code, f"response code {code}")
            raise NativeUnavailable(f"stream protocol {what}: {reason}")
        return reply[2:]

    async def _handshake(self, user: str, password: str, vhost: str) -> None:
        await self._call(
            PEER_PROPERTIES, _properties({"connection_name": self._name}), "peer properties"
        )
        await self._call(SASL_HANDSHAKE, b"", "SASL handshake")
        credentials = f"\0{user}\0{password}".encode()
        sasl = _string_field("PLAIN") + len(credentials).to_bytes(4, "big") + credentials
        tuned_future = self._replies[TUNED] = self._loop.create_future()
        tuned_future.add_done_callback(_retrieved)  # not awaited when authentication fails
        await self._call(SASL_AUTHENTICATE, sasl, "authentication")
        tuned = await tuned_future
        frame_max = int.from_bytes(tuned[:4], "big")
        frame_max = min(frame_max, FRAME_MAX) if frame_max else FRAME_MAX
        tune = struct.pack(">IHHII", 12, TUNE, 1, frame_max, self._heartbeat)
        self._send(tune)
        await self._call(OPEN, _string_field(vhost), "open")
        if self._heartbeat:  # not before: RabbitMQ takes nothing but Open after Tune
            self._tick()

    async def _subscribe(self, stream: str, offset: int | datetime | str) -> None:
        content = (
            bytes([SUBSCRIPTION])
            + _string_field(stream)
            + _offset_spec(offset)
            + CREDIT.to_bytes(2, "big")
            + _properties({})
        )
        await self._call(SUBSCRIBE, content, f"subscribe to {stream!r}")

    def _goodbye(self) -> asyncio.Future[bytes]:
        return self._request(CLOSE, (1).to_bytes(2, "big") + _string_field("bye"))

    def _grant(self) -> None:
        if self._chunks:  # the chunks the hub has taken: as many more may come
            chunks, self._chunks = self._chunks, 0
            self._send(struct.pack(">IHHBH", 7, CREDIT_COMMAND, 1, SUBSCRIPTION, chunks))

    # -- asyncio.Protocol --------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._last_heard = self._loop.time()
        buf = self._rest + data if self._rest else data
        pos, size = 0, len(buf)
        before, chunks = len(self._messages), self._chunks
        try:
            while size - pos >= 4:
                length = _U32.unpack_from(buf, pos)[0]
                if length < 4 or length > FRAME_MAX:
                    raise ValueError(f"a frame of {length} bytes")
                end = pos + 4 + length
                if end > size:
                    break
                key = buf[pos + 4] << 8 | buf[pos + 5]
                if key == DELIVER:
                    self._chunk(buf, pos + 9, end)
                else:
                    self._command(key, buf[pos + 8 : end])
                pos = end
        except (IndexError, ValueError, struct.error) as exc:
            self._fail(f"the broker sent bytes that are not its stream protocol: {exc}")
            self._abort()
            return
        self._rest = buf[pos:] if pos < size else b""
        if len(self._messages) != before or self._chunks != chunks:
            self._wake()

    def _chunk(self, buf: bytes, start: int, end: int) -> None:
        """Decode the messages of one chunk into ``_messages``."""
        _, kind, entries, _, _, _, offset, _, length, _, _ = CHUNK_HEADER.unpack_from(buf, start)
        self._chunks += 1
        if kind != USER_CHUNK:
            return  # RabbitMQ's own records (tracking): they take offsets, carry no message
        pos = start + CHUNK_HEADER.size
        stop = pos + length
        if stop > end:
            raise ValueError("a chunk longer than its frame")
        for _ in range(entries):
            head = _U32.unpack_from(buf, pos)[0]
            if head & 0x80000000 == 0:  # a simple entry: one message
                pos += 4
                self._entry(offset, buf[pos : pos + head])
                pos += head
                offset += 1
            else:
                pos, offset = self._sub_batch(buf, pos, offset)
        if pos != stop:
            raise ValueError("a chunk's entries do not fill it")

    def _sub_batch(self, buf: bytes, pos: int, offset: int) -> tuple[int, int]:
        """The messages of a sub-batch entry (publishers that batch): each takes an offset."""
        flags, records, _, size = _SUB_BATCH.unpack_from(buf, pos)
        pos += _SUB_BATCH.size
        data = buf[pos : pos + size]
        compression = (flags >> 4) & 0x07
        if compression == 1:  # gzip
            data = zlib.decompress(data, wbits=31)
        elif compression != 0:
            self.skipped += records
            log.warning(
                "stream messages %d-%d stepped over: compressed with codec %d, which hopcast "
                "does not read",
                offset,
                offset + records - 1,
                compression,
            )
            return pos + size, offset + records
        at = 0
        for _ in range(records):
            length = _U32.unpack_from(data, at)[0]
            self._entry(offset, data[at + 4 : at + 4 + length])
            at += 4 + length
            offset += 1
        return pos + size, offset

    def _entry(self, offset: int, data: bytes) -> None:
        if offset < self._floor:
            return  # the chunk began before the offset asked for
        try:
            topic, event, body = decode_message(data)
        except (ValueError, IndexError, struct.error, RecursionError) as exc:
            self.skipped += 1
            log.warning("stream message at offset %d stepped over: %s", offset, exc)
            return
        self._messages.append(Message(offset, topic, event, body))

    def _command(self, key: int, content: bytes) -> None:
        if key == RESPONSE | CREDIT_COMMAND:  # sent only when credit was refused
            self._fail("the broker refused credit (the subscription is gone)")
            self._abort()
        elif key & RESPONSE:
            future = self._replies.pop(int.from_bytes(content[:4], "big"), None)
            if future is not None and not future.done():
                future.set_result(bytes(content[4:]))
        elif key == TUNE:
            future = self._replies.pop(TUNED, None)
            if future is not None and not future.done():
                future.set_result(bytes(content))
        elif key == CLOSE:
            reply = struct.pack(">IHHIH", 10, RESPONSE | CLOSE, 1, 0, OK)
            self._send(reply[:8] + content[:4] + reply[12:])
            self._fail("the broker closed the connection")
            self._abort()
        elif key == METADATA_UPDATE:
            self._fail("the stream's metadata changed (deleted, or its leader moved)")
            self._abort()
        # heartbeats: hearing anything is enough (``_last_heard``)
