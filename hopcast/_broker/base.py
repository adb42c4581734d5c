"""The broker interface the hub needs (as Mercure's Transport), and what it reads.

Two implementations: `hopcast._broker.amqp.AmqpBroker` (RabbitMQ streams, the
product) and `hopcast._broker.memory.MemoryBroker` (embedded, same offsets and
resume semantics).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

StartAt = int | datetime | Literal["first", "next"]
"""Where a read starts: an offset (inclusive), a time, the stream's beginning, or its end."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message of the stream as the hub sees it."""

    offset: int
    topic: str
    type: str | None
    body: bytes


class Reader(AbstractAsyncContextManager["Reader"], Protocol):
    """An open read of the stream: iterate it for batches of messages in offset order."""

    def __aiter__(self) -> AsyncIterator[Sequence[Message]]: ...


class Broker(Protocol):
    """What the hub needs from a broker (as Mercure's Transport).

    `read` and `publish` raise `BrokerUnavailable` when the broker cannot be
    reached; a reader raises it from its iteration when the connection drops.
    """

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None:
        """Connect and declare the topology, retrying until the broker answers."""

    async def publish(self, topic: str, body: bytes, event: str | None) -> None:
        """Publish and return once the broker confirmed and routed the message."""

    def read(self, start: StartAt, *, purpose: str = "live") -> Reader:
        """Open a read of the stream from ``start``.

        ``purpose`` names the read where an operator sees it (RabbitMQ lists each
        reader's connection by name, and the log level of its connect depends on it);
        the memory broker has no connections to name, and ignores it.
        """

    async def tail(self, *, patient: bool = False) -> int | None:
        """The offset of the stream's last message, or None when it is empty.

        ``patient``: the caller has seen the stream hold messages, so an empty
        answer costs a longer wait first (a broker slow to deliver looks empty).
        The memory broker knows its tail exactly and at once, and ignores it.
        """

    async def aclose(self) -> None:
        """Close every connection; readers end with `BrokerUnavailable`."""
