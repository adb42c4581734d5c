"""The benchmark's table rows, built from a run's results scenario by scenario
(`bench.table` renders them; the queues scenario's rows are `bench.queue_report`'s)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bench.backlog import CatchUp, Ingest
from bench.ladder import best_under_limit
from bench.queue_report import queue_rows
from bench.scenarios import Step
from bench.table import HIGHER, LOWER, SAME, Row
from bench.targets import (
    HOPCAST,
    HOPCAST_W2,
    REFERENCE,
    REFERENCE_HELD,
)
from bench.workers import Comparison


def _by_target(steps: list[Step]) -> dict[str, Step]:
    return {s.target: s for s in steps}


def _row(
    measure: str,
    better: str,
    steps: dict[str, Step],
    get: Callable[[Step], float | None],
    unit: str = "",
    *,
    compared: tuple[str, float | None] | None = None,
) -> Row:
    return Row(measure, better, {name: get(step) for name, step in steps.items()}, compared, unit)


def build_rows(results: dict[str, Any]) -> list[Row]:
    """The table's rows from a run's results (scenarios that did not run are left out)."""
    ingest = results.get("ingest")
    cross_check: list[Step] = results.get("cross-check", [])
    return [
        *_standard_rows(results.get("standard", [])),
        *_per_id_rows(results.get("per-id", []), cross_check),
        *_saturation_rows(results.get("saturation", {}), cross_check),
        *_workers_rows(results.get("workers", [])),
        *_scale_rows(results.get("scale", []), "scale"),
        *_scale_rows(results.get("scale-w2", []), "scale --workers 2"),
        *_ingest_rows(ingest),
        *_catchup_rows(results.get("catch-up", []), ingest),
        *queue_rows(results.get("queues")),
    ]


def _standard_rows(steps: list[Step]) -> list[Row]:
    standard = _by_target(steps)
    if not standard:
        return []
    w2 = standard.pop(HOPCAST_W2, None)
    return [
        _row("standard: deliveries/s", HIGHER, standard, lambda s: s.deliveries_per_s),
        _row("standard: lost", SAME, standard, lambda s: s.lost),
        _row("standard: duplicates", SAME, standard, lambda s: s.duplicates),
        _row("standard: p50 latency", LOWER, standard, lambda s: s.p50_ms, "ms"),
        _row("standard: p99 latency", LOWER, standard, lambda s: s.p99_ms, "ms"),
        _row(
            "standard: server CPU per delivery",
            LOWER,
            standard,
            lambda s: s.cpu_us_per_delivery,
            "us",
            compared=("--workers 2", w2.cpu_us_per_delivery) if w2 else None,
        ),
        _row("standard: server RSS", LOWER, standard, lambda s: s.rss_mb, "MB"),
        _row("standard: connect p99", LOWER, standard, lambda s: s.connect_p99_ms, "ms"),
    ]


def _share_rows(label: str, steps: dict[str, Step]) -> list[Row]:
    """The gateway's own share at p99, measured per event against a bare stream consumer,
    beside the difference of the two p99s (which is no quantile of anything)."""
    probed = {name: s for name, s in steps.items() if s.share_p99_ms is not None}
    if not probed:
        return []
    step = probed.get(HOPCAST) or next(iter(probed.values()))
    difference = None
    if step.p99_ms is not None and step.bare_p99_ms is not None:
        difference = round(step.p99_ms - step.bare_p99_ms, 2)
    return [
        _row(
            f"{label}: gateway's own share at p99 (vs a bare stream consumer, per event)",
            SAME,
            probed,
            lambda s: s.share_p99_ms,
            "ms",
            compared=("p99 minus the bare consumer's p99", difference),
        )
    ]


def _node_rows(label: str, steps: list[Step]) -> list[Row]:
    """The Node client's figures on the same load, in a step of its own."""
    node = _by_target(steps)
    node.pop(HOPCAST_W2, None)
    if not node:
        return []
    # A bare stream consumer reads beside the Node client too: the RabbitMQ hop under
    # the Node client's load, which its p99 for a server fed by RabbitMQ includes.
    bare = node.get(HOPCAST)
    return [
        _row(f"{label}: p50 latency, Node client", LOWER, node, lambda s: s.p50_ms, "ms"),
        _row(
            f"{label}: p99 latency, Node client",
            LOWER,
            node,
            lambda s: s.p99_ms,
            "ms",
            compared=("bare stream consumer", bare.bare_p99_ms if bare else None),
        ),
        _row(
            f"{label}: lost + duplicates, Node client",
            SAME,
            node,
            lambda s: s.lost + s.duplicates,
        ),
    ]


def _per_id_rows(steps: list[Step], cross_check: list[Step]) -> list[Row]:
    per_id = _by_target(steps)
    if not per_id:
        return []
    w2 = per_id.pop(HOPCAST_W2, None)
    bare = per_id.get(HOPCAST)
    return [
        _row("per-id: deliveries/s", HIGHER, per_id, lambda s: s.deliveries_per_s),
        _row("per-id: lost", SAME, per_id, lambda s: s.lost),
        _row("per-id: duplicates", SAME, per_id, lambda s: s.duplicates),
        _row("per-id: p50 latency", LOWER, per_id, lambda s: s.p50_ms, "ms"),
        _row(
            "per-id: p99 latency",
            LOWER,
            per_id,
            lambda s: s.p99_ms,
            "ms",
            compared=("bare stream consumer", bare.bare_p99_ms if bare else None),
        ),
        *_node_rows("per-id", [s for s in cross_check if s.scenario == "per-id"]),
        _row(
            "per-id: server CPU per delivery",
            LOWER,
            per_id,
            lambda s: s.cpu_us_per_delivery,
            "us",
            compared=("--workers 2", w2.cpu_us_per_delivery) if w2 else None,
        ),
        _row("per-id: server RSS", LOWER, per_id, lambda s: s.rss_mb, "MB"),
        *_share_rows("per-id", per_id),
    ]


def _saturation_rows(ladders: dict[str, list[Step]], cross_check: list[Step]) -> list[Row]:
    if not ladders:
        return []
    best = {name: best_under_limit(steps) for name, steps in ladders.items()}
    found = {name: step for name, step in best.items() if step is not None}
    w2 = found.pop(HOPCAST_W2, None)
    rows = [
        _row(
            "saturation: deliveries/s with p99 < 100 ms",
            HIGHER,
            found,
            lambda s: s.deliveries_per_s,
            compared=("--workers 2", w2.deliveries_per_s) if w2 else None,
        ),
        _row(
            "saturation: CPU per delivery at that load",
            LOWER,
            found,
            lambda s: s.cpu_us_per_delivery,
            "us",
            compared=("--workers 2", w2.cpu_us_per_delivery) if w2 else None,
        ),
        *_reference_share_rows(found, w2),
    ]
    return rows + _cross_check_rows(ladders, cross_check)


def _reference_share_rows(found: dict[str, Step], w2: Step | None) -> list[Row]:
    """Each server's saturation figure as a share of each physical reference's."""
    rows = []
    for name in (REFERENCE, REFERENCE_HELD):
        reference = found.get(name)
        if reference is None or not reference.deliveries_per_s:
            continue
        ceiling = reference.deliveries_per_s

        def share(step: Step | None, ceiling: float = ceiling) -> float | None:
            return None if step is None else round(step.deliveries_per_s / ceiling * 100, 1)

        others = {n: s for n, s in found.items() if n not in (REFERENCE, REFERENCE_HELD)}
        rows.append(
            Row(
                f"saturation: share of the {name} figure",
                HIGHER,
                {n: share(s) for n, s in others.items()},
                ("--workers 2", share(w2)) if w2 else None,
                "%",
            )
        )
    return rows


def _cross_check_rows(ladders: dict[str, list[Step]], cross_check: list[Step]) -> list[Row]:
    """At the step both clients measured: p99 from each, and the gateway's own share."""
    node = [s for s in cross_check if s.scenario == "saturation"]
    at = node[0].offered_deliveries_per_s if node else 20_000
    at_load: dict[str, Step] = {}
    for name, steps in ladders.items():
        for step in steps:  # the first at that load: the one measured beside the others
            if step.offered_deliveries_per_s == at and name != HOPCAST_W2:
                at_load.setdefault(name, step)
    if not at_load:
        return []
    label = f"{at / 1000:g}k deliveries/s"
    bare = at_load.get(HOPCAST)
    return [
        _row(f"{label}: p50 latency", LOWER, at_load, lambda s: s.p50_ms, "ms"),
        _row(
            f"{label}: p99 latency",
            LOWER,
            at_load,
            lambda s: s.p99_ms,
            "ms",
            compared=("bare stream consumer", bare.bare_p99_ms if bare else None),
        ),
        *_node_rows(label, node),
        *_share_rows(label, at_load),
    ]


def _workers_rows(comparisons: list[Comparison]) -> list[Row]:
    return [
        Row(
            f"{comparison.offered_deliveries_per_s / 1000:,.0f}k deliveries/s:"
            " CPU per delivery, one process (median)",
            LOWER,
            {HOPCAST: comparison.one_us},
            ("--workers 2", comparison.two_us),
            "us",
        )
        for comparison in comparisons
    ]


def _scale_rows(steps: list[Step], label: str) -> list[Row]:
    scale = _by_target(steps)
    if not scale:
        return []
    # With two workers, hopcast-w2 and nchan-w2 stand in hopcast's and nchan's columns.
    scale = {k.split("-w")[0]: v for k, v in scale.items()}
    return [
        _row(f"{label}: subscribers connected", HIGHER, scale, lambda s: s.connected),
        _row(f"{label}: broadcast received", HIGHER, scale, lambda s: s.received),
        _row(f"{label}: lost", SAME, scale, lambda s: s.lost),
        _row(
            f"{label}: RSS growth per connection",
            LOWER,
            scale,
            lambda s: s.rss_kb_per_connection,
            "KB",
        ),
        _row(f"{label}: broadcast p99 latency", LOWER, scale, lambda s: s.p99_ms, "ms"),
        _row(f"{label}: connect p99", LOWER, scale, lambda s: s.connect_p99_ms, "ms"),
    ]


def _ingest_rows(ingest: Ingest | None) -> list[Row]:
    if ingest is None:
        return []
    return [
        Row(
            "ingest from the stream, one process (events/s)",
            HIGHER,
            {HOPCAST: ingest.events_per_s},
            ("aio-pika, ack per message", ingest.reference_events_per_s or None),
        ),
        Row(
            "ingest: CPU per event (us)",
            LOWER,
            {HOPCAST: ingest.cpu_us_per_event},
            ("aio-pika, ack per message", ingest.reference_cpu_us_per_event),
        ),
    ]


def _catchup_rows(catchups: list[CatchUp], ingest: Ingest | None) -> list[Row]:
    return [
        Row(
            f"catch-up of {catchup.expected:,} events from the {catchup.source} (events/s)",
            HIGHER,
            {HOPCAST: catchup.events_per_s},
            ("ingest", ingest.events_per_s if ingest is not None else None)
            if catchup.source == "stream"
            else ("target", 50_000),
        )
        for catchup in catchups
    ]
