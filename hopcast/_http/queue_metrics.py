"""The work queues' figures in a worker's report, combined over workers, and exposed.

A worker reports, per queue, its counters (added to its predecessor's, as the
hub's are) and the leases it holds now. Combined, counters are summed over every
worker that ever reported and leases over the live ones; the depth is asked of
the broker by the worker a scrape lands on (every worker would give the same).

>>> mail = combine_queues([{"mail": {"enqueued": 2, "leased": 1}}, {"mail": {"enqueued": 3}}],
...                       live=[True, False])["mail"]
>>> mail["enqueued"], mail["leased"]
(5, 1)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from hopcast._queue.queues import WorkQueues

QueueCounts = dict[str, dict[str, int]]
"""Per queue name, its figures by name (`QUEUE_COUNTERS` and ``leased``)."""

QUEUE_COUNTERS = {
    "enqueued": "Tasks enqueued through this gateway",
    "redeliveries": "Tasks leased again after an earlier delivery",
    "lease_expiries": "Leases that ran out before the task was settled",
    "dead_lettered": "Tasks this gateway rejected or gave back past the delivery limit",
    "settlements_routed": "Leases settled or extended through the process holding them",
}
OUTCOMES = ("ack", "nack", "reject")
_FIELDS = {*QUEUE_COUNTERS, *(f"settled_{outcome}" for outcome in OUTCOMES), "leased"}


def queue_counts(queues: WorkQueues | None, base: QueueCounts | None = None) -> QueueCounts:
    """Each queue's figures now, its counters added to ``base``'s (a former worker's)."""
    base = base or {}
    counts: QueueCounts = {}
    for queue in queues or ():
        before = base.get(queue.name, {})
        now = {name: before.get(name, 0) + getattr(queue.stats, name) for name in QUEUE_COUNTERS}
        for outcome in OUTCOMES:
            name = f"settled_{outcome}"
            now[name] = before.get(name, 0) + queue.stats.settled[outcome]
        now["leased"] = queue.leased
        counts[queue.name] = now
    return counts


def retired_queues(counts: QueueCounts) -> QueueCounts:
    """The counters of a worker that is gone: it holds no lease any more."""
    return {name: {**figures, "leased": 0} for name, figures in counts.items()}


def check_queue_counts(data: object) -> QueueCounts:
    """``data`` read from a report, as `QueueCounts`; ValueError for anything else."""
    if not isinstance(data, dict):
        raise ValueError("queues: not an object")
    for name, figures in data.items():
        if not isinstance(figures, dict) or not figures.keys() <= _FIELDS:
            raise ValueError(f"queues: {name!r}")
        if any(type(value) is not int for value in figures.values()):
            raise ValueError(f"queues: {name!r}")
    return data


def combine_queues(reports: Sequence[QueueCounts], live: Sequence[bool]) -> QueueCounts:
    """Counters summed over every report; leases over the reports of live workers."""
    combined: QueueCounts = {}
    for counts, alive in zip(reports, live, strict=True):
        for name, figures in counts.items():
            total = combined.setdefault(name, dict.fromkeys(sorted(_FIELDS), 0))
            for field, value in figures.items():
                if field != "leased" or alive:
                    total[field] += value
    return combined


class QueueCollector(Collector):
    """The Prometheus families of the work queues, labelled by queue."""

    def __init__(self, counts: QueueCounts, depths: Mapping[str, int | None]) -> None:
        self._counts = counts
        self._depths = depths

    def collect(self) -> Iterator[Metric]:
        # CounterMetricFamily appends `_total` to each name itself.
        for field, text in QUEUE_COUNTERS.items():
            family = CounterMetricFamily(f"hopcast_queue_{field}", text, labels=["queue"])
            for name, figures in self._counts.items():
                family.add_metric([name], figures.get(field, 0))
            yield family
        settled = CounterMetricFamily(
            "hopcast_queue_settled", "Leases settled, by outcome", labels=["queue", "outcome"]
        )
        for name, figures in self._counts.items():
            for outcome in OUTCOMES:
                settled.add_metric([name, outcome], figures.get(f"settled_{outcome}", 0))
        yield settled
        depth = GaugeMetricFamily(
            "hopcast_queue_depth", "Tasks ready in the queue", labels=["queue"]
        )
        for name, ready in self._depths.items():
            if ready is not None:
                depth.add_metric([name], ready)
        yield depth
        leased = GaugeMetricFamily(
            "hopcast_queue_leased", "Tasks leased now, over every worker", labels=["queue"]
        )
        for name, figures in self._counts.items():
            leased.add_metric([name], figures.get("leased", 0))
        yield leased


async def queue_depths(queues: WorkQueues | None) -> dict[str, int | None]:
    """Each queue's ready tasks, asked of the broker (None where it cannot say)."""
    return {queue.name: await queue.depth() for queue in queues or ()}
