"""The work queues' metrics: names promtool accepts, and figures that follow the tasks."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_metrics import promtool_check
from tests.support.queues import (
    enqueue,
    queue_gateway,
    receive,
    settle,
)
from tests.support.rabbitmq import Names

pytestmark = pytest.mark.slow


def figures(text: str, queue: str) -> dict[str, float]:
    """The samples labelled with ``queue``, by name (and outcome, for settled)."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("queue") == queue:
                outcome = sample.labels.get("outcome")
                found[sample.name + (f":{outcome}" if outcome else "")] = sample.value
    return found


async def test_queue_metrics(broker_kind: str, names: Names, queue: str) -> None:
    async with (
        queue_gateway(broker_kind, names, queue) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=60) as http,
    ):
        for n in range(5):
            await enqueue(http, queue, b"%d" % n)
        tasks = await receive(http, queue, max=3, wait=20)
        while len(tasks) < 3:
            tasks += await receive(http, queue, max=3 - len(tasks), wait=20)
        for action, task in zip(("ack", "nack", "reject"), tasks, strict=True):
            assert (await settle(http, queue, action, task["lease"])).status_code == 200
        taken = await receive(http, queue, max=5, wait=20)
        while not any(t["redelivered"] for t in taken):  # the nacked one, behind the others
            taken += await receive(http, queue, max=5, wait=20)
        assert len(taken) == 3
        text = (await http.get("/metrics")).text
    promtool_check(text)
    got = figures(text, queue)
    assert got["hopcast_queue_enqueued_total"] == 5
    assert got["hopcast_queue_settled_total:ack"] == 1
    assert got["hopcast_queue_settled_total:nack"] == 1
    assert got["hopcast_queue_settled_total:reject"] == 1
    assert got["hopcast_queue_dead_lettered_total"] == 1
    assert got["hopcast_queue_redeliveries_total"] == 1
    assert got["hopcast_queue_lease_expiries_total"] == 0
    assert got["hopcast_queue_leased"] + got["hopcast_queue_depth"] == 3
