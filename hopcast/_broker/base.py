"""The broker interface the hub needs (as Mercure's Transport), and what it reads.

Two implementations: `hopcast._broker.amqp.AmqpBroker` (RabbitMQ streams, the
product) and `hopcast._broker.memory.MemoryBroker` (embedded, same offsets and
resume semantics).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

DEAD_SUFFIX = ".dead"
"""A work queue's dead-letter queue is named after it with this suffix."""

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


# -- work queues -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """One task as a queue handed it over, unsettled until its channel acks or gives it back.

    ``deliveries`` counts this one: RabbitMQ's ``x-delivery-count`` (the times the task
    was given back before) plus one.
    """

    tag: int
    id: str
    type: str | None
    body: bytes
    deliveries: int
    redelivered: bool


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A dead-lettered task, with why it died (RabbitMQ's ``x-death`` reason and count)."""

    id: str
    type: str | None
    body: bytes
    reason: str
    count: int
    died: datetime | None


ControlHandler = Callable[[bytes], Awaitable[bytes]]
"""Answers one request that came to a process's control queue."""

Outcome = Literal["ack", "requeue", "dead"]
"""How a delivery is settled: done, back to the queue, or straight to the dead letters."""


@dataclass(frozen=True, slots=True)
class QueueShape:
    """The arguments a work queue is declared with (they apply when it is created)."""

    delivery_limit: int
    max_length: int | None = None


class TaskChannel(Protocol):
    """Deliveries of one queue on one channel: they stay unsettled until settled here, and
    closing the channel gives every unsettled one back at once."""

    @property
    def key(self) -> int:
        """A number no other channel of this process has had."""

    @property
    def closed(self) -> bool: ...

    async def next(self) -> Delivery:
        """The next delivery of a consuming channel; `BrokerUnavailable` once it closed."""

    def arrived(self) -> list[Delivery]:
        """The deliveries of a consuming channel that came and were not taken yet, taken
        now (none waited for)."""

    async def get(self, most: int) -> list[Delivery]:
        """Up to ``most`` ready tasks, at once (a pulling channel); none when the queue is empty."""

    async def take(self, most: int, wait: float, wake: asyncio.Event) -> list[Delivery]:
        """Up to ``most`` tasks (a pulling channel), waiting up to ``wait`` seconds for a
        first one, or until ``wake`` is set (the asker left); none when none came."""

    async def settle(self, tag: int, outcome: Outcome) -> None:
        """Ack or give back one delivery; `BrokerUnavailable` when the channel is gone."""

    async def aclose(self) -> None:
        """Close the channel: what it has not settled goes back to the queue."""


class TaskBroker(Protocol):
    """What the work queues need from a broker: quorum queues with a delivery limit and
    dead letters. The AMQP names come from the caller (``hopcast.q.NAME``)."""

    async def declare(self, queue: str, shape: QueueShape) -> None:
        """Declare the queue and its dead-letter queue (a queue that exists is used as it is)."""

    async def enqueue(self, queue: str, body: bytes, type: str | None, id: str) -> None:
        """Return once the broker confirmed the task; `BrokerUnavailable` when it refused."""

    async def channel(self, queue: str, prefetch: int | None) -> TaskChannel:
        """A consuming channel (``prefetch`` deliveries in flight) or, with None, a pulling one."""

    async def depth(self, queue: str) -> int:
        """Tasks ready in the queue now."""

    async def dead_letters(self, queue: str, most: int) -> list[DeadLetter]:
        """The first ``most`` dead letters, oldest first, left where they are."""

    async def redrive(self, queue: str, ids: frozenset[str] | None) -> int:
        """Move the dead letters with these ids (None: all) back to the queue; how many moved."""

    async def serve_control(
        self, queue: str, handler: ControlHandler, ready: asyncio.Event
    ) -> None:
        """Answer the requests sent to ``queue``, this process's own control queue, with
        ``handler`` until cancelled (declared again after the connection drops); ``ready``
        is set while it is declared and consumed, cleared while it is not."""

    async def request(self, queue: str, body: bytes, timeout: float) -> bytes | None:
        """Send ``body`` to the control queue ``queue`` and return its process's answer;
        None when no such queue exists (its process is gone); `BrokerUnavailable` when no
        answer came in ``timeout`` seconds or the broker is away."""
