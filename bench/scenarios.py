"""The scenarios of the benchmark, each a function of a `Run` that returns plain records.

- standard: 1,000 subscribers over 10 topics, 1,000 events/s of ~100 bytes.
- saturation (`bench.ladder`): the standard fan-out at rising rates, until p99 passes 100 ms.
- per-id (`bench.rounds.per_id`): one client per topic, as the seed project serves its users.
- workers (`bench.workers`): ``--workers 2`` and one process at equal loads, in turn.
- scale: many mostly idle subscribers (RSS per connection), then a broadcast to all.
- ingest and catch-up (`bench.backlog`): reading a pre-filled stream.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.broker import Broker
from bench.fleet import Fleet, SubscriberFleet, spread
from bench.loadgen import FleetConfig
from bench.nodeclient import NODE, NodeClient
from bench.publisher import Publisher, PublishPlan, PublishResult
from bench.stream import LatencyProbe, ProbeResult
from bench.tally import FleetResult
from bench.targets import Target, Usage, tree_usage

LOADGEN = "loadgen"
"""The ``client`` of a step the load generator (`bench.loadgen`) measured."""
SETTLE = 0.5
"""Seconds between the last connection and the first event."""


@dataclass
class Run:
    """What the scenarios share: the broker, names unique to this run, and the scale."""

    broker: Broker
    run_id: str
    smoke: bool
    steps: int = 0
    failures: list[str] = field(default_factory=list)

    def next_step(self) -> int:
        self.steps += 1
        return self.steps

    @property
    def quiet(self) -> float:
        """Seconds without a new event after which a drain is over."""
        return 1.0 if self.smoke else 3.0


@dataclass
class Step:
    """One load step against one target: what was offered and what came out."""

    target: str
    scenario: str
    subscribers: int
    topics: int
    offered_events_per_s: float
    offered_deliveries_per_s: float
    connected: int = 0
    failed: int = 0
    published: int = 0
    expected: int = 0
    received: int = 0
    lost: int = 0
    duplicates: int = 0
    disconnects: int = 0
    deliveries_per_s: float = 0.0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    cpu_seconds: float = 0.0
    cpu_us_per_delivery: float | None = None
    rss_mb: float = 0.0
    rss_idle_mb: float = 0.0
    rss_kb_per_connection: float | None = None
    connect_p50_ms: float | None = None
    connect_p99_ms: float | None = None
    read_p99_ms: float | None = None
    """The p99 by the clock of the generator's reads (its own lateness included)."""
    read_lag_p99_ms: float | None = None
    """Per read, p99: how long after its bytes arrived the generator read them."""
    bare_p99_ms: float | None = None
    """A bare stream consumer's p99 over the same events (publish to its receipt)."""
    share_p50_ms: float | None = None
    share_p99_ms: float | None = None
    """The gateway's own share: per delivery, its receipt by a subscriber less a bare
    stream consumer's receipt of the same event (topic and seq), on the same clock."""
    share_negative: int = 0
    """Deliveries a subscriber had before the bare consumer (counted as 0 in the share)."""
    probe_us_per_event: float | None = None
    """The bare stream consumer's own CPU per event."""
    generator_us_per_delivery: float | None = None
    """The subscriber processes' own CPU per event: how much of the machine the client side took."""
    publisher_us_per_event: float | None = None
    """The publisher process's own CPU per event published."""
    load_before: float = 0.0
    """The machine's 1-minute load average before the step (other work skews the figures)."""
    client: str = LOADGEN
    """What measured the step: the load generator, or the Node client (`bench.nodeclient`)."""
    errors: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """Everyone connected and got every event exactly once."""
        return (
            self.failed == 0
            and self.lost == 0
            and self.duplicates == 0
            and self.disconnects == 0
            and self.received > 0
            and not self.errors
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _plan(
    target: Target, broker: Broker, topics: tuple[str, ...], rate: float, count: int
) -> PublishPlan:
    if target.publish_over_http:
        return PublishPlan(topics, count, rate, http_host="127.0.0.1", http_port=target.port)
    return PublishPlan(topics, count, rate, amqp_url=broker.url, exchange=target.exchange)


def fanout(
    run: Run,
    target: Target,
    scenario: str,
    *,
    subscribers: int,
    topics: int,
    rate: float,
    seconds: float,
    processes: int = 2,
    idle: float = 0.0,
    probe_stream: str | None = None,
    drain: float | None = None,
    on_publish: Callable[[], object] | None = None,
    client: str = LOADGEN,
) -> Step:
    """Connect ``subscribers`` over ``topics``, publish ``rate`` events/s for ``seconds``.

    After publishing, wait until every event arrived, or none came for a while, or
    ``drain`` seconds passed (what has not arrived by then counts as lost).
    ``on_publish`` is called once everyone is connected, just before publishing.
    ``client`` is what subscribes: the load generator, or the Node client.
    """
    n = run.next_step()
    names = tuple(f"s{n}.t{k}" for k in range(topics))
    per_topic = max(1, subscribers // topics)
    step = Step(target.name, scenario, subscribers, topics, rate, rate * per_topic, client=client)
    limit = seconds * 10 + idle + 300
    config = _fleet_config(target, spread(names, subscribers), processes, n, limit)
    fleet: Fleet = NodeClient(config) if client == NODE else SubscriberFleet(config)
    window: _Window | None = None
    try:
        window = _connect_and_publish(
            run,
            target,
            fleet,
            step,
            names,
            rate=rate,
            seconds=seconds,
            idle=idle,
            probe_stream=probe_stream,
            drain=drain,
            on_publish=on_publish,
        )
    finally:
        bare = window.bare if window is not None else None
        result = fleet.finish(bare.arrivals if bare is not None else None)
    _fill(step, result, window)
    if not target.alive():
        step.errors.append(f"{target.name} died: {target.log_tail(5)}")
    return step


def _fleet_config(
    target: Target, topics: tuple[str, ...], processes: int, step: int, max_seconds: float
) -> FleetConfig:
    """One connection per entry of ``topics``; ``step`` picks the source addresses."""
    return FleetConfig(
        "127.0.0.1",
        target.port,
        topics,
        ready_marker=target.ready_marker,
        processes=processes,
        source_net=step % 250 + 1,
        max_seconds=max_seconds,
    )


@dataclass
class _Window:
    """What a step measured while its subscribers were connected."""

    before: Usage
    """The target's usage before anyone connected."""
    idle: Usage
    """The target's usage once everyone connected, before any event."""
    after: Usage
    """The target's usage once the events arrived (or the wait for them ended)."""
    sent: PublishResult
    generator_cpu: float
    """The subscriber processes' CPU seconds from just before publishing to the end of the wait."""
    bare: ProbeResult | None
    """What a bare stream consumer saw over the same events, when one was asked for."""


def _connect_and_publish(
    run: Run,
    target: Target,
    fleet: Fleet,
    step: Step,
    names: tuple[str, ...],
    *,
    rate: float,
    seconds: float,
    idle: float,
    probe_stream: str | None,
    drain: float | None,
    on_publish: Callable[[], object] | None,
) -> _Window:
    """Connect the fleet, publish, and wait for the events, measuring the target around it."""
    step.load_before = round(os.getloadavg()[0], 2)
    before = target.usage()
    step.connected, step.failed, errors = fleet.connect()
    step.errors.extend(errors[:3])
    time.sleep(SETTLE + idle)
    idle_usage = target.usage()
    gen_before = sum(tree_usage(pid).cpu for pid in fleet.pids())
    probe = LatencyProbe(run.broker.url, probe_stream).start() if probe_stream else None
    if on_publish is not None:
        on_publish()
    count = max(len(names), round(rate * seconds))
    published = Publisher(_plan(target, run.broker, names, rate, count)).start()
    sent = published.result(seconds * 3 + 60)
    if sent.error:
        step.errors.append(f"publisher: {sent.error}")
    wanted = Counter(fleet.config.topics)
    expected = sum(sent.per_topic.get(t, 0) * k for t, k in wanted.items())
    limit = drain if drain is not None else seconds * 8 + 30
    fleet.wait_for(expected, quiet=run.quiet, limit=limit)
    after = target.usage()
    gen_cpu = sum(tree_usage(pid).cpu for pid in fleet.pids()) - gen_before
    bare = probe.stop() if probe is not None else None
    return _Window(before, idle_usage, after, sent, gen_cpu, bare)


def _fill(step: Step, result: FleetResult, window: _Window | None) -> None:
    """The step's figures, from what the fleet saw and what was measured around it."""
    if window is None:  # the fleet did not connect: nothing was measured
        step.errors.extend(result.errors[:3])
        return
    sent, before, idle, after = window.sent, window.before, window.idle, window.after
    step.published = sent.sent
    step.expected = sum(
        sent.per_topic.get(t, 0) * tally.connections for t, tally in result.topics.items()
    )
    step.received = result.received
    step.lost = result.lost(sent.per_topic) + step.failed * (sent.sent // max(1, step.topics))
    step.duplicates = result.duplicates
    step.disconnects = result.disconnects
    step.errors.extend(result.errors[:3])
    if result.received and result.last_event_at > sent.started:
        step.deliveries_per_s = round(result.received / (result.last_event_at - sent.started))
    step.p50_ms = _ms(result.quantile(0.50))
    step.p99_ms = _ms(result.quantile(0.99))
    step.max_ms = _ms(result.maximum)
    step.read_p99_ms = _ms(result.read_latency.quantile(0.99))
    step.read_lag_p99_ms = _ms(result.read_lag.quantile(0.99))
    step.cpu_seconds = round(after.cpu - idle.cpu, 3)
    if result.received:
        step.cpu_us_per_delivery = round((after.cpu - idle.cpu) / result.received * 1e6, 2)
    step.rss_mb = round(after.rss / 2**20, 1)
    step.rss_idle_mb = round(idle.rss / 2**20, 1)
    if step.connected:
        step.rss_kb_per_connection = round((idle.rss - before.rss) / step.connected / 1024, 2)
    step.connect_p50_ms = _ms(_quantile(result.connect_times, 0.50))
    step.connect_p99_ms = _ms(_quantile(result.connect_times, 0.99))
    _fill_overheads(step, result, window)


def _fill_overheads(step: Step, result: FleetResult, window: _Window) -> None:
    """The measuring side's own CPU per event, and the bare stream consumer's p99."""
    if step.received:
        # The tally of what arrived runs after the step; it counts as the generator's work.
        gen_cpu = window.generator_cpu + result.tally_cpu
        step.generator_us_per_delivery = round(gen_cpu / step.received * 1e6, 2)
    sent = window.sent
    if sent.sent:
        step.publisher_us_per_event = round(sent.cpu / sent.sent * 1e6, 1)
    bare = window.bare
    if bare is not None:
        step.bare_p99_ms = _ms(bare.latency.quantile(0.99))
        if bare.received:
            step.probe_us_per_event = round(bare.cpu_seconds / bare.received * 1e6, 1)
        if bare.error:
            step.errors.append(f"bare stream consumer: {bare.error}")
    if result.share.total:
        step.share_p50_ms = _ms(result.share.quantile(0.50))
        step.share_p99_ms = _ms(result.share.quantile(0.99))
        step.share_negative = result.share_negative


def brief(step: Step) -> str:
    """One line on a step, for the run's output."""
    generator = f"generator {step.generator_us_per_delivery} us"
    if step.read_p99_ms is not None:
        generator += f", read lag p99 {step.read_lag_p99_ms} ms, read p99 {step.read_p99_ms} ms"
    bare = ""
    if step.bare_p99_ms is not None:
        bare = (
            f"; bare consumer p99 {step.bare_p99_ms} ms, gateway's own share p99 "
            f"{step.share_p99_ms} ms ({step.share_negative} ahead of the bare consumer; "
            f"its CPU {step.probe_us_per_event} us/event)"
        )
    return (
        f"offered {step.offered_deliveries_per_s:,.0f}/s -> {step.deliveries_per_s:,.0f}/s, "
        f"p50 {step.p50_ms} ms, p99 {step.p99_ms} ms, lost {step.lost}, dup {step.duplicates}, "
        f"cut {step.disconnects}, cpu {step.cpu_us_per_delivery} us/delivery "
        f"({generator}, publisher {step.publisher_us_per_event} us/event){bare}"
        + (f", errors {step.errors[:2]}" if step.errors else "")
    )
