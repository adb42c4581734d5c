"""Encoding of events into Server-Sent Events frames (WHATWG HTML, "server-sent events").

Each event is encoded once into bytes that go unchanged to every subscriber.

>>> encode_event(7, "order-paid", b'{"order": 42}')
b'id: 7\\nevent: order-paid\\ndata: {"order": 42}\\n\\n'
"""

from __future__ import annotations

import json
import re

from hopcast._core.errors import InvalidEventName

RESERVED_PREFIX = "hopcast-"
MAX_EVENT_NAME_CHARS = 255
MISSED = "hopcast-missed"
UNDELIVERABLE = "hopcast-undeliverable"
TOKEN_EXPIRED = "hopcast-token-expired"
_EVENT_NAME = re.compile(r"[^\r\n\x00\ud800-\udfff]{1,255}")  # a lone surrogate has no UTF-8


def check_event_name(name: str, *, allow_reserved: bool = False) -> str:
    """Return ``name`` if it can be sent as an SSE ``event:`` field, else raise.

    >>> check_event_name("order-paid")
    'order-paid'
    """
    if not _EVENT_NAME.fullmatch(name):
        raise InvalidEventName(
            f"an event name is 1-{MAX_EVENT_NAME_CHARS} characters, no CR, LF, NUL or surrogate"
        )
    if not allow_reserved and name.startswith(RESERVED_PREFIX):
        raise InvalidEventName(f"event names starting with {RESERVED_PREFIX!r} are reserved")
    return name


def encode_event(offset: int, event: str | None, data: bytes) -> bytes:
    """Encode one event whose ``data`` is valid UTF-8 and ``event`` a checked name.

    CR and CRLF in ``data`` become LF: SSE treats all three as line ends, so
    that is the round trip a client sees.
    """
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    head = b"id: %d\n" % offset
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    return head + b"data: " + data.replace(b"\n", b"\ndata: ") + b"\n\n"


def encode_gateway_event(offset: int, event: str, payload: dict[str, object]) -> bytes:
    """Encode one of the gateway's own ``hopcast-…`` events with a JSON payload."""
    return encode_event(offset, event, json.dumps(payload, separators=(", ", ": ")).encode())


def encode_missed(reason: str, requested: int, first: int) -> bytes:
    """``hopcast-missed``: events after ``requested`` up to ``first`` are gone (``reason``);
    its id, ``first - 1``, is where the client goes on from.

    >>> encode_missed("retention", 5, 20).splitlines()[:2]
    [b'id: 19', b'event: hopcast-missed']
    """
    payload = {"reason": reason, "requested": requested, "first": first}
    return encode_gateway_event(first - 1, MISSED, payload)


def encode_message(offset: int, event: str | None, body: bytes, max_size: int) -> bytes:
    """Encode a broker message, or its ``hopcast-undeliverable`` stand-in.

    The stand-in keeps the message's own id, so a client moves past it and is
    never disconnected over and over by the same event.
    """
    reason = None
    if len(body) > max_size:
        reason = "size"
    elif not body.isascii():
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            reason = "utf-8"
    if event is not None and reason is None:
        try:
            check_event_name(event)
        except InvalidEventName:
            reason = "reserved-type" if event.startswith(RESERVED_PREFIX) else "type"
    if reason is None:
        return encode_event(offset, event, body)
    return encode_gateway_event(
        offset, UNDELIVERABLE, {"reason": reason, "size": len(body), "type": event}
    )


def encode_heartbeat(offset: int | None) -> bytes:
    """An ``id:``-only block that moves the client's last event ID; a comment before any id."""
    return b": keep-alive\n\n" if offset is None else b"id: %d\n\n" % offset


def encode_preamble(retry_ms: int, offset: int | None) -> bytes:
    """The first bytes of a stream: the reconnection delay, a comment, and the start position.

    The comment makes proxies flush the headers at once; the ``id:`` gives a
    client that drops before its first event a position to resume from.
    """
    head = b"retry: %d\n: hopcast\n\n" % retry_ms
    return head if offset is None else head + b"id: %d\n\n" % offset


def encode_retry(retry_ms: int) -> bytes:
    """A lone ``retry:`` hint, sent before the gateway ends a stream it wants back later."""
    return b"retry: %d\n\n" % retry_ms
