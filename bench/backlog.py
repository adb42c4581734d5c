"""The scenarios over a pre-filled stream: how fast a gateway reads it, and a client catches up.

- ingest: events/s one gateway process takes from a pre-filled stream, with no
  subscribers, against a plain aio-pika consumer on the same stream.
- catch-up: one client resuming 100,000 events behind, from the ring and from the stream.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from bench.fleet import SubscriberFleet
from bench.loadgen import FleetConfig
from bench.publisher import Publisher, PublishPlan
from bench.scenarios import Run
from bench.stream import aio_pika_ingest, stream_tail
from bench.targets import Hopcast


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
