"""`Pattern.matches` routes exactly as a real RabbitMQ topic exchange does."""

from __future__ import annotations

import itertools
import uuid

import aiormq
import pytest
from pamqp import commands as spec

from hopcast._core.topics import Pattern, parse_topic
from tests.support import AMQP_URL

pytestmark = pytest.mark.rabbitmq

PATTERNS = [
    "#",
    "*",
    "#.#",
    "#.#.#",
    "*.*",
    "*.*.*",
    "*.#",
    "#.*",
    "#.*.#",
    "*.#.*",
    "a",
    "a.b",
    "a.*",
    "*.a",
    "a.#",
    "#.a",
    "#.a.#",
    "a.#.b",
    "a.*.b",
    "a.#.#.b",
    "a.*.#",
    "a.#.*",
    "#.a.*.#",
    "#.b.#.a",
    "a.b.c.#",
    "A.b",
    "ab.*",
    "x-1:y_z.#",
    "#." + "w" * 64,
]

_LONG_WORD = "w" * 64
ROUTING_KEYS = [
    *(".".join(key) for n in (1, 2, 3) for key in itertools.product("abc", repeat=n)),
    "A",
    "A.b",
    "ab",
    "ab.c",
    "ab.c.d",
    "a.ab",
    "ba.a",
    "aa.b",
    "a:b",
    "a-b.b",
    "x-1:y_z",
    "x-1:y_z.a",
    "x-1:y_zz",
    "a.b.c.d",
    "a.a.a.a",
    "b.a.b.a",
    "a.x.y.z.b",
    "c.c.c.c.c.a",
    "b.c.a.c.a",
    _LONG_WORD,
    "a." + _LONG_WORD,
    "w" * 63 + ".a",
    ".".join(["a"] * 127 + ["b"]),  # 255 bytes
    ".".join(["a" * 63] * 4),  # 255 bytes
]
# Not topics, but an AMQP publisher may still send them, and the stream keeps them.
OTHER_KEYS = ["", ".", "..", ".a", "a.", "a..b", "a.b.", "*", "#", "a.*", "#.a", "é.a", "a b.a"]


async def test_patterns_route_like_rabbitmq(rabbitmq: None) -> None:
    for key in ROUTING_KEYS:
        parse_topic(key)  # a topic a publisher may use
    keys = ROUTING_KEYS + OTHER_KEYS
    exchange = f"hopcast-test.routing.{uuid.uuid4().hex[:12]}"
    conn = await aiormq.connect(AMQP_URL)
    try:
        channel = await conn.channel(publisher_confirms=True)
        await channel.exchange_declare(exchange, exchange_type="topic")
        try:
            queues: dict[str, str] = {}
            for pattern in PATTERNS:
                declared = await channel.queue_declare(
                    "",
                    exclusive=True,
                    auto_delete=True,
                    arguments={"x-queue-type": "classic"},
                )
                assert declared.queue is not None
                await channel.queue_bind(declared.queue, exchange, routing_key=pattern)
                queues[pattern] = declared.queue
            for key in keys:
                # A confirm for a transient message means every queue it routes to has it.
                await channel.basic_publish(
                    key.encode(),
                    exchange=exchange,
                    routing_key=key,
                    properties=spec.Basic.Properties(delivery_mode=1),
                )
            routed: dict[str, set[str]] = {}
            for pattern, queue in queues.items():
                got = routed[pattern] = set()
                while True:
                    message = await channel.basic_get(queue, no_ack=True)
                    if isinstance(message.delivery, spec.Basic.GetEmpty):
                        break
                    assert message.routing_key is not None
                    assert message.body == message.routing_key.encode()
                    got.add(message.routing_key)
        finally:
            cleanup = await conn.channel()  # the first one may have been closed by an error
            await cleanup.exchange_delete(exchange)
    finally:
        await conn.close()

    expected = {
        pattern: {key for key in keys if Pattern.parse(pattern).matches(key)}
        for pattern in PATTERNS
    }
    assert routed == expected
    assert all(expected.values())  # every binding is exercised
