"""An embedded broker with the stream's offsets and resume semantics, for one process.

>>> broker = MemoryBroker(max_length=1000)
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from types import TracebackType

from hopcast._broker.base import Message, StartAt
from hopcast._broker.memory_tasks import MemoryTasks
from hopcast._core.errors import BrokerUnavailable

READ_BATCH = 512


class MemoryBroker:
    """A bounded in-memory stream: offsets grow from 0; the oldest go past ``max_length``."""

    def __init__(self, *, max_length: int = 1_000_000) -> None:
        self._max_length = max_length
        self._messages: list[Message] = []
        self._times: list[float] = []
        self._base = 0  # index in _messages of the oldest retained message
        self._next_offset = 0
        self._generation = 0
        self._grew = asyncio.Event()
        self._closed = False
        self.readers = 0
        """How many reads are open now (tests count them as RabbitMQ's consumers)."""
        self.tasks = MemoryTasks()
        """Its work queues."""

    @property
    def connected(self) -> bool:
        return not self._closed

    async def start(self) -> None:
        self._closed = False

    async def publish(self, topic: str, body: bytes, event: str | None) -> None:
        self.append(topic, body, event)

    def append(self, topic: str, body: bytes, event: str | None) -> int:
        """Append one message at once and return its offset."""
        if self._closed:
            raise BrokerUnavailable("the memory broker is closed")
        offset = self._next_offset
        self._next_offset += 1
        self._messages.append(Message(offset, topic, event, body))
        self._times.append(time.time())
        if len(self._messages) - self._base > self._max_length:
            self._base += 1
            if self._base > 4096 and self._base * 2 > len(self._messages):
                del self._messages[: self._base]
                del self._times[: self._base]
                self._base = 0
        self._grew.set()
        self._grew = asyncio.Event()
        return offset

    def reset(self) -> None:
        """Delete and recreate the stream: offsets start again at 0 (as RabbitMQ does)."""
        self._messages.clear()
        self._times.clear()
        self._base = 0
        self._next_offset = 0
        self._generation += 1
        self._wake()

    def _wake(self) -> None:
        self._grew.set()
        self._grew = asyncio.Event()

    async def tail(self, *, patient: bool = False) -> int | None:
        # exact and at once: nothing to be patient about (`Broker.tail`)
        if self._closed:
            raise BrokerUnavailable("the memory broker is closed")
        return self._messages[-1].offset if len(self._messages) > self._base else None

    def read(self, start: StartAt, *, purpose: str = "live") -> _MemoryReader:
        # ``purpose`` names a connection: in memory there is none (`Broker.read`)
        return _MemoryReader(self, start)

    def _index_of(self, start: StartAt) -> int:
        """Index in _messages of the first message at or after ``start``, clamped to the log."""
        if start == "first":
            return self._base
        if start == "next":
            return len(self._messages)
        if isinstance(start, datetime):
            idx = bisect.bisect_left(self._times, start.timestamp(), lo=self._base)
            return idx
        if not self._messages:
            return 0
        first = self._messages[0].offset
        return max(self._base, min(len(self._messages), start - first))

    async def aclose(self) -> None:
        self._closed = True
        self._wake()
        await self.tasks.aclose()


class _MemoryReader:
    def __init__(self, broker: MemoryBroker, start: StartAt) -> None:
        self._broker = broker
        self._start = start

    async def __aenter__(self) -> _MemoryReader:
        if self._broker._closed:
            raise BrokerUnavailable("the memory broker is closed")
        self._broker.readers += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._broker.readers -= 1

    async def __aiter__(self) -> AsyncIterator[Sequence[Message]]:
        broker = self._broker
        generation = broker._generation
        index = broker._index_of(self._start)
        msgs = broker._messages
        next_offset = msgs[index].offset if index < len(msgs) else broker._next_offset
        while True:
            if broker._closed:
                raise BrokerUnavailable("the memory broker is closed")
            if broker._generation != generation:
                raise BrokerUnavailable("the stream was deleted")
            msgs = broker._messages
            index = broker._base
            if msgs:
                index = min(len(msgs), max(broker._base, next_offset - msgs[0].offset))
            if index < len(msgs):
                batch = msgs[index : index + READ_BATCH]
                next_offset = batch[-1].offset + 1
                yield batch
                continue
            await broker._grew.wait()
