"""The stream-protocol consumer's codec, fed chunks as RabbitMQ sends them, and garbage."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hopcast.broker import Message, native
from hopcast.broker.native import NativeConsumer, decode_message
from hopcast.errors import BrokerUnavailable
from tests.test_wire import Wire


def symbol(text: bytes) -> bytes:
    return b"\xa3" + bytes([len(text)]) + text


def string(text: bytes, wide: bool = False) -> bytes:
    return (
        b"\xb1" + struct.pack(">I", len(text)) + text
        if wide
        else b"\xa1" + bytes([len(text)]) + text
    )


def amqp_map(pairs: list[tuple[bytes, bytes]], wide: bool = False) -> bytes:
    items = b"".join(k + v for k, v in pairs)
    if wide:
        return b"\xd1" + struct.pack(">II", len(items) + 4, 2 * len(pairs)) + items
    return b"\xc1" + bytes([len(items) + 1, 2 * len(pairs)]) + items


def section(code: int, value: bytes, wide_descriptor: bool = False) -> bytes:
    descriptor = b"\x80" + code.to_bytes(8, "big") if wide_descriptor else b"\x53" + bytes([code])
    return b"\x00" + descriptor + value


def stored(topic: bytes, body: bytes, event: bytes | None = None) -> bytes:
    """A message as RabbitMQ 3.10 stores one published over AMQP 0-9-1."""
    annotations = [
        (symbol(b"x-routing-key"), string(topic)),
        (symbol(b"x-exchange"), string(b"ex")),
        (symbol(b"x-basic-delivery-mode"), b"\x50\x02"),
    ]
    out = section(0x72, amqp_map(annotations))
    out += section(0x73, b"\xc0\x05\x03\x40\xa1\x01m")  # properties: a list, stepped over
    if event is not None:
        out += section(0x74, amqp_map([(string(b"x-basic-type"), string(event))]))
    return out + section(0x75, b"\xa0" + bytes([len(body)]) + body)


def chunk(first: int, entries: list[bytes], kind: int = 0, records: int | None = None) -> bytes:
    data = b"".join(entries)
    header = native.CHUNK_HEADER.pack(
        0x50, kind, len(entries), records or len(entries), 0, 1, first, 0, len(data), 0, 0
    )
    body = struct.pack(">HHB", native.DELIVER, 1, native.SUBSCRIPTION) + header + data
    return struct.pack(">I", len(body)) + body


def simple(message: bytes) -> bytes:
    return struct.pack(">I", len(message)) + message


def sub_batch(messages: list[bytes], codec: int = 0) -> bytes:
    records = b"".join(simple(m) for m in messages)
    data = gzip.compress(records) if codec == 1 else records
    head = native._SUB_BATCH.pack(0x80 | codec << 4, len(messages), len(records), len(data))
    return head + data


@pytest.fixture
async def consumer() -> NativeConsumer:
    consumer = NativeConsumer("test", heartbeat=0, floor=0)
    consumer.connection_made(Wire())  # type: ignore[arg-type]
    return consumer


async def take(consumer: NativeConsumer) -> list[Message]:
    return list(await asyncio.wait_for(anext(consumer.__aiter__()), 1))


def test_messages_stored_by_any_amqp_0_9_1_client_decode() -> None:
    assert decode_message(stored(b"a.b", b'{"x": 1}', b"price")) == ("a.b", "price", b'{"x": 1}')
    assert decode_message(stored("é.t".encode(), b"")) == ("é.t", None, b"")
    wide = section(0x72, amqp_map([(symbol(b"x-routing-key"), string(b"w", True))], True), True)
    parts = section(0x75, b"\xb0" + struct.pack(">I", 3) + b"one") + section(0x75, b"\xa0\x03two")
    assert decode_message(wide + parts) == ("w", None, b"onetwo")
    value = section(0x72, amqp_map([(symbol(b"x-routing-key"), string(b"v"))]))
    assert decode_message(value + section(0x77, string(b"text"))) == ("v", None, b"text")


@pytest.mark.parametrize(
    "garbage",
    [
        b"",  # no routing key
        section(0x75, b"\xa0\x02hi"),  # a body but no routing key
        b"\x01\x53\x75\xa0\x00",  # no descriptor
        section(0x72, b"\xa1\x01x"),  # annotations that are not a map
        section(0x72, amqp_map([(symbol(b"x-routing-key"), b"\x50\x01")])),  # not a string
        stored(b"a", b"body")[:-2],  # cut short
        stored(b"\xff\xfe", b"body"),  # a topic that is not UTF-8
        stored(b"a", b"body", b"\xff"),  # nor an event type
        section(0x75, b"\xa0\x00") + b"\x00\x53\x75\xee",  # an unknown constructor
        b"\x00" * 5000,  # descriptors all the way down
    ],
)
def test_garbage_is_a_value_error(garbage: bytes) -> None:
    with pytest.raises((ValueError, IndexError, struct.error, RecursionError)):
        decode_message(garbage)


@given(st.binary(max_size=300))
def test_no_bytes_make_the_decoder_raise_anything_the_consumer_does_not_catch(data: bytes) -> None:
    with contextlib.suppress(ValueError, IndexError, struct.error, RecursionError):
        decode_message(data)


@pytest.mark.parametrize("size", [1, 7, 100, 1 << 20])
async def test_chunks_are_parsed_whatever_the_reads_cut(
    consumer: NativeConsumer, size: int
) -> None:
    data = (
        chunk(10, [simple(stored(b"a.b", b"one", b"price")), simple(stored(b"c", b"two"))])
        + struct.pack(">IHH", 4, native.HEARTBEAT, 1)
        + chunk(12, [simple(b"tracking data")], kind=2)  # RabbitMQ's own: no message
        + chunk(
            13, [sub_batch([stored(b"s", b"1"), stored(b"s", b"2")]), simple(stored(b"d", b""))]
        )
        + chunk(16, [sub_batch([stored(b"z", b"3"), stored(b"z", b"4")], codec=1)])
    )
    for i in range(0, len(data), size):
        consumer.data_received(data[i : i + size])
    assert await take(consumer) == [
        Message(10, "a.b", "price", b"one"),
        Message(11, "c", None, b"two"),
        Message(13, "s", None, b"1"),
        Message(14, "s", None, b"2"),
        Message(15, "d", None, b""),
        Message(16, "z", None, b"3"),
        Message(17, "z", None, b"4"),
    ]
    credit = consumer._transport.sent[-1]  # type: ignore[union-attr]
    assert credit == struct.pack(">IHHBH", 7, native.CREDIT_COMMAND, 1, native.SUBSCRIPTION, 4)


async def test_a_read_from_inside_a_chunk_starts_at_the_offset_asked_for() -> None:
    consumer = NativeConsumer("test", heartbeat=0, floor=11)
    consumer.connection_made(Wire())  # type: ignore[arg-type]
    messages = [simple(stored(b"t", b"%d" % n)) for n in range(3)]
    consumer.data_received(chunk(10, messages))
    assert [m.offset for m in await take(consumer)] == [11, 12]


async def test_a_message_it_cannot_decode_is_stepped_over(consumer: NativeConsumer) -> None:
    entries = [
        simple(stored(b"t", b"before")),
        simple(b"\x00\x53\x75garbage"),
        sub_batch([stored(b"t", b"lz4")], codec=4),  # a codec hopcast does not read
        simple(stored(b"t", b"after")),
    ]
    consumer.data_received(chunk(0, entries, records=4))
    assert [(m.offset, m.body) for m in await take(consumer)] == [(0, b"before"), (3, b"after")]
    assert consumer.skipped == 2


@pytest.mark.parametrize(
    "garbage",
    [
        struct.pack(">I", 2) + b"\x00\x08",  # a frame shorter than a key and version
        struct.pack(">I", native.FRAME_MAX + 1) + b"\x00\x08\x00\x01",  # larger than allowed
        chunk(0, [struct.pack(">I", 1000) + b"short"]),  # an entry longer than its chunk
        b"HTTP/1.1 400 Bad Request\r\n\r\n",  # not the stream protocol at all
    ],
)
async def test_bytes_that_are_not_the_stream_protocol_end_the_read(
    consumer: NativeConsumer, garbage: bytes
) -> None:
    consumer.data_received(garbage + b"\x00" * 64)
    assert consumer._transport.aborted  # type: ignore[union-attr]
    with pytest.raises(BrokerUnavailable, match="not its stream protocol"):
        await take(consumer)


async def test_the_broker_closing_or_refusing_credit_ends_the_read(
    consumer: NativeConsumer,
) -> None:
    reason = struct.pack(">H", 5) + b"going"
    close = struct.pack(">HHIH", native.CLOSE, 1, 9, 1) + reason
    consumer.data_received(struct.pack(">I", len(close)) + close)
    with pytest.raises(BrokerUnavailable, match="closed the connection"):
        await take(consumer)
    reply = consumer._transport.sent[-1]  # type: ignore[union-attr]
    assert reply == struct.pack(">IHHIH", 10, native.RESPONSE | native.CLOSE, 1, 9, native.OK)
    other = NativeConsumer("test", heartbeat=0, floor=0)
    other.connection_made(Wire())  # type: ignore[arg-type]
    refused = struct.pack(">HHHB", native.RESPONSE | native.CREDIT_COMMAND, 1, 4, 1)
    other.data_received(struct.pack(">I", len(refused)) + refused)
    with pytest.raises(BrokerUnavailable, match="refused credit"):
        await take(other)
