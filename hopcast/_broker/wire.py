"""AMQP 0-9-1 on the wire: the frames and fields a stream consumer reads and writes.

Only what `hopcast._broker.consumer` needs: method frames for the handshake, a
channel, ``basic.qos``/``consume``/``ack``, and the three frames of a delivery.
Publishing and declaring stay with aiormq; this codec exists because reading
the stream is the gateway's hot path, and a general client parses every frame
into objects and starts a task per message (see docs/benchmarks.md).

>>> encode_method(0, CONNECTION_CLOSE_OK)
b'\\x01\\x00\\x00\\x00\\x00\\x00\\x04\\x00\\n\\x003\\xce'
"""

from __future__ import annotations

import struct
from datetime import datetime
from typing import Any

from hopcast._core.errors import FrameError

PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT = 1, 2, 3, 8
FRAME_TYPES = frozenset((FRAME_METHOD, FRAME_HEADER, FRAME_BODY, FRAME_HEARTBEAT))
CONTENT_FRAMES = frozenset((FRAME_HEADER, FRAME_BODY))
"""The frames that follow a ``basic.deliver``: its header, then its body in parts."""
FRAME_NAMES = {FRAME_METHOD: "method", FRAME_HEADER: "header", FRAME_BODY: "body"}
FRAME_END = 0xCE
FRAME_MAX = 1 << 20
"""The largest frame taken before the broker's tune (RabbitMQ's own ceiling is 128 KiB)."""
FRAME_HEAD = struct.Struct(">BHI")
HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"

Method = tuple[int, int]
CONNECTION_START: Method = (10, 10)
CONNECTION_START_OK: Method = (10, 11)
CONNECTION_TUNE: Method = (10, 30)
CONNECTION_TUNE_OK: Method = (10, 31)
CONNECTION_OPEN: Method = (10, 40)
CONNECTION_OPEN_OK: Method = (10, 41)
CONNECTION_CLOSE: Method = (10, 50)
CONNECTION_CLOSE_OK: Method = (10, 51)
CHANNEL_OPEN: Method = (20, 10)
CHANNEL_OPEN_OK: Method = (20, 11)
CHANNEL_CLOSE: Method = (20, 40)
CHANNEL_CLOSE_OK: Method = (20, 41)
BASIC_QOS: Method = (60, 10)
BASIC_QOS_OK: Method = (60, 11)
BASIC_CONSUME: Method = (60, 20)
BASIC_CONSUME_OK: Method = (60, 21)
BASIC_CANCEL: Method = (60, 30)
BASIC_DELIVER: Method = (60, 60)
BASIC_ACK: Method = (60, 80)
BASIC_DELIVER_ID = struct.pack(">HH", *BASIC_DELIVER)
"""How a ``basic.deliver`` method frame's payload starts: its class and method ids."""

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_HEADER_FIXED = struct.Struct(">HHQH")  # class, weight, body size, first property flags
_ACK = struct.Struct(">BHIHHQBB")


# -- encoding -----------------------------------------------------------------


def shortstr(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > 255:
        raise FrameError(f"a short string of {len(raw)} bytes")
    return _U8.pack(len(raw)) + raw


def longstr(value: bytes) -> bytes:
    return _U32.pack(len(value)) + value


def table(fields: dict[str, Any]) -> bytes:
    """A field table of strings, booleans, integers, times and nested tables."""
    out = bytearray()
    for name, value in fields.items():
        out += shortstr(name)
        if isinstance(value, bool):
            out += b"t" + _U8.pack(value)
        elif isinstance(value, int):
            out += b"l" + _I64.pack(value)
        elif isinstance(value, str):
            out += b"S" + longstr(value.encode())
        elif isinstance(value, datetime):
            out += b"T" + _U64.pack(int(value.timestamp()))
        elif isinstance(value, dict):
            out += b"F" + table(value)
        else:
            raise FrameError(f"cannot encode {type(value).__name__} in a field table")
    return longstr(bytes(out))


def encode_method(channel: int, method: Method, arguments: bytes = b"") -> bytes:
    payload = _U16.pack(method[0]) + _U16.pack(method[1]) + arguments
    return FRAME_HEAD.pack(FRAME_METHOD, channel, len(payload)) + payload + b"\xce"


def encode_ack(channel: int, delivery_tag: int) -> bytes:
    """``basic.ack`` with ``multiple``: every delivery up to ``delivery_tag``."""
    return _ACK.pack(FRAME_METHOD, channel, 13, 60, 80, delivery_tag, 1, FRAME_END)


# -- decoding -----------------------------------------------------------------


def read_shortstr(buf: bytes, pos: int) -> tuple[bytes, int]:
    end = pos + 1 + buf[pos]
    return bytes(buf[pos + 1 : end]), end


def _skip_value(buf: bytes, pos: int) -> int:
    """The position after one field value (its type octet at ``pos``)."""
    kind = buf[pos]
    pos += 1
    size = _FIXED_SIZES.get(kind)
    if size is not None:
        return pos + size
    if kind in _LONG_SIZED:  # S (long string), x (byte array), A (array), F (table)
        return pos + 4 + int(_U32.unpack_from(buf, pos)[0])
    raise FrameError(f"unknown field type {chr(kind)!r} in a table")


_FIXED_SIZES = {
    ord("t"): 1,
    ord("b"): 1,
    ord("B"): 1,
    ord("s"): 2,
    ord("u"): 2,
    ord("I"): 4,
    ord("i"): 4,
    ord("l"): 8,
    ord("L"): 8,
    ord("f"): 4,
    ord("d"): 8,
    ord("D"): 5,
    ord("T"): 8,
    ord("V"): 0,
}
_LONG_SIZED = frozenset(b"SxAF")


def find_long(buf: bytes, pos: int, end: int, name: bytes) -> int | None:
    """The signed 64-bit integer field ``name`` of the table spanning ``pos:end``."""
    while pos < end:
        key, pos = read_shortstr(buf, pos)
        if key == name and buf[pos] == 0x6C:  # 'l'
            return int(_I64.unpack_from(buf, pos + 1)[0])
        pos = _skip_value(buf, pos)
    return None


def method_of(payload: bytes) -> Method:
    """The class and method ids a method frame's payload starts with."""
    return payload[0] << 8 | payload[1], payload[2] << 8 | payload[3]


def close_reason(payload: bytes) -> str:
    """``reply-code reply-text`` of a ``connection.close`` or ``channel.close`` payload."""
    code = _U16.unpack_from(payload, 4)[0]
    text, _ = read_shortstr(payload, 6)
    return f"{code} {text.decode(errors='replace')}"


class Delivery:
    """A delivery being assembled from its method, header and body frames."""

    __slots__ = ("offset", "parts", "routing_key", "size", "tag", "type")

    def __init__(self, tag: int, routing_key: bytes) -> None:
        self.tag = tag
        self.routing_key = routing_key
        self.offset: int | None = None
        self.type: bytes | None = None
        self.size = 0
        self.parts: list[bytes] = []


def decode_deliver(buf: bytes, pos: int) -> Delivery:
    """``basic.deliver`` (its method payload at ``pos``): the delivery tag and the routing key."""
    pos += 5 + buf[pos + 4]  # class, method, consumer tag
    tag = _U64.unpack_from(buf, pos)[0]
    pos += 9  # delivery tag, redelivered
    pos += 1 + buf[pos]  # exchange
    return Delivery(tag, buf[pos + 1 : pos + 1 + buf[pos]])


_SKIP_SHORTSTR = (0x0400, 0x0200, 0x0100, 0x0080)  # correlation, reply-to, expiration, id


def decode_header(buf: bytes, pos: int, delivery: Delivery) -> None:
    """A header frame's payload at ``pos``: body size, ``x-stream-offset``, ``type``."""
    _cls, _weight, size, flags = _HEADER_FIXED.unpack_from(buf, pos)
    delivery.size = size
    pos += 14
    if flags & 0x8000:  # content-type
        pos += 1 + buf[pos]
    if flags & 0x4000:  # content-encoding
        pos += 1 + buf[pos]
    if flags & 0x2000:  # headers
        length = _U32.unpack_from(buf, pos)[0]
        start = pos + 4
        pos = start + length
        try:
            delivery.offset = find_long(buf, start, pos, b"x-stream-offset")
        except (FrameError, IndexError, struct.error):
            delivery.offset = None  # a table this codec cannot walk: the message is stepped over
    # delivery-mode and priority, an octet each (added, not branched on: it is the hot path)
    pos += ((flags & 0x1000) != 0) + ((flags & 0x0800) != 0)
    for bit in _SKIP_SHORTSTR:
        if flags & bit:
            pos += 1 + buf[pos]
    if flags & 0x0040:  # timestamp
        pos += 8
    if flags & 0x0020:
        delivery.type = buf[pos + 1 : pos + 1 + buf[pos]]
