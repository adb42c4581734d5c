"""Work queues in tests: a queue name of the test's own, gateways that serve it, workers.

Every name is fresh per test, and its RabbitMQ queues (``hopcast.q.NAME`` and
its dead letters) are deleted afterwards.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiormq
import httpx

from tests.support.gateways import Gateway, serve_in_loop, settings_for
from tests.support.rabbitmq import AMQP_URL, Names, delete
from tests.support.sse import EventStream


def fresh_queue_name() -> str:
    return f"test.{uuid.uuid4().hex[:12]}"


def lease_instance(lease: str) -> bytes:
    """The process start a lease token names: the process that owns the lease."""
    head = lease.split(".", maxsplit=1)[0]
    return base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))[:8]


async def delete_queues(names: list[str]) -> None:
    """Delete the RabbitMQ queues of these work queues (and their dead letters)."""
    await delete([f"hopcast.q.{n}{suffix}" for n in names for suffix in ("", ".dead")])


async def declare_classic(queue: str, url: str = AMQP_URL) -> None:
    """Declare ``queue`` as a classic queue, as someone else might have before the gateway."""
    conn = await aiormq.connect(url)
    try:
        channel = await conn.channel()
        await channel.queue_declare(queue, durable=True)
    finally:
        await conn.close()


@contextlib.asynccontextmanager
async def queue_gateway(
    kind: str, names: Names, queue: str, **overrides: object
) -> AsyncIterator[Gateway]:
    """A gateway serving the work queue ``queue`` (on ``kind``'s broker), until the block ends."""
    settings = settings_for(kind, names if kind == "amqp" else None, queue=queue, **overrides)
    async with serve_in_loop(settings) as gateway:
        await gateway.app.state.queues.declared.wait()
        yield gateway


async def enqueue(http: httpx.AsyncClient, queue: str, body: bytes, type: str | None = None) -> str:
    """Enqueue one task; its id."""
    params = {"type": type} if type is not None else {}
    answer = await http.post(f"/queues/{queue}", content=body, params=params)
    assert answer.status_code == 202, answer.text
    task_id: str = answer.json()["id"]
    return task_id


async def receive(http: httpx.AsyncClient, queue: str, **params: Any) -> list[dict[str, Any]]:
    """Pull tasks (``max``, ``wait``, ``lease`` as query parameters)."""
    answer = await http.post(f"/queues/{queue}/receive", params=params)
    assert answer.status_code == 200, answer.text
    tasks: list[dict[str, Any]] = answer.json()["tasks"]
    return tasks


async def dead_letters(http: httpx.AsyncClient, queue: str, count: int) -> list[dict[str, object]]:
    """The dead letters, once there are ``count`` (dead-lettering is asynchronous on RabbitMQ)."""
    for _ in range(600):
        dead: list[dict[str, object]] = (await http.get(f"/queues/{queue}/dead")).json()["dead"]
        if len(dead) >= count:
            return dead
        await receive(http, queue, wait=0.1)  # a pause that waits on the gateway
    raise AssertionError(f"fewer than {count} dead letters")


async def queue_metric(http: httpx.AsyncClient, name: str, queue: str, **labels: str) -> float:
    """A metric of ``queue`` (and ``labels``) as the gateway's ``/metrics`` says it now."""
    wanted = ",".join(f'{k}="{v}"' for k, v in {**labels, "queue": queue}.items())
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} for {queue}")


async def settle(
    http: httpx.AsyncClient, queue: str, action: str, *leases: str, **more: Any
) -> httpx.Response:
    """Ack, nack, reject or extend leases."""
    return await http.post(f"/queues/{queue}/{action}", json={"leases": list(leases), **more})


class TaskReader:
    """A task stream (``GET /queues/NAME``) read as a browser would: its tasks as they come."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_bytes()
        self._parser = EventStream()
        self._ready: list[dict[str, Any]] = []

    async def next(self) -> dict[str, Any]:
        while not self._ready:
            for event in self._parser.feed(await anext(self._chunks)):
                assert event.type == "task", event
                task: dict[str, Any] = json.loads(event.data)
                assert task["lease"] == event.last_event_id
                self._ready.append(task)
        return self._ready.pop(0)

    async def rest(self) -> bytes:
        """Whatever the stream sends until it ends."""
        return b"".join([chunk async for chunk in self._chunks])


@contextlib.asynccontextmanager
async def task_stream(
    http: httpx.AsyncClient, queue: str, **params: Any
) -> AsyncIterator[TaskReader]:
    """Open a task stream for the block; leaving the block drops the connection."""
    async with http.stream("GET", f"/queues/{queue}", params=params) as response:
        assert response.status_code == 200
        yield TaskReader(response)
