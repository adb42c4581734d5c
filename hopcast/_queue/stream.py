"""A task stream: one connection's competing consumer, its tasks leased as they come.

It reopens its channel after a broker outage (the leases of the old one are
lost with it), and closing it gives back every task it has not settled.
"""

from __future__ import annotations

import asyncio
import logging
from asyncio import FIRST_COMPLETED
from typing import Any

from hopcast._broker.base import Delivery, TaskChannel
from hopcast._core.errors import BrokerUnavailable, SubscriptionClosed
from hopcast._queue.work import WorkQueue

log = logging.getLogger("hopcast.queue")  # named by layer: module paths are internal


class TaskStream:
    """One connection's competing consumer: tasks as they come, ``None`` when idle a while."""

    RECONNECT_PAUSE = 1.0

    def __init__(self, queue: WorkQueue, prefetch: int, owner: str | None, seconds: float) -> None:
        self._queue = queue
        self._prefetch = prefetch
        self._owner = owner
        self._seconds = seconds
        self._channel: TaskChannel | None = None

    async def next_tasks(self, idle: float) -> list[dict[str, Any]] | None:
        """The tasks that came, leased, at least one; None after ``idle`` seconds without
        one (a heartbeat's turn). Tasks already there are taken without waiting, so a
        busy stream leases (and writes) a batch at a time; `SubscriptionClosed` as `next`."""
        channel = self._channel
        if channel is not None and not self._queue.closing.is_set():
            tasks = self._grant(channel, channel.arrived())
            if tasks:
                return tasks
        first = await self.next(idle)
        if first is None:
            return None
        channel = self._channel
        return [first, *self._grant(channel, channel.arrived())] if channel else [first]

    def _grant(self, channel: TaskChannel, deliveries: list[Delivery]) -> list[dict[str, Any]]:
        return [self._queue.grant(channel, d, self._owner, self._seconds) for d in deliveries]

    async def next(self, idle: float) -> dict[str, Any] | None:
        """The next task, leased; None after ``idle`` seconds without one (a heartbeat's turn).

        `SubscriptionClosed` once the gateway shuts down. A wait cut short takes
        nothing: a channel hands a delivery over only to a wait that goes on.
        """
        closing = self._queue.closing
        if closing.is_set():
            raise SubscriptionClosed("shutdown")
        taking = asyncio.ensure_future(self._next_delivery())
        stopping = asyncio.ensure_future(closing.wait())
        try:
            await asyncio.wait((taking, stopping), timeout=idle, return_when=FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not taking.done():
                taking.cancel()
        if not taking.done() or taking.cancelled():
            if closing.is_set():
                raise SubscriptionClosed("shutdown")
            return None
        channel, delivery = taking.result()
        return self._queue.grant(channel, delivery, self._owner, self._seconds)

    async def _next_delivery(self) -> tuple[TaskChannel, Delivery]:
        while True:
            channel = self._channel
            try:
                if channel is None:
                    channel = self._channel = await self._open()
                return channel, await channel.next()
            except BrokerUnavailable as exc:
                self._channel = None
                if channel is not None:  # said once per outage; the retries at DEBUG
                    log.info("a task stream of %s lost its channel: %s", self._queue.name, exc)
                    self._queue.forget(channel)
                    await channel.aclose()
                else:
                    log.debug(
                        "a task stream of %s cannot open a channel: %s", self._queue.name, exc
                    )
                await asyncio.sleep(self.RECONNECT_PAUSE)

    async def _open(self) -> TaskChannel:
        """A consuming channel; one that opens after its wait was cancelled is closed."""
        opening = asyncio.ensure_future(self._queue.open_channel(self._prefetch))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(self._queue.close_orphan)
            raise

    async def aclose(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None:
            self._queue.forget(channel)
            await channel.aclose()
