"""The scenarios of the benchmark, each a function of a `Run` that returns plain records.

- standard: 1,000 subscribers over 10 topics, 1,000 events/s of ~100 bytes.
- saturation: the standard fan-out at rising rates, until p99 passes 100 ms.
- workers (`bench.workers`): ``--workers 2`` and one process at equal loads, in turn.
- scale: many mostly idle subscribers (RSS per connection), then a broadcast to all.
- ingest: events/s one gateway process takes from a pre-filled stream, with no
  subscribers, against a plain aio-pika consumer on the same stream.
- catch-up: one client resuming 100,000 events behind, from the ring and from the stream.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.loadgen import FleetConfig, FleetResult, SubscriberFleet, spread
from bench.publisher import Publisher, PublishPlan, PublishResult
from bench.stream import LatencyProbe, aio_pika_ingest, stream_tail
from bench.targets import Broker, Hopcast, Target, Usage, tree_usage

SETTLE = 0.5
"""Seconds between the last connection and the first event."""
P99_LIMIT = 0.100
"""Saturation: the p99 latency a load step must stay under."""
REFINE = 2
"""Saturation: steps that halve the gap between the ladder's last step under the limit
and the first over it. With two, the figure is found to within a quarter of a ladder
step (at most a twelfth of the load: no step of the ladder is a third above the last)."""


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
    bare_p99_ms: float | None = None
    generator_us_per_delivery: float | None = None
    """The subscriber processes' own CPU per event: how much of the machine the client side took."""
    publisher_us_per_event: float | None = None
    """The publisher process's own CPU per event published."""
    load_before: float = 0.0
    """The machine's 1-minute load average before the step (other work skews the figures)."""
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
) -> Step:
    """Connect ``subscribers`` over ``topics``, publish ``rate`` events/s for ``seconds``.

    After publishing, wait until every event arrived, or none came for a while, or
    ``drain`` seconds passed (what has not arrived by then counts as lost).
    ``on_publish`` is called once everyone is connected, just before publishing.
    """
    n = run.next_step()
    names = tuple(f"s{n}.t{k}" for k in range(topics))
    per_topic = max(1, subscribers // topics)
    step = Step(target.name, scenario, subscribers, topics, rate, rate * per_topic)
    count = max(topics, round(rate * seconds))
    config = FleetConfig(
        "127.0.0.1",
        target.port,
        spread(names, subscribers),
        ready_marker=target.ready_marker,
        processes=processes,
        source_net=n % 250 + 1,
        max_seconds=seconds * 10 + idle + 300,
    )
    fleet = SubscriberFleet(config)
    step.load_before = round(os.getloadavg()[0], 2)
    before = target.usage()
    try:
        step.connected, step.failed, errors = fleet.connect()
        step.errors.extend(errors[:3])
        time.sleep(SETTLE + idle)
        idle_usage = target.usage()
        gen_before = sum(tree_usage(pid).cpu for pid in fleet.pids())
        probe = LatencyProbe(run.broker.url, probe_stream).start() if probe_stream else None
        if on_publish is not None:
            on_publish()
        published = Publisher(_plan(target, run.broker, names, rate, count)).start()
        sent = published.result(seconds * 3 + 60)
        if sent.error:
            step.errors.append(f"publisher: {sent.error}")
        wanted = Counter(config.topics)
        expected = sum(sent.per_topic.get(t, 0) * k for t, k in wanted.items())
        limit = drain if drain is not None else seconds * 8 + 30
        fleet.wait_for(expected, quiet=run.quiet, limit=limit)
        after = target.usage()
        gen_cpu = sum(tree_usage(pid).cpu for pid in fleet.pids()) - gen_before
        bare = probe.stop() if probe is not None else None
    finally:
        result = fleet.finish()
    _fill(step, result, sent, before=before, idle=idle_usage, after=after)
    if step.received:
        # The tally of what arrived runs after the step; it counts as the generator's work.
        gen_cpu += result.tally_cpu
        step.generator_us_per_delivery = round(gen_cpu / step.received * 1e6, 2)
    if sent.sent:
        step.publisher_us_per_event = round(sent.cpu / sent.sent * 1e6, 1)
    if bare is not None:
        step.bare_p99_ms = _ms(bare.latency.quantile(0.99))
    if not target.alive():
        step.errors.append(f"{target.name} died: {target.log_tail(5)}")
    return step


def _fill(
    step: Step,
    result: FleetResult,
    sent: PublishResult,
    *,
    before: Usage,
    idle: Usage,
    after: Usage,
) -> None:
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
    step.p50_ms = _ms(result.latency.quantile(0.50))
    step.p99_ms = _ms(result.latency.quantile(0.99))
    step.max_ms = _ms(result.latency.maximum if result.received else None)
    step.cpu_seconds = round(after.cpu - idle.cpu, 3)
    if result.received:
        step.cpu_us_per_delivery = round((after.cpu - idle.cpu) / result.received * 1e6, 2)
    step.rss_mb = round(after.rss / 2**20, 1)
    step.rss_idle_mb = round(idle.rss / 2**20, 1)
    if step.connected:
        step.rss_kb_per_connection = round((idle.rss - before.rss) / step.connected / 1024, 2)
    step.connect_p50_ms = _ms(_quantile(result.connect_times, 0.50))
    step.connect_p99_ms = _ms(_quantile(result.connect_times, 0.99))


def saturation(
    run: Run,
    target: Target,
    ladder: list[float],
    *,
    subscribers: int,
    topics: int,
    seconds: float,
    probe_at: float | None = None,
    probe_stream: str | None = None,
    refine: int = REFINE,
) -> list[Step]:
    """Climb ``ladder`` (deliveries/s offered) until p99 passes 100 ms or events go missing;
    then bisect between that step and the one before it, ``refine`` times."""
    steps = []
    per_topic = max(1, subscribers // topics)

    def step_at(deliveries: float) -> bool:
        step = fanout(
            run,
            target,
            "saturation",
            subscribers=subscribers,
            topics=topics,
            rate=deliveries / per_topic,
            seconds=seconds,
            probe_stream=probe_stream if deliveries == probe_at else None,
            drain=seconds + 10,
        )
        steps.append(step)
        print(f"  {target.name}: {brief(step)}", flush=True)
        return under_limit(step)

    below: float | None = None  # the last offered load under the limit, and the first over
    above: float | None = None
    for deliveries in ladder:
        if not step_at(deliveries):
            above = deliveries
            break
        below = deliveries
    if below is None or above is None:
        return steps
    for _ in range(refine):
        middle = round((below + above) / 2, -2)
        if step_at(middle):
            below = middle
        else:
            above = middle
    return steps


def under_limit(step: Step) -> bool:
    """A clean step (nothing lost or repeated) with its p99 under 100 ms."""
    return step.clean and step.p99_ms is not None and step.p99_ms <= P99_LIMIT * 1000


def best_under_limit(steps: list[Step]) -> Step | None:
    """The step with the most deliveries/s among the clean ones with p99 under 100 ms."""
    good = [s for s in steps if under_limit(s)]
    return max(good, key=lambda s: s.deliveries_per_s, default=None)


def brief(step: Step) -> str:
    return (
        f"offered {step.offered_deliveries_per_s:,.0f}/s -> {step.deliveries_per_s:,.0f}/s, "
        f"p99 {step.p99_ms} ms, lost {step.lost}, dup {step.duplicates}, "
        f"cut {step.disconnects}, cpu {step.cpu_us_per_delivery} us/delivery "
        f"(generator {step.generator_us_per_delivery} us, "
        f"publisher {step.publisher_us_per_event} us/event)"
        + (f", errors {step.errors[:2]}" if step.errors else "")
    )


@dataclass
class Backlog:
    """A stream filled with ``head`` events, then ``behind`` more after offset ``resume_from``."""

    exchange: str
    stream: str
    topic: str
    head: int
    behind: int
    resume_from: int
    tail: int


def fill_backlog(run: Run, head: int, behind: int) -> Backlog:
    """Declare a stream and publish ``head + behind`` events on one topic, flat out."""
    name = f"bench.{run.run_id}.backlog"
    run.broker.declare_stream(name, name)
    topic = "backlog.t0"
    first = Publisher(PublishPlan((topic,), head, 0, amqp_url=run.broker.url, exchange=name))
    sent = first.start().result(600)
    if sent.error:
        raise RuntimeError(f"filling the stream failed: {sent.error}")
    resume_from = asyncio.run(stream_tail(run.broker.url, name))
    plan = PublishPlan((topic,), behind, 0, amqp_url=run.broker.url, exchange=name, seq_start=head)
    sent = Publisher(plan).start().result(600)
    if sent.error or resume_from is None:
        raise RuntimeError(f"filling the stream failed: {sent.error}")
    tail = asyncio.run(stream_tail(run.broker.url, name))
    return Backlog(name, name, topic, head, behind, resume_from, tail or -1)


Sample = tuple[float, float, float]
"""(time, events read, gateway CPU seconds), from the gateway's metrics."""


@dataclass
class Ingest:
    events: int = 0
    seconds: float = 0.0
    events_per_s: float = 0.0
    cpu_us_per_event: float | None = None
    reference_events_per_s: float = 0.0
    reference_cpu_us_per_event: float | None = None
    reference: str = "aio-pika consumer, one ack per message"
    errors: list[str] = field(default_factory=list)


def ingest(run: Run, backlog: Backlog, ring_size: int) -> tuple[Ingest, Hopcast]:
    """Start a gateway whose ring covers the backlog and time its start-up read.

    Returns the running gateway, for the catch-up from the ring that follows.
    """
    out = Ingest()
    gateway = Hopcast(
        "hopcast-ingest",
        run.broker,
        run.run_id,
        exchange=backlog.exchange,
        stream=backlog.stream,
        extra=("--ring-size", str(ring_size)),
    )
    gateway.start_process()
    samples: list[Sample] = []
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            try:
                metrics = gateway.metrics()
            except OSError:
                time.sleep(0.05)
                continue
            events = metrics.get("hopcast_events_total", 0.0)
            samples.append((time.perf_counter(), events, gateway.usage().cpu))
            if metrics.get("hopcast_stream_position", -1) >= backlog.tail:
                break
            time.sleep(0.01)
        else:
            out.errors.append("the gateway did not reach the stream's tail within 600 s")
    except BaseException:
        gateway.stop()
        raise
    timed = read_span(samples)
    if timed is None:
        out.errors.append("the gateway read the whole backlog before its first sample")
    else:
        (t0, e0, c0), (t1, e1, c1) = timed
        out.events = int(e1 - e0)
        out.seconds = round(t1 - t0, 3)
        out.events_per_s = round(out.events / out.seconds) if out.seconds else 0.0
        if out.events:
            out.cpu_us_per_event = round((c1 - c0) / out.events * 1e6, 2)
    return out, gateway


def read_span(samples: list[Sample]) -> tuple[Sample, Sample] | None:
    """The first and last samples of the start-up read: (time, events, cpu) each.

    The read starts after the last sample that counted no events, so the span
    begins there: a small backlog read between two samples is still timed,
    at worst a little slower than it was.
    """
    idle = [s for s in samples if s[1] == 0]
    start = idle[-1] if idle else next((s for s in samples if s[1] > 0), None)
    if start is None or samples[-1] is start or samples[-1][1] <= start[1]:
        return None
    return start, samples[-1]


def ingest_reference(run: Run, backlog: Backlog, out: Ingest) -> None:
    """The plain aio-pika consumer on the same stream, in a process of its own."""
    reference = aio_pika_ingest(run.broker.url, backlog.stream, backlog.head + backlog.behind)
    out.reference_events_per_s = round(reference.rate)
    if reference.events > 0:
        out.reference_cpu_us_per_event = round(reference.cpu_seconds / reference.events * 1e6, 2)
    if reference.error:
        out.errors.append(f"aio-pika consumer: {reference.error}")


@dataclass
class CatchUp:
    source: str
    expected: int
    received: int = 0
    lost: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    events_per_s: float = 0.0
    errors: list[str] = field(default_factory=list)


def catch_up(run: Run, gateway: Hopcast, backlog: Backlog, source: str) -> CatchUp:
    """One client resuming at ``backlog.resume_from``; events/s from request to last event."""
    out = CatchUp(source, backlog.behind)
    config = FleetConfig(
        "127.0.0.1",
        gateway.port,
        (backlog.topic,),
        headers=(("Last-Event-ID", str(backlog.resume_from)),),
        source_net=run.next_step() % 250 + 1,
        max_seconds=900,
    )
    fleet = SubscriberFleet(config)
    try:
        connected, _, errors = fleet.connect()
        out.errors.extend(errors[:3])
        if connected:
            fleet.wait_for(backlog.behind, quiet=run.quiet * 3, limit=600)
    finally:
        result = fleet.finish()
    out.received = result.received
    out.lost = result.lost({backlog.topic: backlog.behind})
    out.duplicates = result.duplicates
    out.errors.extend(result.errors[:3])
    if result.received and result.opened_at:
        out.seconds = round(result.last_event_at - result.opened_at, 3)
        out.events_per_s = round(result.received / out.seconds) if out.seconds else 0.0
    return out
