"""`hopcast.Client` as a worker, on the memory broker and on the real RabbitMQ: tasks taken
from a stream or a pull, settled one by one or in batches, leases kept alive while a slow
body runs (never past the cap), and a lost lease as `LeaseLost`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from hopcast import Client, LeaseLost, QueueRefused, Task
from tests.support.proxy import BlackHoleProxy
from tests.support.queues import dead_letters, enqueue, queue_gateway, queue_metric, receive
from tests.support.rabbitmq import Names

pytestmark = pytest.mark.slow


@pytest.fixture
async def gateway_url(broker_kind: str, names: Names, queue: str) -> AsyncIterator[str]:
    """A gateway serving ``queue``: deliveries limited to 2, leases capped at 4 s."""
    async with queue_gateway(
        broker_kind, names, queue, queue_delivery_limit=2, max_lease=4
    ) as gateway:
        yield gateway.url


@pytest.fixture
async def http(gateway_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway_url, timeout=60) as client:
        yield client


async def _take(stream: AsyncIterator[Task], count: int) -> list[Task]:
    async with asyncio.timeout(60):
        return [await anext(stream) for _ in range(count)]


async def test_a_stream_of_tasks_acked_one_by_one(
    gateway_url: str, http: httpx.AsyncClient, queue: str
) -> None:
    sent = [await enqueue(http, queue, b"%d" % n, type="email") for n in range(3)]
    binary = await enqueue(http, queue, bytes(range(256)))
    async with Client(gateway_url) as client, client.tasks(queue, prefetch=2) as stream:
        tasks = []
        async for task in stream:
            await task.ack()
            assert task.settled
            tasks.append(task)
            if len(tasks) == 4:
                break
        assert stream.connections == 1
        with pytest.raises(LeaseLost) as lost:
            await tasks[0].ack()  # a second ack finds the lease gone
        assert lost.value.status == 409
        assert isinstance(lost.value, QueueRefused)
    assert [t.id for t in tasks] == [*sent, binary]
    assert [(t.type, t.data, t.deliveries, t.redelivered) for t in tasks[:3]] == [
        ("email", "0", 1, False),
        ("email", "1", 1, False),
        ("email", "2", 1, False),
    ]
    assert tasks[3].data == tasks[3].body == bytes(range(256))  # base64 on the way, bytes here
    assert await queue_metric(http, "hopcast_queue_settled_total", queue, outcome="ack") == 4
    assert await receive(http, queue) == []


async def test_a_nack_with_a_delay_brings_the_task_back(
    gateway_url: str, http: httpx.AsyncClient, queue: str
) -> None:
    task_id = await enqueue(http, queue, b"later")
    async with Client(gateway_url) as client:
        [task] = await client.receive(queue, wait=20)
        await task.nack(delay=1)
        async with client.tasks(queue) as stream:
            [back] = await _take(stream, 1)
            assert (back.id, back.deliveries, back.redelivered) == (task_id, 2, True)
            await back.ack()
    assert await queue_metric(http, "hopcast_queue_settled_total", queue, outcome="nack") == 1


async def test_a_rejected_task_is_a_dead_letter(
    gateway_url: str, http: httpx.AsyncClient, queue: str
) -> None:
    task_id = await enqueue(http, queue, b"bad")
    async with Client(gateway_url) as client, client.tasks(queue) as stream:
        [task] = await _take(stream, 1)
        await task.reject()
    [dead] = await dead_letters(http, queue, 1)
    assert (dead["id"], dead["reason"], dead["data"]) == (task_id, "rejected", "bad")


async def test_batch_acks_answer_for_each_lease(
    gateway_url: str, http: httpx.AsyncClient, queue: str
) -> None:
    for n in range(5):
        await enqueue(http, queue, b"%d" % n)
    async with Client(gateway_url) as client:
        tasks: list[Task] = []
        while len(tasks) < 5:
            tasks += await client.receive(queue, max=5, wait=20)
        first = await client.ack(tasks[0])
        assert first == {tasks[0].lease: "ok"}
        results = await client.ack(*tasks)
        assert results == {t.lease: ("lost" if t is tasks[0] else "ok") for t in tasks}
        assert all(t.settled for t in tasks)
        assert await client.ack(tasks[1]) == {tasks[1].lease: "lost"}
    assert await queue_metric(http, "hopcast_queue_settled_total", queue, outcome="ack") == 5
    assert await receive(http, queue) == []


async def test_a_slow_body_keeps_its_lease_past_the_lease_it_was_given(
    gateway_url: str, http: httpx.AsyncClient, queue: str
) -> None:
    """Leases of 1 s, a body of 3 s: extended (below the 4 s cap), never expired."""
    await enqueue(http, queue, b"slow")
    await enqueue(http, queue, b"waiting in the buffer")
    async with Client(gateway_url) as client, client.tasks(queue, prefetch=2, lease=1) as stream:
        [task] = await _take(stream, 1)
        granted = task.expires
        await asyncio.sleep(3)
        assert task.expires > granted
        await task.ack()
        [second] = await _take(stream, 1)  # held meanwhile, and kept alive too
        await second.ack()
    assert await queue_metric(http, "hopcast_queue_lease_expiries_total", queue) == 0
    assert (task.deliveries, second.deliveries) == (1, 1)


async def test_past_the_cap_the_lease_is_lost_and_the_task_comes_again(
    gateway_url: str, http: httpx.AsyncClient, queue: str
) -> None:
    """The cap is 4 s: a body of 6 s finds its lease gone, however often it was extended."""
    task_id = await enqueue(http, queue, b"too slow")
    async with Client(gateway_url) as client:
        [task] = await client.receive(queue, wait=20, lease=1)
        await asyncio.sleep(6)
        with pytest.raises(LeaseLost) as lost:
            await task.ack()
        assert lost.value.status == 409
        assert not task.settled
        [back] = await client.receive(queue, wait=20)
        assert (back.id, back.deliveries, back.redelivered) == (task_id, 2, True)
        await back.ack()
    assert await queue_metric(http, "hopcast_queue_lease_expiries_total", queue) == 1


async def test_a_dropped_stream_reconnects_and_its_tasks_come_again(
    gateway_url: str, http: httpx.AsyncClient, queue: str
) -> None:
    task_id = await enqueue(http, queue, b"held when the link broke")
    port = int(gateway_url.rsplit(":", 1)[1])
    async with (
        BlackHoleProxy("127.0.0.1", port) as proxy,
        Client(f"http://127.0.0.1:{proxy.port}", retry=0.2) as client,
        client.tasks(queue, lease=4) as stream,
    ):
        [task] = await _take(stream, 1)
        for link in proxy.links:
            link.abort()
        [back] = await _take(stream, 1)
        assert (back.id, back.redelivered, back.deliveries) == (task_id, True, 2)
        assert stream.connections == 2
        with pytest.raises(LeaseLost):
            await task.ack()
        await back.ack()


async def test_a_queue_not_served_or_a_name_that_is_not_one_is_refused(gateway_url: str) -> None:
    async with Client(gateway_url) as client:
        with pytest.raises(QueueRefused) as refused:
            await anext(client.tasks("no.such.queue"))
        assert refused.value.status == 404
        with pytest.raises(QueueRefused) as refused:
            await client.receive("bad..name")
        assert refused.value.status == 400
