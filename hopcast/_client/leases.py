"""The lease keeper: extends the lease of every task a client holds until it is settled.

Each task is extended at half its lease, for one more lease; the gateway never
grants past its cap (``--max-lease``), and answers ``lost`` once a lease is
gone, which is when the keeper lets the task go. How and why is in
docs/architecture.md (The Python client).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby

import httpx

from hopcast._client.tasks import Result, Task
from hopcast._core.errors import QueueRefused

log = logging.getLogger("hopcast.client")  # named by layer: module paths are internal

MAX_LEASES = 100
"""Leases per extend request (the gateway's limit)."""
RETRY_SOON = 1.0
"""Seconds before an extend that failed (the gateway away, a 5xx) is tried again, at most."""
MIN_SECONDS = 1.0

Extend = Callable[[str, list[str], float], Awaitable[tuple[dict[str, Result], dict[str, str]]]]
"""Extends leases of one queue by some seconds: the result and new expiry of each."""


@dataclass(eq=False, slots=True)
class _Held:
    task: Task
    seconds: float
    """The lease's length: what each extension asks for."""
    due: float
    """When (loop time) to extend next."""
    extended: float
    """When (loop time) it was granted or extended last."""


def lease_seconds(task: Task, asked: float | None) -> float:
    """The length of ``task``'s lease: as ``asked``, else as its expiry says by this clock."""
    if asked is not None:
        return asked
    return max(MIN_SECONDS, task.expires.timestamp() - time.time())


class LeaseKeeper:
    """The tasks a client holds, each extended at half its lease until it is let go.

    One background task for the whole client, started with the first task held,
    ended by `aclose`.
    """

    def __init__(self, extend: Extend) -> None:
        self._extend = extend
        self._held: dict[str, _Held] = {}
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    def __contains__(self, task: Task) -> bool:
        held = self._held.get(task.lease)
        return held is not None and held.task is task

    def hold(self, task: Task, seconds: float) -> None:
        """Keep ``task``'s lease alive, extending it by ``seconds`` at a time."""
        now = asyncio.get_running_loop().time()
        self._held[task.lease] = _Held(task, seconds, now + seconds / 2, now)
        self._wake.set()
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name="hopcast lease keeper")

    def let_go(self, tasks: Iterable[Task]) -> None:
        """Extend these no more (settled, lost, or their connection dropped)."""
        for task in tasks:
            held = self._held.get(task.lease)
            if held is not None and held.task is task:
                del self._held[task.lease]

    async def aclose(self) -> None:
        self._held.clear()
        runner, self._runner = self._runner, None
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            if not self._held:
                await self._wake.wait()
                continue
            now = loop.time()
            due = min(held.due for held in self._held.values())
            if due > now:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(due - now):
                        await self._wake.wait()
                continue
            ready = sorted(
                (held for held in self._held.values() if held.due <= now),
                key=lambda held: (held.task.queue, held.seconds),
            )
            for (queue, seconds), group in groupby(
                ready, key=lambda held: (held.task.queue, held.seconds)
            ):
                batch = list(group)
                for start in range(0, len(batch), MAX_LEASES):
                    await self._extend_batch(queue, seconds, batch[start : start + MAX_LEASES])

    async def _extend_batch(self, queue: str, seconds: float, batch: list[_Held]) -> None:
        now = asyncio.get_running_loop().time()
        leases = [held.task.lease for held in batch]
        try:
            results, expires = await self._extend(queue, leases, seconds)
        except (httpx.HTTPError, ValueError) as exc:
            self._later(batch, now, f"{exc!r}")
            return
        except QueueRefused as exc:
            if exc.status >= 500 or exc.status == 429:
                self._later(batch, now, str(exc))
                return
            log.warning("extending %d leases of %s was refused (%s)", len(batch), queue, exc)
            results, expires = dict.fromkeys(leases, "lost"), {}
        for held in batch:
            if self._held.get(held.task.lease) is not held:
                continue  # settled while the request was out
            result, until = results.get(held.task.lease, "lost"), expires.get(held.task.lease)
            if result != "ok" or until is None:
                log.info("task %s of %s: its lease is %s", held.task.id, queue, result)
                self.let_go([held.task])
                continue
            granted = datetime.fromisoformat(until)
            # the cap reached: a second or more later, the expiry did not move
            capped = granted <= held.task.expires and now - held.extended >= MIN_SECONDS
            held.task.expires = max(granted, held.task.expires)
            held.extended = now
            if capped:
                log.info("task %s of %s: its lease ends at the cap, %s", held.task.id, queue, until)
                self.let_go([held.task])
            else:
                held.due = now + seconds / 2

    def _later(self, batch: list[_Held], now: float, why: str) -> None:
        """Try these again soon, well before their leases run out."""
        log.warning("extending %d leases failed (%s); trying again", len(batch), why)
        for held in batch:
            held.due = now + min(RETRY_SOON, held.seconds / 4)
