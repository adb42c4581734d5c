"""The RabbitMQ the benchmark runs against: the streams it declares and the names it cleans up."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiormq


@dataclass
class Broker:
    """The RabbitMQ the benchmark runs against, and the names it created there."""

    url: str
    exchanges: set[str] = field(default_factory=set)
    queues: set[str] = field(default_factory=set)

    def declare_stream(
        self, exchange: str, stream: str, *, segment_bytes: int = 50_000_000
    ) -> None:
        """A topic exchange bound with ``#`` to a stream, as hopcast declares them by default."""

        async def go(channel: aiormq.abc.AbstractChannel) -> None:
            await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
            arguments: dict[str, Any] = {
                "x-queue-type": "stream",
                "x-max-age": "86400s",
                "x-max-length-bytes": 1_000_000_000,
                "x-stream-max-segment-size-bytes": segment_bytes,
            }
            await channel.queue_declare(stream, durable=True, arguments=arguments)
            await channel.queue_bind(stream, exchange, routing_key="#")

        self.exchanges.add(exchange)
        self.queues.add(stream)
        asyncio.run(self._with_channel(go))

    def forget(self, exchange: str, stream: str | None = None) -> None:
        """Remember names a server declares, so that `cleanup` deletes them."""
        self.exchanges.add(exchange)
        if stream is not None:
            self.queues.add(stream)

    def cleanup(self) -> None:
        """Delete every exchange and stream the benchmark made."""

        async def go(channel: aiormq.abc.AbstractChannel) -> None:
            for queue in sorted(self.queues):
                await channel.queue_delete(queue)
            for exchange in sorted(self.exchanges):
                await channel.exchange_delete(exchange)

        if self.queues or self.exchanges:
            try:
                asyncio.run(self._with_channel(go))
            except (OSError, aiormq.exceptions.AMQPError) as exc:
                names = ", ".join(sorted(self.queues | self.exchanges))
                print(f"could not delete {names}: {exc!r}", file=sys.stderr)
        self.queues.clear()
        self.exchanges.clear()

    async def _with_channel(
        self, work: Callable[[aiormq.abc.AbstractChannel], Awaitable[None]]
    ) -> None:
        connection = await aiormq.connect(self.url)
        try:
            channel = await connection.channel()
            await work(channel)
        finally:
            await connection.close()
