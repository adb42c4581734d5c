"""Prometheus metrics, read from the hub's counters at scrape time (nothing per delivery)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from hopcast._hub.hub import Hub


class HubCollector(Collector):
    """Exposes one hub's counters and gauges."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        stats = hub.stats
        yield CounterMetricFamily(
            "hopcast_events", "Events read from the stream and dispatched", value=stats.events
        )
        yield CounterMetricFamily(
            "hopcast_deliveries", "Events queued to subscribers", value=stats.deliveries
        )
        yield CounterMetricFamily(
            "hopcast_slow_disconnects",
            "Subscribers cut off as too slow (queue full, or no progress on a full socket)",
            value=stats.slow_disconnects,
        )
        yield CounterMetricFamily(
            "hopcast_stream_reconnects",
            "Restarts of the live stream reader",
            value=stats.reconnects,
        )
        yield CounterMetricFamily(
            "hopcast_catchup_readers_started",
            "Temporary stream readers opened for resumes beyond the ring",
            value=hub.catchups.started,
        )
        yield CounterMetricFamily(
            "hopcast_refused_connections",
            "Subscriptions told to come back later (over a connection limit)",
            value=stats.refused_connections,
        )
        yield GaugeMetricFamily("hopcast_subscribers", "Open subscriptions", value=hub.subscribers)
        yield GaugeMetricFamily(
            "hopcast_catchup_readers", "Temporary stream readers", value=hub.catchups.running
        )
        yield GaugeMetricFamily(
            "hopcast_stream_position", "Last stream offset dispatched", value=hub.position
        )
        yield GaugeMetricFamily("hopcast_ready", "1 when ready", value=1 if hub.ready else 0)


def render_metrics(hub: Hub) -> bytes:
    """The Prometheus text exposition of one hub."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HubCollector(hub))
    return generate_latest(registry)
