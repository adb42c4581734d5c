"""Chaos on a work queue: 10,000 tasks, 20 HTTP workers, three workers and a gateway process killed.

Two gateways serve one queue with one ``--lease-secret``: A with ``--workers 2``
and B with one. Twenty workers take tasks from them, each its own way (a stream
or pulls, through `hopcast.Client` or raw HTTP), and ack them one by one or in
batches, some through a connection of their own to either gateway, so that
settlements are routed to the process that owns the lease. Mid-run three
workers die holding tasks (their connections drop, nothing settled) and one
process of A is SIGKILLed. Every task is acknowledged, none is lost, and the
tasks done twice are only those a killed worker held, those leased through the
killed process, or those whose lease expired; each came again flagged
``redelivered`` with more ``deliveries``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from itertools import pairwise
from pathlib import Path

import aiormq
import httpx
import pytest
from pamqp import commands as spec

from hopcast._queue.routing import control_queue
from tests.queue.chaos import (
    DOOMED,
    KINDS,
    PREFETCH,
    PULL_MAX,
    TIMEOUT,
    Delivery,
    Ledger,
    Worker,
)
from tests.support.processes import ChildGateway, child_gateway
from tests.support.queues import (
    delete_queues,
    fresh_queue_name,
    lease_instance,
)
from tests.support.rabbitmq import AMQP_URL, Names, rabbitmqctl_table
from tests.support.waits import until, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]

TASKS = 10_000
LEASE_SECRET = "a lease secret shared by the gateways of the chaos test"
SKEW = 1.0
"""Seconds of leeway between the gateway's clock for an expiry and the test's."""


@contextlib.contextmanager
def _gateways(names: Names, queue: str, logs: Path) -> Iterator[tuple[ChildGateway, ChildGateway]]:
    env = {
        **names.env(),
        "HOPCAST_QUEUE": queue,
        "HOPCAST_LEASE_SECRET": LEASE_SECRET,
        "HOPCAST_LOG_LEVEL": "info",
    }
    with (
        child_gateway(env, "--workers", "2", log_dir=logs, label="a") as a,
        child_gateway(env, log_dir=logs, label="b") as b,
    ):
        yield a, b


@pytest.fixture
async def queue() -> AsyncIterator[str]:
    """A work queue of this test's own on RabbitMQ (only there: processes are killed)."""
    name = fresh_queue_name()
    yield name
    await delete_queues([name])


async def test_killed_workers_and_process_lose_no_task(
    names: Names, queue: str, tmp_path: Path
) -> None:
    with _gateways(names, queue, tmp_path) as (a, b):
        await wait_ready(a.url)
        await wait_ready(b.url)
        await until(lambda: len(a.workers()) == 2, "two workers in gateway A")
        ids = await _enqueue(queue)
        ledger = Ledger()
        workers = _workers(queue, a.url, b.url, ledger)
        async with asyncio.TaskGroup() as group:
            running = {
                w.name: group.create_task(KINDS[w.name.rsplit("-", 1)[0]](w)) for w in workers
            }
            try:
                await _chaos(a, workers, running, ledger)
                await _finish(queue, ids, ledger)
            finally:
                for task in running.values():
                    task.cancel()
        await _check_empty(queue, b.url)
    _check(ledger, ids, workers)


def _workers(queue: str, a: str, b: str, ledger: Ledger) -> list[Worker]:
    """Five of each kind, three through A and two through B."""
    workers = []
    for kind in KINDS:
        for n in range(5):
            gateway, url = ("a", a) if n < 3 else ("b", b)
            name = f"{kind}-{gateway}{n}"
            rng = random.Random(name)
            workers.append(Worker(name, url, (a, b), queue, ledger, rng=rng))
    assert {w.name for w in workers} >= set(DOOMED)
    return workers


async def _enqueue(queue: str) -> set[str]:
    """Enqueue TASKS numbered tasks straight on RabbitMQ, as any AMQP client may; their ids."""
    ids = {uuid.uuid4().hex for _ in range(TASKS)}
    conn = await aiormq.connect(AMQP_URL)
    try:
        channel = await conn.channel(publisher_confirms=True)
        batch = list(ids)
        for start in range(0, TASKS, 500):
            await asyncio.gather(
                *(
                    channel.basic_publish(
                        b"%d" % n,
                        routing_key=f"hopcast.q.{queue}",
                        properties=spec.Basic.Properties(message_id=task_id, delivery_mode=2),
                    )
                    for n, task_id in enumerate(batch[start : start + 500], start)
                )
            )
    finally:
        await conn.close()
    return ids


async def _chaos(
    a: ChildGateway, workers: list[Worker], running: dict[str, asyncio.Task[None]], ledger: Ledger
) -> None:
    """Once KILL_AFTER tasks are acked: kill three workers holding tasks, then a process of A."""
    async with asyncio.timeout(120):
        await ledger.enough.wait()
    doomed = [w for w in workers if w.name in DOOMED]
    for worker in doomed:
        worker.doomed.set()
    async with asyncio.timeout(60):
        for worker in doomed:
            await worker.holds.wait()
    for worker in doomed:  # its connections drop, nothing settled: as SIGKILL leaves it
        running[worker.name].cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running[worker.name]
        ledger.killed_held.update(worker.holding)

    through_a = {
        lease_instance(d.lease)
        for deliveries in ledger.seen.values()
        for d in deliveries
        if d.worker.split("-")[-1].startswith("a")
    }
    assert len(through_a) == 2, "both processes of A leased tasks"
    pids = await asyncio.to_thread(_owner_pids, through_a)
    assert sorted(pids.values()) == a.workers(), pids
    live = [w for w in workers if w not in doomed]
    async with asyncio.timeout(60):
        while True:  # the process to kill owns leases that workers hold now
            held = Counter(lease_instance(lease) for w in live for lease in w.holding)
            busier = max(through_a, key=lambda i: held[i])
            if held[busier] >= 2:
                break
            await asyncio.sleep(0.01)
    os.kill(pids[busier], signal.SIGKILL)
    ledger.killed_instance = busier
    async with asyncio.timeout(60):  # its control queue goes with its connection
        while control_queue(busier) in await asyncio.to_thread(_control_queues):
            await asyncio.sleep(0.2)


def _owner_pids(instances: set[bytes]) -> dict[bytes, int]:
    """The process of each instance: the one whose AMQP connection consumes its control queue
    (the gateway names its connection with its pid)."""
    channels = dict(rabbitmqctl_table("list_consumers", "queue_name", "channel_pid"))
    connections = {
        channel: name.rsplit(" (", 1)[0]
        for channel, name in rabbitmqctl_table("list_channels", "pid", "name")
    }
    pids = {}
    for name, properties in rabbitmqctl_table("list_connections", "name", "client_properties"):
        named = re.search(r'"connection_name","hopcast [^"]* pid (\d+)', properties)
        if named:
            pids[name] = int(named[1])
    return {i: pids[connections[channels[control_queue(i)]]] for i in instances}


def _control_queues() -> set[str]:
    return {row[0] for row in rabbitmqctl_table("list_queues", "name")}


async def _messages(queue: str) -> int:
    """RabbitMQ's count of the queue's messages, ready and unacknowledged."""
    rows = await asyncio.to_thread(rabbitmqctl_table, "list_queues", "name", "messages")
    counts = {row[0]: int(row[1]) for row in rows}
    return counts[f"hopcast.q.{queue}"] + counts[f"hopcast.q.{queue}.dead"]


async def _finish(queue: str, ids: set[str], ledger: Ledger) -> None:
    """Wait until every task is acked or answered (`Ledger.done`) and RabbitMQ holds none."""
    try:
        async with asyncio.timeout(120):
            while not ledger.done(ids) or await _messages(queue):
                await asyncio.sleep(0.2)
    except TimeoutError:
        missing = {i for i in ids if not ledger.done({i})}
        shown = "\n\n".join(_show(ledger, ledger.seen[i]) for i in sorted(missing)[:5])
        left = await _messages(queue)
        raise AssertionError(
            f"{len(missing)} tasks not done, {left} in RabbitMQ:\n{shown}"
        ) from None


async def _check_empty(queue: str, url: str) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
        left = await http.post(f"/queues/{queue}/receive", params={"wait": 1})
        assert left.json() == {"tasks": []}
        assert (await http.get(f"/queues/{queue}/dead")).json() == {"dead": []}


def _check(ledger: Ledger, ids: set[str], workers: list[Worker]) -> None:
    """No task acked twice; the ones done again only for a killed worker or process, or an
    expired lease. (None lost: RabbitMQ holds none, and every task was acked or answered.)"""
    assert ledger.done(ids), "a task was never acked"
    assert set(ledger.seen) == ids
    twice = [i for i, n in ledger.acked.items() if n > 1]
    assert not twice, f"tasks acked twice: {twice}"
    assert ledger.killed_held, "the killed workers held nothing: the test tested nothing"
    unseen, why = [], Counter[str]()
    for task_id, seen in ledger.seen.items():
        # in the order RabbitMQ delivered them: a worker may read a task late, from what
        # its stream had buffered before the process that leased it was killed
        deliveries = sorted(seen, key=lambda d: (d.deliveries, d.at))
        if deliveries[0].deliveries > 1:  # its first lease never reached a worker
            unseen.append(task_id)
        for earlier, later in pairwise(deliveries):
            assert later.redelivered and later.deliveries > earlier.deliveries, _show(
                ledger, deliveries
            )
            reason = _why_again(ledger, earlier, later)
            assert reason, "done again for no reason:\n" + _show(ledger, deliveries)
            why[reason] += 1
        for delivery in deliveries:
            assert delivery.redelivered == (delivery.deliveries > 1), delivery
    # a task unseen at first was in a stream's buffer or an answer when its worker or
    # process died: at most what those held at once
    in_flight = sum(
        PREFETCH if "stream" in w.name else PULL_MAX
        for w in workers
        if w.name in DOOMED or w.name.split("-")[-1].startswith("a")
    )
    assert len(unseen) <= in_flight, unseen
    assert why["leased through the killed process"], "the killed process held nothing"
    for delivery, at in ledger.lost:  # never a lease the gateway should have had
        assert lease_instance(delivery.lease) == ledger.killed_instance or (
            delivery.expires <= at + SKEW
        ), _show(ledger, ledger.seen[delivery.id])
    print(  # the figures of a run, for `pytest -s`
        f"\nchaos: {TASKS} tasks, {sum(why.values())} done again {dict(why)}, "
        f"{len(unseen)} whose first lease no worker saw, "
        f"{len(ids - ledger.acked.keys())} acks answered lost but done"
    )


def _why_again(ledger: Ledger, earlier: Delivery, later: Delivery) -> str:
    """Why a task came again after ``earlier``: the empty string when nothing explains it."""
    if earlier.lease in ledger.killed_held:
        return "held by a killed worker"
    if lease_instance(earlier.lease) == ledger.killed_instance:
        return "leased through the killed process"
    if earlier.expires <= later.at + SKEW:
        return "its lease expired"
    return ""


def _show(ledger: Ledger, deliveries: list[Delivery]) -> str:
    """The deliveries of a task, a line each, for a failure's message."""
    return (
        "\n".join(
            f"{d.worker} at {d.at:.3f} deliveries={d.deliveries} redelivered={d.redelivered}"
            f" owner={lease_instance(d.lease).hex()} held-by-killed={d.lease in ledger.killed_held}"
            f" acked={ledger.acked[d.id]} unsure={d.id in ledger.unsure}"
            for d in deliveries
        )
        + f"\nkilled process: {ledger.killed_instance.hex()}"
    )
