"""The AMQP broker read directly, and a double of its reader that is slow to deliver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import pika

from hopcast._broker import amqp
from hopcast._broker.amqp import AmqpBroker
from hopcast._broker.base import Message
from tests.support.rabbitmq import Names, publish_with_pika, until_counted


async def read_messages(
    broker: AmqpBroker, start: int | datetime | str, count: int
) -> list[Message]:
    """Read ``broker``'s stream from ``start`` until ``count`` messages came."""
    messages: list[Message] = []
    async with broker.read(start) as reader:  # type: ignore[arg-type]
        async with asyncio.timeout(30):
            async for batch in reader:
                messages += batch
                if len(messages) >= count:
                    return messages
    return messages


async def publish_counted_history(broker: AmqpBroker, names: Names, count: int) -> int:
    """Publish ``count`` events and wait until RabbitMQ counts them; the last offset."""
    items = [(str(i).encode(), pika.BasicProperties()) for i in range(count)]
    await asyncio.to_thread(publish_with_pika, names, items)
    last = (await read_messages(broker, "first", count))[-1].offset
    await until_counted(names)
    return last


class LateToDeliver(amqp.AmqpReader):
    """A read whose first delivery comes after a quick tail probe stopped waiting,
    as a loaded RabbitMQ's may."""

    async def __aiter__(self) -> AsyncIterator[Sequence[Message]]:
        # the live read later still, so that a resume is placed before its first batch
        await asyncio.sleep(
            6 * amqp.TAIL_FIRST_WAIT if self._purpose == "live" else 2 * amqp.TAIL_FIRST_WAIT
        )
        async for batch in super().__aiter__():
            yield batch
