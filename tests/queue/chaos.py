"""The chaos test's workers (`Worker`), four kinds of them, and the `Ledger` of what they saw.

Each worker takes tasks its own way (a stream or pulls, through `hopcast.Client`
or raw HTTP), writes every delivery and every ack's result in the ledger, and
is killed on demand: once it holds tasks it stops there, to be cancelled with
its connections, nothing settled (as SIGKILL leaves a worker).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from hopcast import Client, LeaseLost, QueueRefused, Task
from tests.support.queues import TaskReader, settle

KILL_AFTER = 3_000
"""Acks before the three workers and the gateway process are killed."""
LEASE = 30.0
"""Long enough that no lease runs out in a normal run (the Python client extends its own)."""
PULL_LEASE = 15.0
"""The raw pull workers' lease: what a killed one held comes again once it runs out."""
PREFETCH = 4
PULL_MAX = 10
TIMEOUT = httpx.Timeout(30.0)
BROKEN = (httpx.TransportError, StopAsyncIteration)
"""What a request or a stream through a process killed under it ends with."""


@dataclass(frozen=True)
class Delivery:
    """One task as a worker got it."""

    id: str
    lease: str
    deliveries: int
    redelivered: bool
    worker: str
    at: float
    """When it came (wall clock, as the gateway's expiries)."""
    task: Task | None
    """The client's task (its ``expires`` moves as the client extends it), for Python workers."""
    expiry: float

    @property
    def expires(self) -> float:
        return self.task.expires.timestamp() if self.task is not None else self.expiry


@dataclass
class Ledger:
    """What the workers saw: every delivery, every settlement's result, who was killed."""

    seen: dict[str, list[Delivery]] = field(default_factory=lambda: defaultdict(list))
    acked: Counter[str] = field(default_factory=Counter)
    lost: list[tuple[Delivery, float]] = field(default_factory=list)
    """Leases an ack found lost, and when."""
    unsure: set[str] = field(default_factory=set)
    """Tasks whose ack broke (a process killed under it) or was a 503 (the owner did not
    answer in time) and, tried again, was ``lost``: the owner may have acked it before."""
    killed_held: set[str] = field(default_factory=set)
    """The leases the killed workers held."""
    killed_instance: bytes = b""
    enough: asyncio.Event = field(default_factory=asyncio.Event)
    """KILL_AFTER tasks acked: time for chaos."""

    def took(self, worker: Worker, task: dict[str, Any], client_task: Task | None = None) -> None:
        expiry = datetime.fromisoformat(task["expires"]).timestamp()
        delivery = Delivery(
            task["id"],
            task["lease"],
            task["deliveries"],
            task["redelivered"],
            worker.name,
            time.time(),
            client_task,
            expiry,
        )
        self.seen[delivery.id].append(delivery)
        worker.holding[delivery.lease] = delivery

    def settled(self, worker: Worker, results: dict[str, str], unsure: bool) -> None:
        for lease, result in results.items():
            delivery = worker.holding.pop(lease)
            if result == "ok":
                self.acked[delivery.id] += 1
            elif unsure:
                self.unsure.add(delivery.id)
            else:
                self.lost.append((delivery, time.time()))
        if len(self.acked) >= KILL_AFTER:
            self.enough.set()

    def done(self, ids: set[str]) -> bool:
        """Every task acked, or its ack answered ``lost``: acked already, or it comes again
        (RabbitMQ's count, once none is left, tells which)."""
        return ids <= self.acked.keys() | self.unsure | {d.id for d, _ in self.lost}


@dataclass(eq=False)
class Worker:
    """One of the twenty: its name says how it works and through which gateway."""

    name: str
    url: str
    urls: Sequence[str]
    """Both gateways: some acks go through a connection of their own to either."""
    queue: str
    ledger: Ledger
    holding: dict[str, Delivery] = field(default_factory=dict)
    doomed: asyncio.Event = field(default_factory=asyncio.Event)
    """Set to kill it: it stops once it holds tasks, and is cancelled there."""
    holds: asyncio.Event = field(default_factory=asyncio.Event)
    rng: random.Random = field(default_factory=random.Random)

    async def stop_if_doomed(self) -> None:
        if self.doomed.is_set():
            self.holds.set()
            await asyncio.Event().wait()  # cancelled here, holding what it took

    async def raw_ack(self, http: httpx.AsyncClient, tasks: list[dict[str, Any]]) -> None:
        """Ack through ``http`` or, one time in three, a fresh connection to either gateway;
        tried again when the connection breaks or the owner does not answer."""
        leases = [t["lease"] for t in tasks]
        unsure = False
        while True:
            try:
                if self.rng.random() < 1 / 3:
                    url = self.rng.choice(self.urls)
                    async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as fresh:
                        answer = await settle(fresh, self.queue, "ack", *leases)
                else:
                    answer = await settle(http, self.queue, "ack", *leases)
            except BROKEN:
                unsure = True
                await asyncio.sleep(0.05)
                continue
            if answer.status_code == 503:  # an owner just killed: its queue is not gone yet
                unsure = True
                await asyncio.sleep(0.2)
                continue
            break
        if answer.status_code == 409 and len(leases) == 1:
            results = {leases[0]: "lost"}
        else:
            assert answer.status_code == 200, answer.text
            results = answer.json()["results"]
        self.ledger.settled(self, results, unsure)

    async def client_ack(self, client: Client, tasks: list[Task]) -> None:
        """Ack one task (`Task.ack`) or a batch (`Client.ack`), tried again as `raw_ack`."""
        unsure = False
        while True:
            try:
                if len(tasks) == 1:
                    try:
                        await tasks[0].ack()
                        results = {tasks[0].lease: "ok"}
                    except LeaseLost:
                        results = {tasks[0].lease: "lost"}
                else:
                    results = dict(await client.ack(*tasks))
            except BROKEN:
                unsure = True
                await asyncio.sleep(0.05)
                continue
            except QueueRefused as exc:
                assert exc.status == 503, exc
                unsure = True
                await asyncio.sleep(0.2)
                continue
            break
        self.ledger.settled(self, results, unsure)


async def client_stream(worker: Worker) -> None:
    async with Client(worker.url, retry=0.2) as client:
        async for task in client.tasks(worker.queue, prefetch=PREFETCH, lease=LEASE):
            worker.ledger.took(worker, as_json(task), task)
            await worker.stop_if_doomed()
            await worker.client_ack(client, [task])


async def client_pull(worker: Worker) -> None:
    async with Client(worker.url, retry=0.2) as client:
        while True:
            try:
                tasks = await client.receive(worker.queue, max=PULL_MAX, wait=1, lease=LEASE)
            except BROKEN:
                await asyncio.sleep(0.05)
                continue
            for task in tasks:
                worker.ledger.took(worker, as_json(task), task)
            if tasks:
                await worker.stop_if_doomed()
                # in two halves: a batch, and the rest one by one
                half = len(tasks) // 2
                if half:
                    await worker.client_ack(client, tasks[:half])
                for task in tasks[half:]:
                    await worker.client_ack(client, [task])


async def raw_stream(worker: Worker) -> None:
    async with httpx.AsyncClient(base_url=worker.url, timeout=TIMEOUT) as http:
        while True:
            params = {"prefetch": PREFETCH, "lease": LEASE}
            try:
                async with http.stream("GET", f"/queues/{worker.queue}", params=params) as response:
                    if response.status_code == 503:  # a process just started: not ready yet
                        await asyncio.sleep(0.2)
                        continue
                    assert response.status_code == 200, response.status_code
                    stream = TaskReader(response)
                    while True:
                        task = await stream.next()
                        worker.ledger.took(worker, task)
                        await worker.stop_if_doomed()
                        await worker.raw_ack(http, [task])
            except BROKEN:  # the process serving the stream was killed: a new connection
                await asyncio.sleep(0.05)


async def raw_pull(worker: Worker) -> None:
    """Each pull on a connection of its own, so that every process of a gateway leases some."""
    async with httpx.AsyncClient(base_url=worker.url, timeout=TIMEOUT) as http:
        while True:
            params = {"max": PULL_MAX, "wait": 1, "lease": PULL_LEASE}
            try:
                async with httpx.AsyncClient(base_url=worker.url, timeout=TIMEOUT) as fresh:
                    answer = await fresh.post(f"/queues/{worker.queue}/receive", params=params)
            except BROKEN:
                await asyncio.sleep(0.05)
                continue
            if answer.status_code == 503:  # a process just started: not ready yet
                await asyncio.sleep(0.2)
                continue
            assert answer.status_code == 200, answer.text
            tasks = answer.json()["tasks"]
            for task in tasks:
                worker.ledger.took(worker, task)
            if tasks:
                await worker.stop_if_doomed()
                await worker.raw_ack(http, tasks)


KINDS: dict[str, Callable[[Worker], Coroutine[Any, Any, None]]] = {
    "client-stream": client_stream,
    "client-pull": client_pull,
    "raw-stream": raw_stream,
    "raw-pull": raw_pull,
}
DOOMED = ("client-stream-a0", "raw-stream-b3", "raw-pull-a1")
"""The workers killed mid-run (kind, gateway, number)."""


def as_json(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "lease": task.lease,
        "deliveries": task.deliveries,
        "redelivered": task.redelivered,
        "expires": task.expires.isoformat(),
    }
