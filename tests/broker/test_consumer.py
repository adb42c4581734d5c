"""The stream consumer, fed bytes as RabbitMQ sends them, cut anywhere, and garbage."""

from __future__ import annotations

import asyncio

import pytest

from hopcast._broker import wire
from hopcast._broker.base import Message
from hopcast._broker.consumer import StreamConsumer
from hopcast._core.errors import BrokerUnavailable

CONSUMER_TAG = "amq.ctag-abcdefghijklmnopqrstuv"


def frame(kind: int, payload: bytes, channel: int = 1) -> bytes:
    return wire.FRAME_HEAD.pack(kind, channel, len(payload)) + payload + b"\xce"


def delivery(
    tag: int,
    body: bytes,
    *,
    offset: int | None = None,
    topic: bytes = b"a.b",
    event: bytes | None = None,
    headers: bytes | None = None,
    frame_max: int = 4096,
) -> bytes:
    """A delivery as RabbitMQ frames it: method, header with properties, body frames."""
    deliver = (
        wire.shortstr(CONSUMER_TAG)
        + tag.to_bytes(8, "big")
        + b"\0"
        + wire.shortstr("ex")
        + bytes([len(topic)])
        + topic
    )
    flags = 0x8000  # content-type
    props = wire.shortstr("application/json")
    if headers is None and offset is not None:
        headers = wire.table({"x-stream-offset": offset})
    if headers is not None:
        flags |= 0x2000
        props += headers
    flags |= 0x1000 | 0x0080 | 0x0040  # delivery-mode, message-id, timestamp
    props += b"\x02" + wire.shortstr("id-1") + (1700000000).to_bytes(8, "big")
    if event is not None:
        flags |= 0x0020
        props += bytes([len(event)]) + event
    header = (60).to_bytes(2, "big") + b"\0\0" + len(body).to_bytes(8, "big")
    header += flags.to_bytes(2, "big") + props
    out = wire.encode_method(1, wire.BASIC_DELIVER, deliver) + frame(wire.FRAME_HEADER, header)
    for i in range(0, len(body), frame_max):
        out += frame(wire.FRAME_BODY, body[i : i + frame_max])
    return out


class Wire:
    """What the consumer writes, instead of a socket."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.aborted = False
        self.paused = False

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def is_closing(self) -> bool:
        return self.aborted

    def write(self, data: bytes) -> None:
        self.sent.append(data)

    def abort(self) -> None:
        self.aborted = True


@pytest.fixture
async def consumer() -> StreamConsumer:
    consumer = StreamConsumer("test", heartbeat=0)
    consumer.connection_made(Wire())  # type: ignore[arg-type]
    return consumer


def feed(consumer: StreamConsumer, data: bytes, size: int) -> None:
    for i in range(0, len(data), size):
        consumer.data_received(data[i : i + size])


async def take(consumer: StreamConsumer) -> list[Message]:
    batches = consumer.__aiter__()
    return list(await asyncio.wait_for(anext(batches), 1))


@pytest.mark.parametrize("size", [1, 7, 100, 1 << 20])
async def test_deliveries_are_parsed_whatever_the_reads_cut(
    consumer: StreamConsumer, size: int
) -> None:
    big = bytes(range(256)) * 40  # 10 KiB: three body frames
    data = (
        delivery(1, b'{"a":1}', offset=10, event=b"price")
        + frame(wire.FRAME_HEARTBEAT, b"", channel=0)
        + delivery(2, big, offset=11, topic="é.t".encode())
        + delivery(3, b"", offset=12)
    )
    feed(consumer, data, size)
    messages = await take(consumer)
    assert messages == [
        Message(10, "a.b", "price", b'{"a":1}'),
        Message(11, "é.t", None, big),
        Message(12, "a.b", None, b""),
    ]
    assert consumer._transport.sent[-1] == wire.encode_ack(1, 3)  # type: ignore[union-attr]


async def test_headers_of_every_field_type_are_stepped_through(consumer: StreamConsumer) -> None:
    fields = b"".join(
        wire.shortstr(name) + kind + value
        for name, kind, value in [
            ("bool", b"t", b"\x01"),
            ("i8", b"b", b"\xff"),
            ("u8", b"B", b"\x01"),
            ("i16", b"s", b"\x00\x01"),
            ("u16", b"u", b"\x00\x01"),
            ("i32", b"I", b"\x00\x00\x00\x01"),
            ("u32", b"i", b"\x00\x00\x00\x01"),
            ("u64", b"L", bytes(8)),
            ("f32", b"f", bytes(4)),
            ("f64", b"d", bytes(8)),
            ("dec", b"D", bytes(5)),
            ("time", b"T", bytes(8)),
            ("void", b"V", b""),
            ("str", b"S", wire.longstr(b"hello")),
            ("bytes", b"x", wire.longstr(b"\x00\xff")),
            ("array", b"A", wire.longstr(b"I\x00\x00\x00\x01")),
            ("table", b"F", wire.table({"x-stream-offset": 99})),
            ("x-stream-offset", b"l", (42).to_bytes(8, "big")),
        ]
    )
    feed(consumer, delivery(1, b"x", headers=wire.longstr(fields)), 64)
    assert await take(consumer) == [Message(42, "a.b", None, b"x")]


@pytest.mark.parametrize(
    "poison",
    [
        {"event": b"\xff\xfe"},  # a type that is not UTF-8
        {"topic": b"\xc3"},  # a routing key that is not UTF-8
        {"headers": wire.table({"other": 1})},  # no offset at all
        {"headers": wire.table({"x-stream-offset": "7"})},  # an offset that is not an integer
        {"headers": wire.longstr(b"\x01aZ")},  # a field type no one knows
        {"headers": wire.longstr(b"\x01aS\xff\xff\xff\xff")},  # a string longer than its table
    ],
)
async def test_an_undecodable_message_is_acknowledged_and_stepped_over(
    consumer: StreamConsumer, poison: dict[str, bytes]
) -> None:
    data = delivery(1, b"before", offset=1) + delivery(2, b"bad", offset=2, **poison)  # type: ignore[arg-type]
    feed(consumer, data + delivery(3, b"after", offset=3), 50)
    assert [m.body for m in await take(consumer)] == [b"before", b"after"]
    assert consumer.skipped == 1
    # a poison message alone still returns its credit
    feed(consumer, delivery(4, b"bad", offset=4, **poison), 50)  # type: ignore[arg-type]
    batches = consumer.__aiter__()
    pending = asyncio.ensure_future(anext(batches))
    await asyncio.sleep(0.01)
    assert consumer._transport.sent[-1] == wire.encode_ack(1, 4)  # type: ignore[union-attr]
    pending.cancel()


@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 400 Bad Request\r\n\r\n",  # not AMQP at all
        frame(wire.FRAME_BODY, b"body")[:-1] + b"\x00",  # a frame without its end octet
        frame(wire.FRAME_BODY, b"orphan"),  # a body outside a delivery
        frame(wire.FRAME_HEADER, bytes(14)),  # a header outside a delivery
        frame(9, b""),  # no such frame type
        wire.encode_method(1, wire.BASIC_DELIVER, b"\x05ab"),  # a method cut short
    ],
)
async def test_garbage_from_the_broker_breaks_the_read_with_a_clear_error(
    consumer: StreamConsumer, garbage: bytes
) -> None:
    feed(consumer, garbage + bytes(8), 1 << 20)
    with pytest.raises(BrokerUnavailable, match="not AMQP 0-9-1"):
        await take(consumer)
    assert consumer._transport.aborted  # type: ignore[union-attr]


async def test_the_broker_closing_or_cancelling_ends_the_read(consumer: StreamConsumer) -> None:
    close = (404).to_bytes(2, "big") + wire.shortstr("NOT_FOUND - no queue 's'") + bytes(4)
    consumer.data_received(wire.encode_method(1, wire.CHANNEL_CLOSE, close))
    with pytest.raises(BrokerUnavailable, match="404 NOT_FOUND - no queue 's'"):
        await take(consumer)
    cancelled = StreamConsumer("test", heartbeat=0)
    cancelled.connection_made(Wire())  # type: ignore[arg-type]
    cancelled.data_received(wire.encode_method(1, wire.BASIC_CANCEL, wire.shortstr("t") + b"\0"))
    with pytest.raises(BrokerUnavailable, match="cancelled"):
        await take(cancelled)


async def test_acks_go_once_a_quarter_of_the_credit_is_taken(consumer: StreamConsumer) -> None:
    consumer._ack_every = 4  # as for a prefetch of 16
    sent = consumer._transport.sent  # type: ignore[union-attr]
    feed(consumer, b"".join(delivery(t, b"x", offset=t) for t in (1, 2, 3)), 1 << 20)
    assert len(await take(consumer)) == 3
    assert not sent
    feed(consumer, b"".join(delivery(t, b"x", offset=t) for t in (4, 5)), 1 << 20)
    assert len(await take(consumer)) == 2
    assert sent == [wire.encode_ack(1, 5)]  # one ack for all five
