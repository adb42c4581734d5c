"""The tally of what subscribers received: latencies in a histogram, events per topic, merged.

Each subscriber process fills one `FleetResult`; the fleet merges them
(`bench.fleet.SubscriberFleet.finish`) into the step's figures.

>>> bucket_of(25), bucket_of(FINE + 250)
(25, 100002)
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

FINE = 100_000
"""Latency buckets of 0.1 ms up to 10 s, then of 10 ms up to 10 minutes (the maximum is exact)."""
HIST_SIZE = FINE + 59_000


def bucket_of(tenths_of_ms: int) -> int:
    """The bucket of a latency in units of 0.1 ms (the fast path handles 0-10 s inline)."""
    if tenths_of_ms < FINE:
        return max(0, tenths_of_ms)
    return min(HIST_SIZE - 1, FINE + (tenths_of_ms - FINE) // 100)


def bucket_top(bucket: int) -> float:
    """The upper edge of a bucket, in seconds."""
    if bucket < FINE:
        return (bucket + 1) * 1e-4
    return 10.0 + (bucket - FINE + 1) * 0.01


@dataclass
class Histogram:
    """Latency counts in 0.1 ms buckets, with the exact maximum."""

    counts: Counter[int] = field(default_factory=Counter)
    maximum: float = 0.0

    def merge(self, other: Histogram) -> None:
        self.counts.update(other.counts)
        self.maximum = max(self.maximum, other.maximum)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def quantile(self, q: float) -> float | None:
        """The latency (seconds, upper bucket edge) below which a fraction ``q`` falls."""
        total = self.total
        if not total:
            return None
        rank = q * total
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return min(bucket_top(bucket), self.maximum)
        return self.maximum


@dataclass
class TopicTally:
    """Per topic: connections, distinct events they received, and repeats."""

    connections: int = 0
    unique: int = 0
    duplicates: int = 0


@dataclass
class FleetResult:
    """What a set of subscriber processes saw, merged."""

    connected: int = 0
    failed: int = 0
    disconnects: int = 0
    received: int = 0
    tally_cpu: float = 0.0
    """CPU seconds spent reading the events' numbers, after the step (`SseSubscriber.tally`)."""
    connect_times: list[float] = field(default_factory=list)
    topics: dict[str, TopicTally] = field(default_factory=dict)
    latency: Histogram = field(default_factory=Histogram)
    read_latency: Histogram = field(default_factory=Histogram)
    """The latency by the clock of the generator's reads instead of the kernel's stamp."""
    read_lag: Histogram = field(default_factory=Histogram)
    """Per read: how long after its bytes reached the socket the generator read them."""
    reported: dict[str, float | None] = field(default_factory=dict)
    """Latency quantiles (seconds, by ``p50``, ``p99``, ``max``) that a client computed
    itself instead of filling ``latency`` (the Node client, `bench.nodeclient`)."""
    share: Histogram = field(default_factory=Histogram)
    """Per delivery: its receipt here less a bare stream consumer's receipt of the same
    event (`bench.stream.LatencyProbe`), when the step ran one."""
    share_negative: int = 0
    """Deliveries that arrived here before the bare consumer had the event (counted as 0)."""
    opened_at: float = 0.0
    first_event_at: float = 0.0
    last_event_at: float = 0.0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: FleetResult) -> None:
        self.connected += other.connected
        self.failed += other.failed
        self.disconnects += other.disconnects
        self.received += other.received
        self.tally_cpu += other.tally_cpu
        self.connect_times.extend(other.connect_times)
        for topic, tally in other.topics.items():
            mine = self.topics.setdefault(topic, TopicTally())
            mine.connections += tally.connections
            mine.unique += tally.unique
            mine.duplicates += tally.duplicates
        self.latency.merge(other.latency)
        self.read_latency.merge(other.read_latency)
        self.read_lag.merge(other.read_lag)
        self.share.merge(other.share)
        self.share_negative += other.share_negative
        self.reported = self.reported or other.reported
        stamps = [t for t in (self.opened_at, other.opened_at) if t]
        self.opened_at = min(stamps, default=0.0)
        firsts = [t for t in (self.first_event_at, other.first_event_at) if t]
        self.first_event_at = min(firsts, default=0.0)
        self.last_event_at = max(self.last_event_at, other.last_event_at)
        self.errors.extend(other.errors[:5])

    def lost(self, expected: dict[str, int]) -> int:
        """Events each connection should have had, less the distinct ones it got."""
        return sum(
            max(0, expected.get(topic, 0) * tally.connections - tally.unique)
            for topic, tally in self.topics.items()
        )

    @property
    def duplicates(self) -> int:
        return sum(t.duplicates for t in self.topics.values())

    def quantile(self, q: float) -> float | None:
        """The latency under which a fraction ``q`` of the deliveries fall (seconds)."""
        if self.reported:
            return self.reported.get(f"p{round(q * 100)}")
        return self.latency.quantile(q)

    @property
    def maximum(self) -> float | None:
        if self.reported:
            return self.reported.get("max")
        return self.latency.maximum if self.received else None
