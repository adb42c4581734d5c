"""Work queues in memory, with the semantics of RabbitMQ 3.10's quorum queues.

Every give-back (a requeue, an unsettled delivery of a closed channel) counts
toward the delivery limit, as on RabbitMQ 3.10; past it the task goes to the
dead letters with reason ``delivery_limit``, and a rejected one with reason
``rejected``. A given-back task goes to the back of the queue.

>>> tasks = MemoryTasks()
"""

from __future__ import annotations

import asyncio
import itertools
import time
from asyncio import FIRST_COMPLETED
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from hopcast._broker.base import ControlHandler, DeadLetter, Delivery, Outcome, QueueShape
from hopcast._core.errors import BrokerUnavailable, PublishNotConfirmed

_CHANNEL_KEYS = itertools.count(1)


@dataclass(slots=True)
class _Task:
    id: str
    type: str | None
    body: bytes
    returns: int = 0
    delivered: bool = False


class _Queue:
    """One queue: its ready tasks, its dead letters, and a wake-up for waiting consumers."""

    def __init__(self, shape: QueueShape) -> None:
        self.shape = shape
        self.ready: deque[_Task] = deque()
        self.dead: list[tuple[_Task, str]] = []
        self.changed = asyncio.Event()

    def wake(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    def give_back(self, task: _Task) -> None:
        task.returns += 1
        if task.returns > self.shape.delivery_limit:
            self.dead.append((task, "delivery_limit"))
        else:
            self.ready.append(task)
            self.wake()


class MemoryTasks:
    """The `TaskBroker` of the memory broker: queues that live in this process."""

    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self.closed = False

    def _queue(self, name: str) -> _Queue:
        if self.closed:
            raise BrokerUnavailable("the memory broker is closed")
        queue = self._queues.get(name)
        if queue is None:
            raise BrokerUnavailable(f"no queue {name!r}")
        return queue

    async def declare(self, queue: str, shape: QueueShape) -> None:
        self._queues.setdefault(queue, _Queue(shape))

    async def enqueue(self, queue: str, body: bytes, type: str | None, id: str) -> None:
        q = self._queue(queue)
        if q.shape.max_length is not None and len(q.ready) >= q.shape.max_length:
            raise PublishNotConfirmed("the queue is full")
        q.ready.append(_Task(id, type, body))
        q.wake()

    async def channel(self, queue: str, prefetch: int | None) -> MemoryChannel:
        return MemoryChannel(self, self._queue(queue), prefetch)

    async def depth(self, queue: str) -> int:
        return len(self._queue(queue).ready)

    async def dead_letters(self, queue: str, most: int) -> list[DeadLetter]:
        return [_dead_letter(task, reason) for task, reason in self._queue(queue).dead[:most]]

    async def redrive(self, queue: str, ids: frozenset[str] | None) -> int:
        q = self._queue(queue)
        moving = [(t, r) for t, r in q.dead if ids is None or t.id in ids]
        q.dead = [(t, r) for t, r in q.dead if not (ids is None or t.id in ids)]
        for task, _ in moving:
            q.ready.append(_Task(task.id, task.type, task.body))
        q.wake()
        return len(moving)

    async def serve_control(
        self, queue: str, handler: ControlHandler, ready: asyncio.Event
    ) -> None:
        ready.set()  # memory:// is one process: no other sends it anything

    async def request(self, queue: str, body: bytes, timeout: float) -> bytes | None:
        return None  # one process: a lease of another start names a process that is gone

    async def aclose(self) -> None:
        self.closed = True
        for queue in self._queues.values():
            queue.wake()


def _dead_letter(task: _Task, reason: str) -> DeadLetter:
    return DeadLetter(task.id, task.type, task.body, reason, 1, datetime.now(UTC))


class MemoryChannel:
    """A channel of the memory broker: its unsettled deliveries, given back when it closes."""

    def __init__(self, tasks: MemoryTasks, queue: _Queue, prefetch: int | None) -> None:
        self._tasks = tasks
        self._queue = queue
        self._prefetch = prefetch
        self._unsettled: dict[int, _Task] = {}
        self._tags = itertools.count(1)
        self._closed = False
        self.key = next(_CHANNEL_KEYS)
        self.opened = time.monotonic()

    @property
    def closed(self) -> bool:
        return self._closed or self._tasks.closed

    def _deliver(self, task: _Task) -> Delivery:
        tag = next(self._tags)
        self._unsettled[tag] = task
        redelivered, task.delivered = task.delivered, True
        return Delivery(tag, task.id, task.type, task.body, task.returns + 1, redelivered)

    async def next(self) -> Delivery:
        queue = self._queue
        while True:
            if self.closed:
                raise BrokerUnavailable("the channel is closed")
            room = self._prefetch is None or len(self._unsettled) < self._prefetch
            if room and queue.ready:
                return self._deliver(queue.ready.popleft())
            await queue.changed.wait()

    def arrived(self) -> list[Delivery]:
        ready, taken = self._queue.ready, []
        while (
            ready
            and not self.closed
            and (self._prefetch is None or len(self._unsettled) < self._prefetch)
        ):
            taken.append(self._deliver(ready.popleft()))
        return taken

    async def take(self, most: int, wait: float, wake: asyncio.Event) -> list[Delivery]:
        loop = asyncio.get_running_loop()
        give_up = loop.time() + wait
        while not (taken := await self.get(most)) and not wake.is_set():
            changed = asyncio.ensure_future(self._queue.changed.wait())
            woken = asyncio.ensure_future(wake.wait())
            try:
                left = give_up - loop.time()
                if left <= 0:
                    break
                await asyncio.wait((changed, woken), timeout=left, return_when=FIRST_COMPLETED)
            finally:
                changed.cancel()
                woken.cancel()
        return taken

    async def get(self, most: int) -> list[Delivery]:
        if self.closed:
            raise BrokerUnavailable("the channel is closed")
        ready = self._queue.ready
        return [self._deliver(ready.popleft()) for _ in range(min(most, len(ready)))]

    async def settle(self, tag: int, outcome: Outcome) -> None:
        if self.closed:
            raise BrokerUnavailable("the channel is closed")
        task = self._unsettled.pop(tag, None)
        if task is None:
            raise BrokerUnavailable(f"no delivery {tag} on this channel")
        if outcome == "requeue":
            self._queue.give_back(task)
        elif outcome == "dead":
            self._queue.dead.append((task, "rejected"))
        self._queue.wake()  # a settled delivery frees room under the prefetch

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        unsettled = sorted(self._unsettled.items())
        self._unsettled.clear()
        for _, task in unsettled:
            self._queue.give_back(task)
        self._queue.wake()
