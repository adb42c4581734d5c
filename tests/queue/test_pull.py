"""Pulling: a receive takes a batch, never more than ``max``, and one whose client left
takes nothing more (its wait on the queue ends with it)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support.queues import enqueue, queue_gateway, receive, settle
from tests.support.rabbitmq import Names

pytestmark = pytest.mark.slow


async def test_a_receive_takes_up_to_max_and_leaves_the_rest(
    broker_kind: str, names: Names, queue: str
) -> None:
    async with (
        queue_gateway(broker_kind, names, queue, publish_rate=1e6, publish_burst=1e6) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=60) as http,
    ):
        ids = {await enqueue(http, queue, b"%d" % n) for n in range(30)}
        first = await receive(http, queue, max=10, wait=20)
        assert 1 <= len(first) <= 10
        taken: list[dict[str, Any]] = list(first)
        while len(taken) < len(ids):
            batch = await receive(http, queue, max=10, wait=20)
            assert 1 <= len(batch) <= 10
            taken += batch
        assert sorted(t["id"] for t in taken) == sorted(ids)  # each once
        assert await receive(http, queue, max=10) == []
        done = await settle(http, queue, "ack", *(t["lease"] for t in taken))
        assert set(done.json()["results"].values()) == {"ok"}


async def test_a_receive_whose_client_left_takes_nothing_after(
    broker_kind: str, names: Names, queue: str
) -> None:
    async with (
        queue_gateway(broker_kind, names, queue) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=60) as http,
    ):
        async with httpx.AsyncClient(base_url=gw.url, timeout=0.5) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.post(f"/queues/{queue}/receive", params={"wait": 20, "max": 5})
        task_id = await enqueue(http, queue, b"after the first asker left")
        [task] = await receive(http, queue, max=5, wait=20)  # not leased to the one gone
        assert (task["id"], task["deliveries"]) == (task_id, 1)
