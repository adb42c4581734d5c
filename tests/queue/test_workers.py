"""Many HTTP workers on one queue, some dropping mid-task and some letting leases run out.

Every task is acknowledged and none is lost; the tasks done more than once are
exactly those a worker dropped holding or let expire, each flagged
``redelivered`` with its ``deliveries``. Then the same with a RabbitMQ restart
in the middle: leases granted before it answer 409, and their tasks come again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.support.queues import (
    delete_queues,
    fresh_queue_name,
    queue_gateway,
    settle,
    task_stream,
)
from tests.support.rabbitmq import Names, rabbitmq_stopped

pytestmark = pytest.mark.slow

TASKS = 2000
STREAM_WORKERS = 5
PULL_WORKERS = 5
PREFETCH = 3
DROP_EVERY = 100
"""A stream worker drops its connection, holding PREFETCH tasks, after this many acks."""
FAST = {"publish_rate": 1e6, "publish_burst": 100_000}
"""No rate limit on the enqueues: they are the test's, not a client's."""
ABANDON_EVERY = 50
"""A pull worker lets the lease of every task numbered a multiple of this run out, once."""


@dataclass
class Ledger:
    """What the workers saw: every delivery, every ack, and why a task was left unsettled."""

    seen: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    acked: Counter[str] = field(default_factory=Counter)
    left: Counter[str] = field(default_factory=Counter)
    """Tasks left unsettled on purpose (a drop while holding them, a lease let expire)."""
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def took(self, task: dict[str, Any]) -> None:
        self.seen[task["id"]].append(task)

    def ack_results(self, tasks: list[dict[str, Any]], results: dict[str, str]) -> None:
        for task in tasks:
            assert results[task["lease"]] == "ok", (task, results)
            self.acked[task["id"]] += 1
        if len(self.acked) == TASKS:
            self.done.set()


async def _ack(http: httpx.AsyncClient, queue: str, tasks: list[dict[str, Any]]) -> dict[str, str]:
    answer = await settle(http, queue, "ack", *(t["lease"] for t in tasks))
    assert answer.status_code == 200, answer.text
    results: dict[str, str] = answer.json()["results"]
    return results


async def stream_worker(http: httpx.AsyncClient, queue: str, ledger: Ledger) -> None:
    """Ack as tasks come; every DROP_EVERY acks, hold PREFETCH tasks and drop the connection."""
    acks = 0
    while not ledger.done.is_set():
        async with task_stream(http, queue, prefetch=PREFETCH, lease=120) as stream:
            while True:
                task = await stream.next()
                ledger.took(task)
                # drop only while plenty are left: a worker waiting for tasks to hold would
                # wait for ever near the end
                if acks and acks % DROP_EVERY == 0 and len(ledger.acked) < TASKS - 200:
                    held = [task] + [await stream.next() for _ in range(PREFETCH - 1)]
                    for other in held[1:]:
                        ledger.took(other)
                    ledger.left.update(t["id"] for t in held)
                    acks += 1
                    break  # the connection drops holding all it was sent
                ledger.ack_results([task], await _ack(http, queue, [task]))
                acks += 1


async def pull_worker(http: httpx.AsyncClient, queue: str, ledger: Ledger) -> None:
    """Take up to 10 at a time and ack them in one request, but abandon some leases once."""
    while not ledger.done.is_set():
        answer = await http.post(
            f"/queues/{queue}/receive", params={"max": 10, "wait": 1, "lease": 2}
        )
        if answer.status_code == 503:  # the broker is away: come back
            await asyncio.sleep(0.2)
            continue
        tasks = answer.json()["tasks"]
        for task in tasks:
            ledger.took(task)
        abandon = [t for t in tasks if int(t["data"]) % ABANDON_EVERY == 0 and t["deliveries"] == 1]
        ledger.left.update(t["id"] for t in abandon)
        keep = [t for t in tasks if t not in abandon]
        if keep:
            ledger.ack_results(keep, await _ack(http, queue, keep))


@contextlib.asynccontextmanager
async def workers(url: str, queue: str, ledger: Ledger) -> AsyncIterator[None]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http, asyncio.TaskGroup() as group:
        for _ in range(STREAM_WORKERS):
            group.create_task(stream_worker(http, queue, ledger))
        for _ in range(PULL_WORKERS):
            group.create_task(pull_worker(http, queue, ledger))
        yield
        async with asyncio.timeout(300):
            await ledger.done.wait()
        for task in list(group._tasks):  # the stream workers wait on their streams
            task.cancel()


async def enqueue_all(url: str, queue: str, count: int) -> dict[str, int]:
    """Enqueue ``count`` numbered tasks, 20 at a time; their ids and numbers."""
    ids: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:

        async def one(n: int) -> None:
            answer = await http.post(f"/queues/{queue}", content=b"%d" % n)
            assert answer.status_code == 202, answer.text
            ids[answer.json()["id"]] = n

        for start in range(0, count, 20):
            await asyncio.gather(*(one(n) for n in range(start, min(count, start + 20))))
    return ids


def check(ledger: Ledger, ids: dict[str, int]) -> None:
    """Every task acked once; the ones done again are exactly those left unsettled."""
    assert set(ledger.acked) == set(ids), "a task was lost"
    assert set(ledger.acked.values()) == {1}
    assert ledger.left, "no worker dropped or abandoned a task: the test tested nothing"
    for task_id, deliveries in ledger.seen.items():
        assert len(deliveries) == 1 + ledger.left[task_id], (task_id, deliveries)
        for number, task in enumerate(deliveries, 1):
            assert (task["deliveries"], task["redelivered"]) == (number, number > 1), task


async def test_many_workers_do_every_task(broker_kind: str, names: Names, queue: str) -> None:
    async with queue_gateway(broker_kind, names, queue, queue_delivery_limit=50, **FAST) as gateway:
        ids = await enqueue_all(gateway.url, queue, TASKS)
        ledger = Ledger()
        async with workers(gateway.url, queue, ledger):
            pass
        async with httpx.AsyncClient(base_url=gateway.url) as http:
            assert (await http.post(f"/queues/{queue}/receive")).json() == {"tasks": []}
            assert (await http.get(f"/queues/{queue}/dead")).json() == {"dead": []}
    check(ledger, ids)


@pytest.mark.broker_restart
@pytest.mark.usefixtures("rabbitmq")
async def test_a_rabbitmq_restart_loses_no_task(names: Names) -> None:
    queue = fresh_queue_name()
    try:
        await _restart_run(names, queue)
    finally:
        await delete_queues([queue])


async def _restart_run(names: Names, queue: str) -> None:
    async with queue_gateway("amqp", names, queue, amqp_heartbeat=2, **FAST) as gateway:
        ids = await enqueue_all(gateway.url, queue, 300)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
            done: set[str] = set()
            while len(done) < 100:  # a run under way: some done, some held
                taken = await http.post(f"/queues/{queue}/receive", params={"max": 20, "wait": 1})
                tasks = taken.json()["tasks"]
                await settle(http, queue, "ack", *(t["lease"] for t in tasks))
                done.update(t["id"] for t in tasks)
            held = (await http.post(f"/queues/{queue}/receive", params={"max": 5})).json()["tasks"]
            assert len(held) == 5
            async with rabbitmq_stopped():
                refused = await http.post(f"/queues/{queue}", content=b"while away")
                assert refused.status_code == 503, refused.text
                assert refused.headers["retry-after"]
                assert (await http.post(f"/queues/{queue}/receive")).status_code == 503
            for task in held:  # granted before the restart: lost with their channel
                answer = await settle(http, queue, "ack", task["lease"])
                assert answer.status_code == 409, answer.text
            # every other task comes, the held ones again
            again: dict[str, dict[str, Any]] = {}
            async with asyncio.timeout(120):
                while len(done) < len(ids):
                    answer = await http.post(
                        f"/queues/{queue}/receive", params={"max": 50, "wait": 1}
                    )
                    if answer.status_code == 503:
                        await asyncio.sleep(0.2)
                        continue
                    tasks = answer.json()["tasks"]
                    again.update((t["id"], t) for t in tasks if t["id"] in {h["id"] for h in held})
                    if tasks:
                        acked = await settle(http, queue, "ack", *(t["lease"] for t in tasks))
                        results = acked.json()["results"]
                        done.update(t["id"] for t in tasks if results[t["lease"]] == "ok")
    assert done == set(ids)
    assert set(again) == {t["id"] for t in held}
    assert all(t["redelivered"] and t["deliveries"] >= 2 for t in again.values())
