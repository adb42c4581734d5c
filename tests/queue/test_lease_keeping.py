"""What a gateway keeps per lease while it is held: little, and a timer for none.

Thousands of leases are held at once (the benchmark holds 10,000 in one process),
so a lease keeps what settling needs and not the task's body, and the leases due
in one tick share a timer.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from typing import Any, cast

from hopcast._broker.base import Delivery, Outcome, TaskBroker
from hopcast._queue.expiry import Expiries
from hopcast._queue.leases import LeaseSigner
from hopcast._queue.routing import Router
from hopcast._queue.work import LeaseLimits, WorkQueue

BODY_BYTES = 4096


class Channel:
    """A channel that takes every settlement."""

    key = 1
    closed = False

    def __init__(self) -> None:
        self.settled: list[tuple[int, Outcome]] = []

    async def settle(self, tag: int, outcome: Outcome) -> None:
        self.settled.append((tag, outcome))


def work_queue() -> WorkQueue:
    limits = LeaseLimits(lease=30.0, max_lease=1500.0, delivery_limit=10)
    tasks = cast(TaskBroker, object())
    return WorkQueue("mail", tasks, LeaseSigner(), limits, Router(tasks))


async def test_a_held_lease_keeps_far_less_than_its_tasks_body() -> None:
    queue, channel = work_queue(), Channel()
    count = 2000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for tag in range(1, count + 1):
            body = bytes([tag % 256]) * BODY_BYTES
            delivery = Delivery(tag, f"id-{tag}", "email", body, 1, False)
            queue.grant(cast(Any, channel), delivery, None, 30.0)
        del body, delivery
        gc.collect()
        held = (tracemalloc.get_traced_memory()[0] - before) / count
    finally:
        tracemalloc.stop()
    assert queue.leased == count
    assert held < BODY_BYTES / 4, f"{held:.0f} bytes per lease"


async def test_a_lease_still_settles_its_delivery_on_its_channel() -> None:
    queue, channel = work_queue(), Channel()
    task = queue.grant(cast(Any, channel), Delivery(7, "a", None, b"x", 1, False), None, 30.0)
    settled = await queue.settle([task["lease"]], "ack", None)
    assert settled.results == {task["lease"]: "ok"}
    assert channel.settled == [(7, "ack")]
    assert queue.leased == 0


async def test_expiries_hand_over_what_is_due_and_nothing_discarded() -> None:
    due: list[str] = []
    came = asyncio.Event()

    def on_due(item: str) -> None:
        due.append(item)
        came.set()

    expiries = Expiries[str](on_due)
    at = asyncio.get_running_loop().time() + 0.01
    expiries.add("kept", at)
    expiries.add("settled", at)
    expiries.add("extended", at)
    expiries.discard("settled", at)
    expiries.discard("extended", at)
    expiries.add("extended", at + 3600)
    await asyncio.wait_for(came.wait(), 30)
    assert due == ["kept"]
    assert len(expiries) == 1  # the extended one, still waiting


async def test_a_lease_that_runs_out_goes_back_to_its_channel() -> None:
    queue, channel = work_queue(), Channel()
    queue.grant(cast(Any, channel), Delivery(3, "a", None, b"x", 1, False), None, 0.01)
    while not channel.settled:
        await asyncio.sleep(0.01)
    assert channel.settled == [(3, "requeue")]
    assert (queue.leased, queue.stats.lease_expiries) == (0, 1)
