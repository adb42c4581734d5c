"""``hopcast work``: each task of a queue run through a command, settled by its exit status.

The task's body goes to the command's stdin, byte for byte; its id, type and
deliveries to ``HOPCAST_TASK_*`` variables. Exit status 0 acks, any other
nacks. Each command runs in a process group of its own, so a Ctrl-C in the
terminal stops the worker (which lets the commands finish) and not them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from hopcast._client.client import Client
from hopcast._client.task_stream import TaskStream
from hopcast._client.tasks import Task
from hopcast._core.errors import QueueRefused

log = logging.getLogger("hopcast.client")  # named by layer: module paths are internal

DEFAULT_GRACE = 20.0
"""Seconds running commands get to finish once the worker is told to stop."""


@dataclass(frozen=True, slots=True)
class Work:
    """What ``hopcast work`` was asked to do."""

    queue: str
    command: Sequence[str]
    concurrency: int = 1
    lease: float | None = None
    grace: float = DEFAULT_GRACE
    nack_delay: float = 0.0


@dataclass(eq=False)
class Worker:
    """Runs `Work` until `stop`; then running commands get ``grace`` seconds, and the rest
    are killed and their tasks given back. `hurry` (a second signal) ends the grace at once."""

    client: Client
    work: Work
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    hurry: asyncio.Event = field(default_factory=asyncio.Event)
    done: int = 0
    """Commands that ran to an end, whatever their status."""
    _running: dict[asyncio.Task[None], _Run] = field(default_factory=dict)

    async def run(self) -> None:
        """Take and run tasks until `stop`, then stop cleanly; a refusal raises `QueueRefused`."""
        work = self.work
        stream = self.client.tasks(work.queue, prefetch=work.concurrency, lease=work.lease)
        try:
            await self._take(stream)
        finally:
            await self._drain()
            await stream.aclose()  # what it holds and did not run goes back at once

    async def _take(self, stream: TaskStream) -> None:
        slots = asyncio.Semaphore(self.work.concurrency)

        def ended(runner: asyncio.Task[None]) -> None:
            self._running.pop(runner)
            slots.release()

        stopping: asyncio.Future[object] = asyncio.ensure_future(self.stop.wait())
        try:
            while not self.stop.is_set():
                if not await _unless(slots.acquire(), stopping):
                    return
                taking = asyncio.ensure_future(anext(stream))
                if not await _unless(taking, stopping):
                    return  # the stream's reader holds the connection: nothing drops
                try:
                    task = taking.result()
                except StopAsyncIteration:
                    return
                run = _Run(task)
                runner = asyncio.create_task(self._run(run))
                self._running[runner] = run
                runner.add_done_callback(ended)
        finally:
            stopping.cancel()

    async def _run(self, run: _Run) -> None:
        task, work = run.task, self.work
        env = {
            **self.env,
            "HOPCAST_QUEUE": task.queue,
            "HOPCAST_TASK_ID": task.id,
            "HOPCAST_TASK_TYPE": task.type or "",
            "HOPCAST_TASK_DELIVERIES": str(task.deliveries),
        }
        try:
            run.process = await asyncio.create_subprocess_exec(
                *work.command, stdin=asyncio.subprocess.PIPE, env=env, process_group=0
            )
        except OSError as exc:
            log.warning("task %s: cannot run %s: %s; nacked", task.id, work.command[0], exc)
            await self._settle(task, ok=False)
            return
        await run.process.communicate(task.body)  # a command that does not read stdin is fine
        self.done += 1
        status = run.process.returncode
        if run.killed:
            log.warning("task %s: %s killed past the grace; given back", task.id, work.command[0])
            await self._settle(task, ok=False, delay=0.0)
        elif status != 0:
            log.warning(
                "task %s (delivery %d): %s exited with %s; nacked",
                *(task.id, task.deliveries, work.command[0], status),
            )
            await self._settle(task, ok=False)
        else:
            await self._settle(task, ok=True)

    async def _settle(self, task: Task, *, ok: bool, delay: float | None = None) -> None:
        try:
            if ok:
                await task.ack()
            else:
                await task.nack(delay=self.work.nack_delay if delay is None else delay)
        except QueueRefused as exc:  # LeaseLost among them: the task comes again
            log.warning("task %s: %s", task.id, exc)
        except httpx.HTTPError as exc:
            log.warning("task %s: settling failed (%r); it comes again", task.id, exc)

    async def _drain(self) -> None:
        """Let running commands end within the grace; kill the rest (their tasks go back)."""
        if not self._running:
            return
        log.warning(
            "stopping: waiting for %d running commands (at most %.0f s)",
            len(self._running),
            self.work.grace,
        )
        running = dict(self._running)  # each leaves the worker's as it ends
        everyone = asyncio.ensure_future(asyncio.wait(running))
        hurried = asyncio.ensure_future(self.hurry.wait())
        try:
            await asyncio.wait(
                (everyone, hurried), timeout=self.work.grace, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            everyone.cancel()
            hurried.cancel()
        for run in running.values():
            run.kill()
        await asyncio.gather(*running, return_exceptions=True)


@dataclass(eq=False)
class _Run:
    task: Task
    process: asyncio.subprocess.Process | None = None
    killed: bool = False

    def kill(self) -> None:
        """Kill the command and whatever it started (its process group)."""
        if self.process is None or self.process.returncode is not None:
            return
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


async def _unless(waiting: Awaitable[object], stopping: asyncio.Future[object]) -> bool:
    """Wait for ``waiting`` unless ``stopping`` comes first (it is then cancelled): if it came."""
    future = asyncio.ensure_future(waiting)
    await asyncio.wait((future, stopping), return_when=asyncio.FIRST_COMPLETED)
    if future.done():
        return True
    future.cancel()
    return False
