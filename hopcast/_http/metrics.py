"""Prometheus metrics for the whole gateway, whichever worker a scrape lands on.

Each process reads its hub's counters when asked (nothing per delivery). With
``--workers N`` each worker also keeps its figures in a file of a folder the
supervisor made (`Reports`), rewritten every quarter of a second and at every
scrape, and the worker a scrape lands on answers for all of them (`combine`).
Why the figures combine as they do is in ``docs/architecture.md`` (Processes).

>>> combine([Report(events=3, pid=1, ready=True, position=9), Report(events=2)]).events
5
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hopcast._http.queue_metrics import (
    QueueCollector,
    QueueCounts,
    check_queue_counts,
    combine_queues,
    queue_counts,
    retired_queues,
)

if TYPE_CHECKING:
    from hopcast._hub.hub import Hub
    from hopcast._queue.queues import WorkQueues

log = logging.getLogger("hopcast.http")  # named by layer: module paths are internal

REPORT_EVERY = 0.25
"""Seconds between a worker's reports; a scrape also makes the worker it lands on report."""


@dataclass(frozen=True, slots=True)
class Report:
    """One worker's figures. Its counters only grow, across restarts of the worker too;
    its gauges count only while ``pid`` names a live worker."""

    events: int = 0
    deliveries: int = 0
    slow_disconnects: int = 0
    stream_reconnects: int = 0
    catchup_readers_started: int = 0
    refused_connections: int = 0
    worker_restarts: int = 0
    pid: int | None = None
    ready: bool = False
    subscribers: int = 0
    catchup_readers: int = 0
    position: int = -1
    queues: QueueCounts = field(default_factory=dict)
    """The work queues' figures (`queue_counts`)."""

    @classmethod
    def of(cls, hub: Hub, base: Report | None = None, queues: WorkQueues | None = None) -> Report:
        """The figures now (the hub's and the work queues'), counters added to ``base``'s
        (a former worker's)."""
        base = base or Report()
        stats = hub.stats
        return cls(
            events=base.events + stats.events,
            deliveries=base.deliveries + stats.deliveries,
            slow_disconnects=base.slow_disconnects + stats.slow_disconnects,
            stream_reconnects=base.stream_reconnects + stats.reconnects,
            catchup_readers_started=base.catchup_readers_started + hub.catchups.started,
            refused_connections=base.refused_connections + stats.refused_connections,
            worker_restarts=base.worker_restarts,
            pid=os.getpid(),
            ready=hub.ready,
            subscribers=hub.subscribers,
            catchup_readers=hub.catchups.running,
            position=hub.position,
            queues=queue_counts(queues, base.queues),
        )

    @classmethod
    def loads(cls, text: bytes) -> Report:
        """A report written by `Reports.write`; ValueError for anything else."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.keys() != {*_TYPES, "queues"}:
            raise ValueError("not a worker's report")
        data["queues"] = check_queue_counts(data["queues"])
        for name, value in data.items():
            if name != "queues" and type(value) not in _TYPES[name]:
                raise ValueError(f"{name}: {value!r}")
        return cls(**data)

    def retired(self) -> Report:
        """Its counters, one more restart, and no gauges: the worker is gone."""
        counts = {name: getattr(self, name) for name in COUNTERS}
        counts["worker_restarts"] += 1
        return Report(**counts, queues=retired_queues(self.queues))


_TYPES: dict[str, tuple[type, ...]] = {
    f.name: (int,) for f in dataclasses.fields(Report) if f.name != "queues"
}
_TYPES.update(ready=(bool,), pid=(int, type(None)))
"""What each field of a report's JSON may hold (a bool is not an int here)."""
COUNTERS = (
    "events",
    "deliveries",
    "slow_disconnects",
    "stream_reconnects",
    "catchup_readers_started",
    "refused_connections",
    "worker_restarts",
)


@dataclass(frozen=True, slots=True)
class Totals:
    """The whole gateway's figures: counters summed; gauges over the live workers."""

    events: int
    deliveries: int
    slow_disconnects: int
    stream_reconnects: int
    catchup_readers_started: int
    refused_connections: int
    worker_restarts: int
    workers: int
    ready: bool
    subscribers: int
    catchup_readers: int
    position: int
    queues: QueueCounts


def combine(reports: Sequence[Report | None]) -> Totals:
    """The gateway's figures from each worker's report (None: a worker that has not reported).

    Ready only when every worker is; the stream position is the lowest of the ready
    workers' (every one of them has dispatched up to it), of the live ones when none is.

    >>> combine([Report(pid=1, ready=True, position=7), None]).ready
    False
    """
    counts = {name: sum(getattr(r, name) for r in reports if r) for name in COUNTERS}
    live = [r for r in reports if r is not None and r.pid is not None]
    ready = [r for r in live if r.ready]
    return Totals(
        **counts,
        workers=len(live),
        ready=bool(reports) and len(ready) == len(reports),
        subscribers=sum(r.subscribers for r in live),
        catchup_readers=sum(r.catchup_readers for r in live),
        position=min((r.position for r in ready or live), default=-1),
        queues=combine_queues(
            [r.queues for r in reports if r], [r.pid is not None for r in reports if r]
        ),
    )


class Reports:
    """The workers' reports: one small JSON file each, in a folder the supervisor made.

    A file is replaced whole (written aside, then renamed), so a reader never
    sees half of one, and no process waits for another.
    """

    def __init__(self, folder: Path, workers: int) -> None:
        self.folder = folder
        self.workers = workers

    def _path(self, slot: int) -> Path:
        return self.folder / f"worker-{slot}.json"

    def read(self, slot: int) -> Report | None:
        try:
            return Report.loads(self._path(slot).read_bytes())
        except (OSError, ValueError):
            return None  # not reported yet (or not readable: counted as not reported)

    def read_all(self) -> list[Report | None]:
        return [self.read(slot) for slot in range(self.workers)]

    def write(self, slot: int, report: Report) -> None:
        path = self._path(slot)
        aside = path.with_suffix(".tmp")
        aside.write_text(json.dumps(dataclasses.asdict(report)))
        os.replace(aside, path)

    def retire(self, slot: int) -> None:
        """The worker of ``slot`` died: keep its counters for the next one, drop its gauges."""
        self.write(slot, (self.read(slot) or Report()).retired())


class WorkerTally:
    """One worker's side of `Reports`: it reports, and answers scrapes for every worker.

    A worker started in place of a dead one counts on from its predecessor's last
    report, so no counter of the gateway goes backwards.
    """

    def __init__(self, reports: Reports, slot: int) -> None:
        self.reports = reports
        self.slot = slot
        self._base = reports.read(slot)
        self._failed = False

    def report(self, hub: Hub, queues: WorkQueues | None = None) -> Report:
        """Write this worker's figures now; return them."""
        report = Report.of(hub, self._base, queues)
        try:
            self.reports.write(self.slot, report)
        except OSError as exc:
            if not self._failed:  # said once: the next report tries again anyway
                log.warning("cannot write this worker's metrics: %s", exc)
            self._failed = True
        else:
            self._failed = False
        return report

    def totals(self, hub: Hub, queues: WorkQueues | None = None) -> Totals:
        """The whole gateway's figures, this worker's taken now."""
        own = self.report(hub, queues)
        reports = self.reports.read_all()
        reports[self.slot] = own
        return combine(reports)

    async def keep(self, hub: Hub, queues: WorkQueues | None = None) -> None:
        """Report every `REPORT_EVERY` seconds until cancelled."""
        while True:
            await asyncio.sleep(REPORT_EVERY)
            self.report(hub, queues)


class GatewayCollector(Collector):
    """The Prometheus families of one set of `Totals`."""

    def __init__(self, totals: Totals) -> None:
        self._totals = totals

    def collect(self) -> Iterator[Metric]:
        t = self._totals
        # CounterMetricFamily appends `_total` to each name itself.
        yield CounterMetricFamily(
            "hopcast_events",
            "Events read from the stream and dispatched, summed over workers "
            "(each worker reads every event)",
            value=t.events,
        )
        yield CounterMetricFamily(
            "hopcast_deliveries", "Events queued to subscribers", value=t.deliveries
        )
        yield CounterMetricFamily(
            "hopcast_slow_disconnects",
            "Subscribers cut off as too slow (queue full, or no progress on a full socket)",
            value=t.slow_disconnects,
        )
        yield CounterMetricFamily(
            "hopcast_stream_reconnects",
            "Restarts of the live stream reader, summed over workers",
            value=t.stream_reconnects,
        )
        yield CounterMetricFamily(
            "hopcast_catchup_readers_started",
            "Temporary stream readers opened for resumes beyond the ring",
            value=t.catchup_readers_started,
        )
        yield CounterMetricFamily(
            "hopcast_refused_connections",
            "Subscriptions told to come back later (over a connection limit)",
            value=t.refused_connections,
        )
        yield CounterMetricFamily(
            "hopcast_worker_restarts",
            "Worker processes that died and were started again",
            value=t.worker_restarts,
        )
        yield from self._gauges(t)

    def _gauges(self, t: Totals) -> Iterator[Metric]:
        yield GaugeMetricFamily("hopcast_subscribers", "Open subscriptions", value=t.subscribers)
        yield GaugeMetricFamily(
            "hopcast_catchup_readers", "Temporary stream readers", value=t.catchup_readers
        )
        yield GaugeMetricFamily(
            "hopcast_stream_position",
            "Last stream offset dispatched by every ready worker (the lowest of theirs)",
            value=t.position,
        )
        yield GaugeMetricFamily(
            "hopcast_ready", "1 when every worker is ready", value=1 if t.ready else 0
        )
        yield GaugeMetricFamily("hopcast_workers", "Worker processes serving", value=t.workers)


def render_metrics(
    hub: Hub,
    tally: WorkerTally | None = None,
    queues: WorkQueues | None = None,
    depths: Mapping[str, int | None] | None = None,
) -> bytes:
    """The Prometheus text exposition of the gateway: of every worker with a ``tally``;
    ``depths``: each work queue's ready tasks (`queue_depths`)."""
    if tally is not None:
        totals = tally.totals(hub, queues)
    else:
        totals = combine([Report.of(hub, queues=queues)])
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(totals))
    if totals.queues:
        registry.register(QueueCollector(totals.queues, depths or {}))
    return generate_latest(registry)
