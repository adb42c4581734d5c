"""The work queues a gateway serves (``--queue``), declared at start-up and closed at the end.

>>> from hopcast._broker.memory_tasks import MemoryTasks
>>> from hopcast._core.settings import Settings
>>> queues = WorkQueues(MemoryTasks(), Settings.from_env({"HOPCAST_QUEUE": "mail"}))
>>> queues.names
['mail']
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from types import TracebackType

from hopcast._broker.base import QueueShape, TaskBroker
from hopcast._core.errors import (
    BrokerUnavailable,
    ConfigError,
    InvalidLease,
    InvalidTopic,
    UnknownQueue,
)
from hopcast._core.settings import Settings
from hopcast._queue.leases import LeaseSigner
from hopcast._queue.names import parse_queue_name
from hopcast._queue.routing import Router, SettleRequest, control_queue, encode_answer
from hopcast._queue.work import LeaseLimits, WorkQueue

log = logging.getLogger("hopcast.queue")  # named by layer: module paths are internal

DECLARE_PAUSE_MAX = 5.0


def queue_names(settings: Settings) -> list[str]:
    """The ``--queue`` names, each checked (`ConfigError` naming a bad one), without repeats."""
    names = []
    for text in settings.queue:
        try:
            names.append(parse_queue_name(text))
        except InvalidTopic as exc:
            raise ConfigError(f"--queue: bad value {text!r}: {exc}") from None
    return list(dict.fromkeys(names))


class WorkQueues:
    """Each configured queue by name; an async context manager that declares and closes them."""

    def __init__(self, tasks: TaskBroker | None, settings: Settings) -> None:
        secret = settings.lease_secret.get_secret_value() if settings.lease_secret else None
        self.signer = LeaseSigner(secret.encode() if secret else None)
        names = queue_names(settings)
        if names and tasks is None:
            raise ConfigError("--queue: this broker has no work queues")
        self._tasks = tasks
        self._shape = QueueShape(settings.queue_delivery_limit, settings.queue_max_length)
        limits = LeaseLimits(settings.lease, settings.max_lease, settings.queue_delivery_limit)
        self._router = Router(tasks) if tasks is not None else None
        self._queues = {
            name: WorkQueue(name, tasks, self.signer, limits, self._router)
            for name in names
            if tasks is not None and self._router is not None
        }
        self._declaring: asyncio.Task[None] | None = None
        self._control: asyncio.Task[None] | None = None
        self.declared = asyncio.Event()

    @property
    def names(self) -> list[str]:
        return list(self._queues)

    def __iter__(self) -> Iterator[WorkQueue]:
        return iter(self._queues.values())

    def get(self, name: str) -> WorkQueue:
        """The queue ``name`` (already a valid name); `UnknownQueue` if it is not served."""
        queue = self._queues.get(name)
        if queue is None:
            raise UnknownQueue(f"no work queue {name!r} here (start the gateway with --queue)")
        return queue

    def begin_shutdown(self) -> None:
        """End every task stream (each gives back what it holds) and take no more."""
        for queue in self._queues.values():
            queue.closing.set()

    async def __aenter__(self) -> WorkQueues:
        """Declare the queues in the background, retrying while the broker is away."""
        if self._queues and self._tasks is not None and self._router is not None:
            ready = self._router.reachable
            name = control_queue(self.signer.instance)
            self._control = asyncio.create_task(
                self._tasks.serve_control(name, self._answer, ready)
            )
            self._declaring = asyncio.create_task(self._declare(ready))
        else:
            self.declared.set()
        return self

    async def _answer(self, body: bytes) -> bytes:
        """Settle what another process was asked for leases of this one; the answer."""
        try:
            request = SettleRequest.decode(body)
            settled = await self.get(request.queue).answer(request)
        except (ValueError, UnknownQueue, InvalidLease) as exc:
            log.warning("a routed settlement this process cannot answer: %s", exc)
            return encode_answer({}, {})  # each of its leases: lost
        return encode_answer(settled.results, settled.expires)

    async def _declare(self, control: asyncio.Event) -> None:
        await control.wait()  # before any lease is granted: another process may route it here
        pause = 0.2
        for queue in self._queues.values():
            while self._tasks is not None:
                try:
                    await self._tasks.declare(queue.amqp, self._shape)
                    break
                except BrokerUnavailable as exc:
                    log.warning("declaring work queue %s: %s; retrying", queue.amqp, exc)
                    await asyncio.sleep(pause)
                    pause = min(DECLARE_PAUSE_MAX, pause * 2)
        log.info("serving work queues: %s", ", ".join(self._queues))
        self.declared.set()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for task in (self._declaring, self._control):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        for queue in self._queues.values():
            await queue.aclose()
