"""A Python client for services: publish through the gateway, and subscribe as EventSource does.

>>> async def main() -> None:
...     async with Client("http://127.0.0.1:8080") as client:
...         await client.publish("orders.42", '{"order": 42}', event="order-paid")
...         async for item in client.subscribe("orders.*"):
...             if isinstance(item, Missed):
...                 print("lost events before", item.first)  # reload state from elsewhere
...             else:
...                 print(item.id, item.event, item.data)

``token`` is a bearer token, or a function (plain or async) called for a fresh
one before every connection and every publish: a stream ends when its token
expires, and the subscription then resumes with the next token where the last
one stopped. How a subscription reconnects is drawn in docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import weakref
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from itertools import groupby
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from hopcast._client.leases import MAX_LEASES, LeaseKeeper, lease_seconds
from hopcast._client.problems import refusal, retry_after
from hopcast._client.subscription import Subscription
from hopcast._client.task_stream import TaskStream
from hopcast._client.tasks import Action, Result, Task
from hopcast._client.values import Published
from hopcast._core.errors import (
    LeaseLost,
    PublishRefused,
    QueueRefused,
    Refused,
)

log = logging.getLogger("hopcast.client")  # named by layer: module paths are internal

RETRIED_STATUSES = frozenset({429, 503})
"""Publish answers that say nothing was published, come back later (with ``Retry-After``)."""
RECEIVE_SLACK = 10.0
"""Seconds a pull may take beyond its ``wait`` before it counts as timed out."""

_R = TypeVar("_R", bound=Refused)

TokenSource = str | Callable[[], str | Awaitable[str]]
"""A bearer token, or a function returning a fresh one (awaited when it is async)."""


class Client:
    """One gateway: publish to it, subscribe to it; an async context manager, as httpx's client.

    ``retry`` is the wait in seconds before a subscription reconnects (until a
    stream's ``retry:`` says otherwise). A connection that brings no byte for
    ``idle_timeout`` seconds is judged dead (a network that drops packets closes
    nothing) and resumed on a new one; the gateway sends a heartbeat every
    ``--heartbeat`` seconds (15 by default), so keep it above twice that, or
    None never to judge; it applies to the client's own HTTP client, not to one
    passed as ``http``. A publish answered ``503`` or ``429`` (nothing was
    published) or that cannot connect is tried again ``publish_retries`` times,
    after the answer's ``Retry-After`` (else ``retry``) seconds.
    """

    def __init__(
        self,
        url: str,
        *,
        token: TokenSource | None = None,
        retry: float = 3.0,
        idle_timeout: float | None = 45.0,
        publish_retries: int = 3,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.retry = retry
        self.publish_retries = publish_retries
        self._token = token
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=idle_timeout))
        self._subscriptions: weakref.WeakSet[Subscription] = weakref.WeakSet()
        self._task_streams: weakref.WeakSet[TaskStream] = weakref.WeakSet()
        self.leases = LeaseKeeper(self._extend)
        """The tasks this client holds, their leases extended until they are settled."""

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every subscription and task stream still open (their unsettled tasks go back),
        stop extending leases, then close the HTTP client if it is the client's own."""
        for subscription in list(self._subscriptions):
            await subscription.aclose()
        for stream in list(self._task_streams):
            await stream.aclose()
        await self.leases.aclose()
        if self._own_http:
            await self._http.aclose()

    def subscribe(
        self,
        *patterns: str,
        since: str | datetime | None = None,
        last_event_id: str | None = None,
    ) -> Subscription:
        """Subscribe to ``patterns``; iterate the answer for `Event` and `Missed` values, in order.

        ``last_event_id`` resumes after that event; ``since`` (``"first"``, or a
        time) starts at the stream's beginning or at that time instead of now.
        """
        if not patterns:
            raise TypeError("subscribe() needs at least one pattern")
        subscription = Subscription(self, patterns, since=since, last_event_id=last_event_id)
        self._subscriptions.add(subscription)
        return subscription

    async def publish(
        self, topic: str, data: str | bytes, *, event: str | None = None
    ) -> Published:
        """Publish ``data`` on ``topic``; `Published` once RabbitMQ confirmed it.

        A refusal raises `PublishRefused` (its ``status``, ``title`` and ``detail``).
        """
        body = data.encode() if isinstance(data, str) else data
        url = f"{self.url}/events/{quote(topic, safe='')}"
        params = {"event": event} if event is not None else {}
        response = await self._post(url, PublishRefused, "publishing", content=body, params=params)
        answer = response.json()
        return Published(answer["topic"], answer["event"], answer["size"])

    async def _post(
        self,
        url: str,
        kind: type[_R],
        doing: str,
        *,
        timeout: httpx.Timeout | None = None,
        **request: Any,
    ) -> httpx.Response:
        """POST, tried again while nothing was done (it cannot connect, a ``503`` or ``429``,
        ``publish_retries`` times); a 2xx answer, else a ``kind`` of `Refused`."""
        tries = 0
        if timeout is not None:
            request["timeout"] = timeout
        while True:
            tries += 1
            headers = await self.auth_headers()
            try:
                response = await self._http.post(url, headers=headers, **request)
            except httpx.ConnectError:  # nothing was sent: trying again does it at most once
                if tries > self.publish_retries:
                    raise
                log.warning("%s: cannot connect; %s again in %.1f s", self.url, doing, self.retry)
                await asyncio.sleep(self.retry)
                continue
            if 200 <= response.status_code < 300:
                return response
            refused = refusal(kind, response.status_code, response.text)
            if response.status_code not in RETRIED_STATUSES or tries > self.publish_retries:
                raise refused
            wait = retry_after(response.headers.get("retry-after"), self.retry)
            log.warning("%s; %s again in %.1f s", refused, doing, wait)
            await asyncio.sleep(wait)

    # -- work queues -------------------------------------------------------------------

    def tasks(self, queue: str, *, prefetch: int = 1, lease: float | None = None) -> TaskStream:
        """Take tasks of ``queue`` as they come; iterate the answer for `Task` values.

        The connection holds up to ``prefetch`` tasks (1-100) leased for ``lease``
        seconds each (None: the gateway's ``--lease``). Every task taken is extended
        at half its lease until it is settled (never past the gateway's cap).

        >>> async def work(client: Client) -> None:
        ...     async for task in client.tasks("mail", prefetch=4):
        ...         await task.ack()
        """
        stream = TaskStream(self, queue, prefetch, lease)
        self._task_streams.add(stream)
        return stream

    async def receive(
        self, queue: str, *, max: int = 1, wait: float = 0.0, lease: float | None = None
    ) -> list[Task]:
        """Up to ``max`` tasks of ``queue`` (1-100), waiting up to ``wait`` seconds (0-20) for
        the first; an empty list when none came. Their leases are extended as a stream's are."""
        params: dict[str, Any] = {"max": max, "wait": wait}
        if lease is not None:
            params["lease"] = lease
        timeout = httpx.Timeout(10.0, read=wait + RECEIVE_SLACK)
        url = self.queue_url(queue, "receive")
        response = await self._post(url, QueueRefused, "receiving", params=params, timeout=timeout)
        tasks = [Task.from_json(queue, item, self) for item in response.json()["tasks"]]
        for task in tasks:
            self.leases.hold(task, lease_seconds(task, lease))
        return tasks

    async def ack(self, *tasks: Task) -> dict[str, Result]:
        """Acknowledge tasks in as few requests as can be; the result of each, by lease:
        ``"ok"``, ``"lost"`` (see `LeaseLost`) or ``"forbidden"`` (another principal's)."""
        return await self._settle_many(tasks, "ack")

    async def nack(self, *tasks: Task, delay: float = 0.0) -> dict[str, Result]:
        """Give tasks back, after ``delay`` seconds; the result of each, as `ack` says."""
        return await self._settle_many(tasks, "nack", delay)

    async def reject(self, *tasks: Task) -> dict[str, Result]:
        """Send tasks to the dead letters; the result of each, as `ack` says."""
        return await self._settle_many(tasks, "reject")

    def queue_url(self, queue: str, action: str = "") -> str:
        """The URL of ``queue`` (its name checked by the gateway), or of one of its actions."""
        return f"{self.url}/queues/{quote(queue, safe='')}" + (f"/{action}" if action else "")

    async def _settle_many(
        self, tasks: tuple[Task, ...], action: Action, delay: float = 0.0
    ) -> dict[str, Result]:
        results: dict[str, Result] = {}
        extra = {"delay": delay} if action == "nack" else {}
        for queue, group in groupby(sorted(tasks, key=lambda t: t.queue), key=lambda t: t.queue):
            batch = list(group)
            for start in range(0, len(batch), MAX_LEASES):
                chunk = batch[start : start + MAX_LEASES]
                try:
                    got, _ = await self._settle(queue, action, [t.lease for t in chunk], extra)
                finally:
                    self.leases.let_go(chunk)
                results.update(got)
                for task in chunk:
                    task.settled = task.settled or got.get(task.lease) == "ok"
        return results

    async def _settle_one(self, task: Task, action: Action, delay: float) -> None:
        extra = {"delay": delay} if action == "nack" else {}
        try:
            results, _ = await self._settle(task.queue, action, [task.lease], extra)
        finally:
            self.leases.let_go([task])  # settled or not, extending it would not help
        if results.get(task.lease) != "ok":
            raise LeaseLost(409, "Lease lost", f"task {task.id} of {task.queue}: {_LOST}")
        task.settled = True

    async def _extend(
        self, queue: str, leases: list[str], seconds: float
    ) -> tuple[dict[str, Result], dict[str, str]]:
        return await self._settle(queue, "extend", leases, {"seconds": seconds})

    async def _settle(
        self, queue: str, action: str, leases: list[str], extra: Mapping[str, float]
    ) -> tuple[dict[str, Result], dict[str, str]]:
        """One settle or extend request: each lease's result and new expiry. One lease alone
        answered ``409`` is ``"lost"``; any other refusal raises `QueueRefused`."""
        url = self.queue_url(queue, action)
        body = {"leases": leases, **extra}
        try:
            response = await self._post(url, QueueRefused, action, json=body)
        except QueueRefused as exc:
            if exc.status == 409 and len(leases) == 1:
                return {leases[0]: "lost"}, {}
            raise
        answer = response.json()
        return answer["results"], answer.get("expires", {})

    async def auth_headers(self) -> dict[str, str]:
        """The ``Authorization`` header with a fresh token, when the client has a token."""
        if self._token is None:
            return {}
        token = self._token if isinstance(self._token, str) else self._token()
        token = await token if inspect.isawaitable(token) else token
        return {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def http(self) -> httpx.AsyncClient:
        """The HTTP client the client speaks through."""
        return self._http


_LOST = "the lease is lost: it expired, was settled or given back, or its connection dropped"
