"""The loads of a benchmark run: the full ones, and the tiny ones of ``--smoke``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sizes:
    """The loads of a run: the issue's figures, or tiny ones for the smoke run."""

    subscribers: int
    topics: int
    rate: float
    seconds: float
    ladder: tuple[float, ...]
    """Saturation: deliveries/s offered, step by step."""
    step_seconds: float
    scale: int
    scale_w2: int
    scale_idle: float
    broadcasts: int
    backlog_head: int
    backlog_behind: int
    profile_seconds: float
    compare_loads: tuple[float, ...]
    """Workers: the deliveries/s offered in turn to one process and to two workers."""
    repeats: int
    """Workers: times each load is offered to each."""
    per_id: int
    """Per-id: clients, each on a topic of its own."""
    per_id_rate: float
    """Per-id: events/s, spread evenly over the clients' topics."""
    cross_check_at: float
    """Saturation: the step (deliveries/s offered) the Node client and a bare stream
    consumer measure too."""
    queue_tasks: int
    """Queues: tasks each drain takes from the queue."""
    queue_consumers: int
    """Queues: consumers on each side (aio-pika consumers, HTTP workers)."""
    queue_prefetches: tuple[int, ...]
    """Queues: the prefetch of each consumer, row by row."""
    lease_tasks: int
    """Queues: tasks leased at once in one process, for its RSS."""


FULL = Sizes(
    subscribers=1000,
    topics=10,
    rate=1000,
    seconds=15,
    ladder=(
        10_000,
        20_000,
        30_000,
        40_000,
        50_000,
        60_000,
        75_000,
        100_000,
        125_000,
        150_000,
        175_000,
        200_000,
        250_000,
        300_000,
        350_000,
        400_000,
        500_000,
        600_000,
        700_000,
        800_000,
        1_000_000,
        1_200_000,
        1_400_000,
        1_600_000,
        1_800_000,
        2_000_000,
    ),
    step_seconds=6,
    scale=15_000,
    scale_w2=30_000,
    scale_idle=5,
    broadcasts=5,
    backlog_head=10_000,
    backlog_behind=100_000,
    profile_seconds=10,
    compare_loads=(100_000, 200_000, 300_000, 400_000),
    repeats=3,
    per_id=1000,
    per_id_rate=3000,
    cross_check_at=20_000,
    queue_tasks=10_000,
    queue_consumers=4,
    queue_prefetches=(1, 50),
    lease_tasks=10_000,
)
SMOKE = Sizes(
    subscribers=20,
    topics=2,
    rate=50,
    seconds=2,
    ladder=(500, 1000),
    step_seconds=1,
    scale=200,
    scale_w2=400,
    scale_idle=0.5,
    broadcasts=2,
    backlog_head=300,
    backlog_behind=2000,
    profile_seconds=2,
    compare_loads=(1000,),
    repeats=1,
    per_id=20,
    per_id_rate=60,
    cross_check_at=500,
    queue_tasks=200,
    queue_consumers=4,
    queue_prefetches=(1, 50),
    lease_tasks=500,
)
