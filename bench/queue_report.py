"""The ``queues`` scenario's rows in the benchmark's table (`bench.table`).

Each gateway row's tasks/s stands beside the median of the aio-pika rows at the
same prefetch (``x``: the gateway's rate over aio-pika's; the issue's target is
0.5 or more with batched acks); its CPU per task beside the aio-pika consumer's
own; the ``--workers 2`` rows add the share of settlements routed to the other
process; the lease memory stands beside its 5 MB target.
"""

from __future__ import annotations

from bench.queues import QueueResults
from bench.table import HIGHER, LOWER, SAME, Row
from bench.targets import HOPCAST
from bench.taskclient import AIO_PIKA

AIO_PIKA_LABEL = "aio-pika, ack per message"
LEASE_RSS_TARGET_MB = 5.0


def queue_rows(results: QueueResults | None) -> list[Row]:
    if results is None:
        return []
    rows = []
    for step in results.steps:
        if step.how == AIO_PIKA:
            continue
        label = f"queues P={step.prefetch}: {step.label}"
        rows.append(
            Row(
                f"{label} (tasks/s)",
                HIGHER,
                {HOPCAST: step.tasks_per_s if step.clean else None},
                (AIO_PIKA_LABEL, results.baseline(step.prefetch)),
            )
        )
        rows.append(
            Row(
                f"{label}: CPU per task",
                LOWER,
                {HOPCAST: step.gateway_cpu_us_per_task},
                (f"{AIO_PIKA_LABEL}, its own", results.baseline_cpu(step.prefetch)),
                "us",
            )
        )
        if step.routed_share is not None:
            rows.append(
                Row(
                    f"{label}: settlements routed to another process",
                    SAME,
                    {HOPCAST: round(step.routed_share * 100, 1)},
                    unit="%",
                )
            )
    memory = results.memory
    if memory is not None:
        rows.append(
            Row(
                f"queues: RSS of {memory.leased:,} tasks leased at once, over idle",
                LOWER,
                {HOPCAST: memory.delta_mb},
                ("target", LEASE_RSS_TARGET_MB),
                "MB",
            )
        )
    return rows
