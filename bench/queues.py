"""The ``queues`` scenario: work queues over HTTP against a plain aio-pika consumer.

For each prefetch P, a fresh quorum queue (declared by the gateway with
``--queue``) is filled with ``tasks`` tasks of 100 bytes and drained, in turn,
by the aio-pika consumer and by HTTP workers through the gateway (stream and
pull, single and batched acks, `bench.taskclient`): aio-pika before each
gateway row and after the last, since the machine is noisy; a gateway row is
compared with the median of its prefetch's aio-pika rows. Both sides run as
many consumers, each with prefetch P. Then the same batched rows through
``--workers 2``, where an ack lands on either process: the share of
settlements routed to the other process is read from ``/metrics`` (which
answers for both). Last, the RSS one process takes for ``lease_tasks`` tasks leased
at once, over its RSS idle.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from dataclasses import dataclass, field

import aio_pika

from bench.publisher import make_body
from bench.scenarios import Run
from bench.targets import Hopcast
from bench.taskclient import AIO_PIKA, PULL, STREAM, Drain, DrainPlan, HttpConnection, drain

VARIANTS = ((STREAM, False), (STREAM, True), (PULL, False), (PULL, True))
"""What the gateway rows are: (how the workers take tasks, whether they batch acks)."""
W2_PREFETCH = 50
"""The prefetch of the ``--workers 2`` rows."""
PRELOAD_BATCH = 500
SCRAPES = 40
"""Scrapes of a ``--workers 2`` gateway's metrics after a row, at most, until two agree."""
SCRAPE_PAUSE = 0.3
"""Seconds between two scrapes: more than a worker's report interval."""
_ROUTED = 'hopcast_queue_settlements_routed_total{queue="%s"}'
_ACKED = 'hopcast_queue_settled_total{outcome="ack",queue="%s"}'


@dataclass
class QueueStep:
    """One drain of the queue: by whom, how fast, at what CPU."""

    how: str
    prefetch: int
    batched: bool = False
    gateway_processes: int = 0
    """0 for the aio-pika consumer."""
    consumers: int = 0
    expected: int = 0
    tasks: int = 0
    seconds: float = 0.0
    tasks_per_s: float = 0.0
    gateway_cpu_us_per_task: float | None = None
    client_cpu_us_per_task: float | None = None
    client_cpu_share: float = 0.0
    """The client process's CPU seconds over the drain's seconds (1.0: a core saturated)."""
    requests_per_task: float | None = None
    settled: int | None = None
    """Acks the gateway's processes counted (``--workers 2`` rows)."""
    routed: int | None = None
    """Of those, the ones that reached a process other than the lease's owner."""
    load_before: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        if self.how == AIO_PIKA:
            return "aio-pika, ack per message"
        acks = "batched acks" if self.batched else "acks one by one"
        workers = ", --workers 2" if self.gateway_processes > 1 else ""
        return f"{self.how}, {acks}{workers}"

    @property
    def routed_share(self) -> float | None:
        if self.routed is None or not self.settled:
            return None
        return round(self.routed / self.settled, 3)

    @property
    def clean(self) -> bool:
        return self.tasks >= self.expected > 0 and not self.errors


@dataclass
class LeaseMemory:
    """One process's RSS with no lease, then with ``leased`` tasks leased at once."""

    tasks: int
    leased: int = 0
    rss_idle_mb: float = 0.0
    rss_leased_mb: float = 0.0
    delta_mb: float = 0.0
    bytes_per_lease: float | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class QueueResults:
    tasks: int
    consumers: int
    steps: list[QueueStep] = field(default_factory=list)
    memory: LeaseMemory | None = None

    def baseline(self, prefetch: int) -> float | None:
        """The median rate of the aio-pika rows at ``prefetch``."""
        rates = [
            s.tasks_per_s
            for s in self.steps
            if s.how == AIO_PIKA and s.prefetch == prefetch and s.clean
        ]
        return round(statistics.median(rates)) if rates else None

    def baseline_cpu(self, prefetch: int) -> float | None:
        """The median CPU per task of the aio-pika consumer itself at ``prefetch``."""
        figures = [
            s.client_cpu_us_per_task
            for s in self.steps
            if s.how == AIO_PIKA and s.prefetch == prefetch and s.clean and s.client_cpu_us_per_task
        ]
        return round(statistics.median(figures), 1) if figures else None

    def failures(self) -> list[str]:
        found = [f"queues, {s.label} at prefetch {s.prefetch}: {brief(s)}" for s in self.steps]
        found = [f for f, s in zip(found, self.steps, strict=True) if not s.clean]
        if self.memory is not None and (self.memory.errors or not self.memory.leased):
            found.append(f"queues, lease memory: {self.memory}")
        return found


def brief(step: QueueStep) -> str:
    """One line on a drain, for the run's output."""
    gateway = ""
    if step.gateway_cpu_us_per_task is not None:
        gateway = f", gateway {step.gateway_cpu_us_per_task} us/task"
    routed = "" if step.routed_share is None else f", routed {step.routed}/{step.settled}"
    return (
        f"{step.tasks:,}/{step.expected:,} tasks in {step.seconds:.2f} s: "
        f"{step.tasks_per_s:,.0f}/s{gateway}, client {step.client_cpu_us_per_task} us/task "
        f"({step.client_cpu_share:.0%} of a core){routed}, load {step.load_before}"
        + (f", errors {step.errors[:2]}" if step.errors else "")
    )


async def _preload(url: str, amqp_queue: str, count: int) -> None:
    """``count`` tasks on the queue, each confirmed by RabbitMQ."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        # what an earlier row left (none, unless it failed) would count in this one
        await (await channel.get_queue(amqp_queue, ensure=False)).purge()
        for start in range(0, count, PRELOAD_BATCH):
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(make_body(n), message_id=f"t{n}", type="bench"),
                        routing_key=amqp_queue,
                    )
                    for n in range(start, min(count, start + PRELOAD_BATCH))
                )
            )
    finally:
        await connection.close()


def preload(run: Run, name: str, count: int) -> None:
    asyncio.run(_preload(run.broker.url, f"hopcast.q.{name}", count))


def queue_gateway(run: Run, label: str, name: str, workers: int = 1) -> Hopcast:
    """A gateway serving the work queue ``name`` (deleted with the run's other names)."""
    run.broker.queues.update({f"hopcast.q.{name}", f"hopcast.q.{name}.dead"})
    return Hopcast(label, run.broker, run.run_id, workers=workers, extra=("--queue", name))


def drain_step(
    run: Run, gateway: Hopcast, name: str, results: QueueResults, step: QueueStep
) -> QueueStep:
    """Fill the queue, drain it as ``step`` says, and fill in its figures."""
    preload(run, name, results.tasks)
    step.expected, step.consumers = results.tasks, results.consumers
    plan = DrainPlan(
        step.how,
        results.tasks,
        step.prefetch,
        results.consumers,
        step.batched,
        port=gateway.port,
        queue=f"hopcast.q.{name}" if step.how == AIO_PIKA else name,
        amqp_url=run.broker.url,
        limit=60 if run.smoke else 600,
    )
    time.sleep(0.5)
    step.load_before = round(os.getloadavg()[0], 2)
    usage: list[float] = []
    before_metrics = _acks_and_routed(gateway, name) if step.gateway_processes > 1 else None
    out: Drain = drain(plan, on_start=lambda: usage.append(gateway.usage().cpu))
    gateway_cpu = gateway.usage().cpu - usage[0]
    step.tasks, step.seconds = out.tasks, round(out.seconds, 3)
    step.tasks_per_s = round(out.rate)
    step.errors.extend(out.errors)
    if out.tasks:
        step.client_cpu_us_per_task = round(out.client_cpu / out.tasks * 1e6, 1)
        if step.how != AIO_PIKA:
            step.gateway_cpu_us_per_task = round(gateway_cpu / out.tasks * 1e6, 1)
            step.requests_per_task = round(out.requests / out.tasks, 3)
    if out.seconds:
        step.client_cpu_share = round(out.client_cpu / out.seconds, 3)
    if before_metrics is not None:
        after = _acks_and_routed(gateway, name)
        if after is None:
            step.errors.append("the gateway's /metrics did not settle")
        else:
            step.settled = int(after[0] - before_metrics[0])
            step.routed = int(after[1] - before_metrics[1])
    if not gateway.alive():
        step.errors.append(f"the gateway died: {gateway.log_tail(5)}")
    results.steps.append(step)
    print(f"  P={step.prefetch} {step.label}: {brief(step)}", flush=True)
    return step


def _acks_and_routed(gateway: Hopcast, name: str) -> tuple[float, float] | None:
    """Acks and routed settlements of a ``--workers 2`` gateway, all its processes.

    Any worker's scrape answers for all of them, from the others' reports (at most a
    quarter of a second old), so the scrapes go on until two in a row agree.
    """
    last: tuple[float, float] | None = None
    for _ in range(SCRAPES):
        metrics = gateway.metrics()
        now = (metrics.get(_ACKED % name, 0.0), metrics.get(_ROUTED % name, 0.0))
        if now == last:
            return now
        last = now
        time.sleep(SCRAPE_PAUSE)
    return None


def drain_rounds(run: Run, results: QueueResults, prefetches: tuple[int, ...]) -> None:
    """Every variant at every prefetch through one process, aio-pika between them;
    then the batched ones at `W2_PREFETCH` through ``--workers 2``."""
    name = f"bench.{run.run_id}.tasks"
    with queue_gateway(run, "hopcast-queues", name) as gateway:
        assert isinstance(gateway, Hopcast)
        for prefetch in prefetches:
            for how, batched in VARIANTS:
                drain_step(run, gateway, name, results, QueueStep(AIO_PIKA, prefetch))
                drain_step(run, gateway, name, results, QueueStep(how, prefetch, batched, 1))
            drain_step(run, gateway, name, results, QueueStep(AIO_PIKA, prefetch))
    w2_name = f"bench.{run.run_id}.tasks-w2"
    with queue_gateway(run, "hopcast-queues-w2", w2_name, workers=2) as gateway:
        assert isinstance(gateway, Hopcast)
        for how, batched in VARIANTS:
            if batched:
                step = QueueStep(how, W2_PREFETCH, batched, 2)
                drain_step(run, gateway, w2_name, results, step)


async def _lease_all(port: int, name: str, count: int) -> int:
    """Pull ``count`` tasks, 100 at a time, and settle none; the number leased."""
    connection = await HttpConnection.open("127.0.0.1", port)
    leased = 0
    try:
        while leased < count:
            most = min(100, count - leased)
            status, body = await connection.call(
                "POST", f"/queues/{name}/receive?max={most}&wait=2&lease=600"
            )
            tasks = json.loads(body)["tasks"] if status == 200 else []
            if not tasks:
                break
            leased += len(tasks)
    finally:
        connection.close()
    return leased


async def _warm_up(port: int, name: str, count: int) -> None:
    """Lease ``count`` tasks and ack them: the code paths loaded, the buffers grown."""
    connection = await HttpConnection.open("127.0.0.1", port)
    try:
        taken = 0
        while taken < count:
            _, body = await connection.call("POST", f"/queues/{name}/receive?max=100&wait=2")
            leases = [t["lease"] for t in json.loads(body)["tasks"]]
            if not leases:
                break
            await connection.call(
                "POST", f"/queues/{name}/ack", json.dumps({"leases": leases}).encode()
            )
            taken += len(leases)
    finally:
        connection.close()


def lease_memory(run: Run, count: int) -> LeaseMemory:
    """One process's RSS idle (warmed up), then with ``count`` tasks leased at once."""
    out = LeaseMemory(count)
    name = f"bench.{run.run_id}.leases"
    warm = min(1000, count)
    with queue_gateway(run, "hopcast-leases", name) as gateway:
        assert isinstance(gateway, Hopcast)
        preload(run, name, count + warm)
        asyncio.run(_warm_up(gateway.port, name, warm))
        time.sleep(1.0)
        idle = gateway.usage().rss
        out.leased = asyncio.run(_lease_all(gateway.port, name, count))
        time.sleep(1.0)
        leased = gateway.usage().rss
        held = gateway.metrics().get(f'hopcast_queue_leased{{queue="{name}"}}', 0.0)
        if held != out.leased or out.leased < count:
            out.errors.append(f"{out.leased} tasks leased, the gateway holds {held:.0f}")
    out.rss_idle_mb = round(idle / 2**20, 2)
    out.rss_leased_mb = round(leased / 2**20, 2)
    out.delta_mb = round((leased - idle) / 2**20, 2)
    if out.leased:
        out.bytes_per_lease = round((leased - idle) / out.leased)
    print(
        f"  {out.leased:,} leases: RSS {out.rss_idle_mb} MB idle, {out.rss_leased_mb} MB "
        f"leased: +{out.delta_mb} MB ({out.bytes_per_lease} bytes per lease)",
        flush=True,
    )
    return out


def queue_scenario(
    run: Run, tasks: int, consumers: int, prefetches: tuple[int, ...], lease_tasks: int
) -> QueueResults:
    results = QueueResults(tasks, consumers)
    drain_rounds(run, results, prefetches)
    results.memory = lease_memory(run, lease_tasks)
    return results
