"""A task stream (``GET /queues/NAME``) read by the client: `Task` values, reconnecting itself.

A reader in the background holds the connection: the tasks leased on it stay
leased only while it is open, so waiting for the next task may be cancelled
(``hopcast work`` does, to stop) without dropping it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import Protocol

import httpx

from hopcast._client.leases import LeaseKeeper, lease_seconds
from hopcast._client.problems import RECONNECT_ERRORS, refusal
from hopcast._client.tasks import Settler, Task
from hopcast._client.values import EventStreamParser
from hopcast._core.errors import QueueRefused, Refused

log = logging.getLogger("hopcast.client")  # named by layer: module paths are internal


class Taker(Settler, Protocol):
    """What a task stream needs of its client (the `Client`)."""

    url: str
    retry: float
    leases: LeaseKeeper

    @property
    def http(self) -> httpx.AsyncClient: ...

    async def auth_headers(self) -> dict[str, str]: ...

    def queue_url(self, queue: str, action: str = "") -> str: ...


class TaskStream:
    """An open task stream: ``async for task in it`` yields `Task` values as they are leased.

    When its connection drops, the gateway gives back every task leased on it
    (they come again, flagged ``redelivered``, maybe to another worker), the
    tasks it had not yielded yet are dropped, and it reconnects after ``retry``
    seconds (or the stream's ``retry:``). A refusal (a 4xx: no such queue, no
    right) ends the iteration with `QueueRefused`. `aclose` (or the end of an
    ``async with``) closes the connection: what it held and was not settled goes back.
    """

    def __init__(self, client: Taker, queue: str, prefetch: int, lease: float | None) -> None:
        self.client = client
        self.queue = queue
        self.prefetch = prefetch
        self.lease = lease
        self.retry = client.retry
        self.connections = 0
        """Connections that the gateway answered with a task stream."""
        self._ready: deque[Task] = deque()
        self._arrived = asyncio.Event()
        self._failure: Refused | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    async def __aenter__(self) -> TaskStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> TaskStream:
        return self

    async def __anext__(self) -> Task:
        if self._reader is None and not self._closed:
            self._reader = asyncio.create_task(self._read(), name=f"hopcast tasks {self.queue}")
        while not self._ready:
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self._closed:
                raise StopAsyncIteration
            self._arrived.clear()
            await self._arrived.wait()
        return self._ready.popleft()

    async def aclose(self) -> None:
        """Close the connection; its unsettled tasks go back to the queue at once."""
        self._closed = True
        self._arrived.set()
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self) -> None:
        wait = 0.0
        while not self._closed:
            if wait:
                await asyncio.sleep(wait)
            wait = self.retry
            held: list[Task] = []
            try:
                await self._connection(held)
            except RECONNECT_ERRORS as exc:
                log.warning(
                    "%s: task stream of %s: %s; trying again in %.1f s",
                    self.client.url,
                    self.queue,
                    exc or type(exc).__name__,
                    self.retry,
                )
            except Refused as exc:
                self._failure = exc
                self._closed = True
            finally:
                self._dropped(held)
            self._arrived.set()

    async def _connection(self, held: list[Task]) -> None:
        """One connection, until it ends; each task it brings is put in ``held`` too."""
        client = self.client
        params: dict[str, str | int | float] = {"prefetch": self.prefetch}
        if self.lease is not None:
            params["lease"] = self.lease
        headers = {"Accept": "text/event-stream", **await client.auth_headers()}
        url = client.queue_url(self.queue)
        async with client.http.stream("GET", url, params=params, headers=headers) as response:
            if response.status_code != 200:
                body = (await response.aread()).decode(errors="replace")
                if 400 <= response.status_code < 500:
                    raise refusal(QueueRefused, response.status_code, body)
                log.warning("%s answered %d; trying again", client.url, response.status_code)
                return
            self.connections += 1
            parser = EventStreamParser()
            async for chunk in response.aiter_bytes():
                for event in parser.feed(chunk):
                    if event.event != "task":
                        continue
                    try:
                        task = Task.from_json(self.queue, json.loads(event.data), client)
                    except ValueError as exc:  # not the gateway's: say so, and go on
                        log.warning("%s: a task event that is not one: %s", client.url, exc)
                        continue
                    held.append(task)
                    client.leases.hold(task, lease_seconds(task, self.lease))
                    self._ready.append(task)
                    self._arrived.set()
                if parser.retry_ms is not None:
                    self.retry = parser.retry_ms / 1000

    def _dropped(self, held: list[Task]) -> None:
        """The connection is gone, and its leases with it: extend them no more, and yield
        none that was not yielded yet (the gateway gives them all back)."""
        self.client.leases.let_go(held)
        gone = {id(task) for task in held}
        self._ready = deque(task for task in self._ready if id(task) not in gone)
