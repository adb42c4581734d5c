"""A task stream leases what has come in one batch, never more than its prefetch."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from hopcast._queue.stream import TaskStream
from tests.support.queues import enqueue, queue_gateway, settle
from tests.support.rabbitmq import Names

pytestmark = pytest.mark.slow

PREFETCH = 3


async def test_a_stream_takes_what_came_at_once_up_to_its_prefetch(
    broker_kind: str, names: Names, queue: str
) -> None:
    async with (
        queue_gateway(broker_kind, names, queue) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=60) as http,
    ):
        ids = {await enqueue(http, queue, b"%d" % n) for n in range(5)}
        stream = TaskStream(gateway.app.state.queues.get(queue), PREFETCH, None, 30.0)
        try:
            held: list[dict[str, Any]] = []
            while len(held) < PREFETCH:
                batch = await stream.next_tasks(20)
                assert batch, "no task within 20 s"
                held += batch
                if broker_kind == "memory":  # all there already: one batch
                    assert len(batch) == PREFETCH
            assert len(held) == PREFETCH
            assert await stream.next_tasks(0.5) is None  # at its prefetch: nothing more
            acked = await settle(http, queue, "ack", *(t["lease"] for t in held))
            assert set(acked.json()["results"].values()) == {"ok"}
            rest: list[dict[str, Any]] = []
            while len(rest) < len(ids) - PREFETCH:
                rest += await stream.next_tasks(20) or []
            assert {t["id"] for t in held + rest} == ids
        finally:
            await stream.aclose()
