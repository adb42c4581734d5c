"""The queues scenario: a row for every way of taking tasks, beside aio-pika's rate."""

from __future__ import annotations

import secrets

import pytest

from bench.broker import Broker
from bench.queue_report import queue_rows
from bench.queues import VARIANTS, LeaseMemory, QueueResults, QueueStep, queue_scenario
from bench.scenarios import Run
from bench.table import render_table
from bench.taskclient import AIO_PIKA
from tests.support.rabbitmq import AMQP_URL


def step(how: str, prefetch: int, rate: float, **more: object) -> QueueStep:
    figures: dict[str, object] = {"expected": 100, "tasks": 100, "tasks_per_s": rate, **more}
    return QueueStep(how, prefetch, **figures)  # type: ignore[arg-type]


def test_each_gateway_row_stands_beside_the_median_of_aio_pika_at_its_prefetch() -> None:
    results = QueueResults(100, 4)
    results.steps = [
        step(AIO_PIKA, 50, 1000.0),
        step("stream", 50, 600.0, batched=True, gateway_processes=1),
        step(AIO_PIKA, 50, 3000.0),
        step("pull", 50, 500.0, gateway_processes=1),
        step(AIO_PIKA, 50, 2000.0),
        step(AIO_PIKA, 1, 9.0),  # another prefetch: not in the median
        step("stream", 50, 700.0, batched=True, gateway_processes=2, settled=100, routed=48),
        step(AIO_PIKA, 50, 9.0, tasks=99),  # a drain that came short measures nothing
    ]
    results.memory = LeaseMemory(10_000, leased=10_000, delta_mb=3.2)
    rows = {row.measure: row for row in queue_rows(results)}
    batched = rows["queues P=50: stream, batched acks (tasks/s)"]
    assert batched.values == {"hopcast": 600.0}
    assert batched.compared == ("aio-pika, ack per message", 2000)
    assert "queues P=50: pull, acks one by one (tasks/s)" in rows
    routed = rows[
        "queues P=50: stream, batched acks, --workers 2: settlements routed to another process"
    ]
    assert routed.values == {"hopcast": 48.0}
    lease = rows["queues: RSS of 10,000 tasks leased at once, over idle"]
    assert (lease.values, lease.compared) == ({"hopcast": 3.2}, ("target", 5.0))
    assert "x0.30" in render_table(list(rows.values()))  # 600 against 2,000
    assert [f.split(":")[0] for f in results.failures()] == [
        "queues, aio-pika, ack per message at prefetch 50"
    ]


@pytest.mark.slow
def test_a_small_run_drains_the_queue_every_way_and_reads_both_workers_settlements(
    rabbitmq: None,
) -> None:
    """What the smoke run does, smaller: every row drained, both processes' acks counted."""
    run = Run(Broker(AMQP_URL), f"test.{secrets.token_hex(3)}", smoke=True)
    try:
        results = queue_scenario(run, 40, 2, (1, 50), lease_tasks=100)
    finally:
        run.broker.cleanup()
    assert results.failures() == []
    ways = {(s.how, s.prefetch, s.batched, s.gateway_processes) for s in results.steps}
    for prefetch in (1, 50):
        assert (AIO_PIKA, prefetch, False, 0) in ways
        assert {(how, prefetch, batched, 1) for how, batched in VARIANTS} <= ways
    two = [s for s in results.steps if s.gateway_processes == 2]
    assert len(two) == 2
    assert all(s.settled == 40 and s.routed is not None for s in two)
    assert results.memory is not None and results.memory.leased == 100
