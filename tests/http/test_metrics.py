"""/metrics for the whole gateway: each worker's report, combined; a dead worker's counts kept."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hopcast._http.metrics import Report, Reports, WorkerTally, combine, render_metrics
from tests.hub.kit import memory_hub

COUNTED = {
    "hopcast_events_total",
    "hopcast_deliveries_total",
    "hopcast_slow_disconnects_total",
    "hopcast_stream_reconnects_total",
    "hopcast_catchup_readers_started_total",
    "hopcast_refused_connections_total",
    "hopcast_worker_restarts_total",
}
GAUGES = {
    "hopcast_subscribers",
    "hopcast_catchup_readers",
    "hopcast_stream_position",
    "hopcast_ready",
    "hopcast_workers",
}


def samples(text: bytes) -> dict[str, float]:
    """The exposition's samples by name, read with prometheus_client's own parser."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text.decode())
        for sample in family.samples
    }


def test_the_names_are_counters_with_total_and_gauges_without() -> None:
    hub = memory_hub()
    text = render_metrics(hub)
    types = {f.name: f.type for f in text_string_to_metric_families(text.decode())}
    assert {name + "_total" for name, kind in types.items() if kind == "counter"} == COUNTED
    assert {name for name, kind in types.items() if kind == "gauge"} == GAUGES
    assert set(samples(text)) == COUNTED | GAUGES  # no `_created` or `_total_total`


def test_one_process_answers_for_itself() -> None:
    hub = memory_hub()
    hub.stats.events, hub.stats.deliveries = 4, 9
    got = samples(render_metrics(hub))
    assert got["hopcast_events_total"] == 4
    assert got["hopcast_deliveries_total"] == 9
    assert got["hopcast_workers"] == 1
    assert got["hopcast_worker_restarts_total"] == 0


def live(**figures: Any) -> Report:
    """A live, ready worker's report with these figures."""
    return dataclasses.replace(Report(pid=1, ready=True), **figures)


def test_counters_and_subscribers_add_up_over_workers() -> None:
    totals = combine([live(deliveries=10, subscribers=3), live(deliveries=5, subscribers=2)])
    assert (totals.deliveries, totals.subscribers, totals.workers) == (15, 5, 2)
    assert totals.ready


def test_ready_only_when_every_worker_is() -> None:
    assert not combine([live(), live(ready=False)]).ready
    assert not combine([live(), None]).ready  # one that has not reported yet
    assert not combine([live(), Report(events=7)]).ready  # one that died, not back yet
    assert not combine([]).ready


def test_the_position_is_the_lowest_of_the_ready_workers() -> None:
    # a worker still starting (not ready, position -1) would drag it back to the start
    assert combine([live(position=90), live(position=88), live(ready=False)]).position == 88
    assert combine([live(ready=False, position=-1), live(ready=False, position=5)]).position == -1
    assert combine([None, None]).position == -1


def test_a_dead_worker_keeps_its_counts_and_loses_its_gauges() -> None:
    dead = live(deliveries=40, subscribers=12, catchup_readers=2).retired()
    totals = combine([live(deliveries=5, subscribers=1), dead])
    assert totals.deliveries == 45
    assert (totals.subscribers, totals.catchup_readers, totals.workers) == (1, 0, 1)
    assert totals.worker_restarts == 1
    assert dead.retired().worker_restarts == 2


def test_queue_counters_add_up_over_every_worker_and_leases_over_the_live_ones(
    tmp_path: Path,
) -> None:
    mail = {"enqueued": 4, "settled_ack": 3, "leased": 2}
    dead = live(queues={"mail": mail}).retired()
    assert dead.queues == {"mail": {**mail, "leased": 0}}
    totals = combine([live(queues={"mail": {"enqueued": 1, "leased": 5}}), dead, None])
    assert totals.queues["mail"]["enqueued"] == 5
    assert totals.queues["mail"]["settled_ack"] == 3
    assert totals.queues["mail"]["leased"] == 5
    reports = Reports(tmp_path, workers=1)
    reports.write(0, dead)
    assert reports.read(0) == dead  # through the file and back


def test_a_worker_started_in_a_dead_one_s_place_counts_on_from_it(tmp_path: Path) -> None:
    reports = Reports(tmp_path, workers=2)
    first = WorkerTally(reports, 0)
    hub = memory_hub()
    hub.stats.deliveries = 30
    first.report(hub)
    reports.retire(0)  # the supervisor, after the worker died

    second = WorkerTally(reports, 0)
    fresh = memory_hub()
    fresh.stats.deliveries = 2
    other = memory_hub()
    other.stats.deliveries = 7
    WorkerTally(reports, 1).report(other)
    totals = second.totals(fresh)
    assert totals.deliveries == 30 + 2 + 7
    assert totals.worker_restarts == 1
    assert totals.workers == 2


def test_a_scrape_reports_the_worker_it_lands_on_first(tmp_path: Path) -> None:
    """What one scrape showed, the next one shows too, whichever worker it lands on."""
    reports = Reports(tmp_path, workers=2)
    a, b = WorkerTally(reports, 0), WorkerTally(reports, 1)
    hub_a, hub_b = memory_hub(), memory_hub()
    a.report(hub_a)
    b.report(hub_b)
    hub_a.stats.deliveries = 5  # since its last periodic report
    assert a.totals(hub_a).deliveries == 5
    assert b.totals(hub_b).deliveries == 5


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{",
        b"[]",
        b"\xff\xfe",
        b'{"events": 1, "nonsense": 2}',
        dataclasses.asdict(Report()).__repr__().encode(),  # not JSON
        b'{"events": "x", "deliveries": 0}',
        *(
            json.dumps({**dataclasses.asdict(Report()), name: bad}).encode()
            for name, bad in [
                ("events", "7"),
                ("ready", 1),
                ("pid", 1.5),
                ("deliveries", True),
                ("queues", []),
                ("queues", {"mail": {"enqueued": "1"}}),
                ("queues", {"mail": {"nonsense": 1}}),
                ("queues", {"mail": 3}),
            ]
        ),
    ],
)
def test_an_unreadable_report_counts_as_none(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "worker-0.json").write_bytes(content)
    reports = Reports(tmp_path, workers=1)
    assert reports.read(0) is None
    assert not combine(reports.read_all()).ready


def test_a_report_that_cannot_be_written_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tally = WorkerTally(Reports(tmp_path / "gone", workers=1), 0)
    hub = memory_hub()
    hub.stats.events = 3
    for _ in range(3):
        assert tally.totals(hub).events == 3  # still answers for itself
    assert len([r for r in caplog.records if "cannot write" in r.getMessage()]) == 1
