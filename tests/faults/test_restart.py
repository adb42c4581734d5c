"""Fault 1: RabbitMQ restarts (``stop_app`` / ``start_app``) mid-stream while publishing goes on."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from tests.faults.sequence import (
    PATTERNS,
    Publisher,
    check_sequence,
    read_stream,
)
from tests.faults.subscribers import (
    Pool,
    Subscriber,
    assert_exact,
    flowing,
    join,
    open_fresh,
    read_back,
)
from tests.faults.timings import Timings
from tests.support.processes import child_gateway
from tests.support.rabbitmq import AMQP_URL, Names, rabbitmq_stopped
from tests.support.waits import wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.broker_restart, pytest.mark.usefixtures("rabbitmq")]


async def test_a_broker_restart_mid_stream_loses_nothing(names: Names, tmp_path: Path) -> None:
    timings = Timings()
    env = {**names.env(), "HOPCAST_RETRY": "300", "HOPCAST_AMQP_HEARTBEAT": "2"}
    with child_gateway(env, log_dir=tmp_path) as gw:
        await wait_ready(gw.url)
        pool = Pool(gw.url)
        async with contextlib.AsyncExitStack() as stack:
            publisher = await stack.enter_async_context(Publisher(names.exchange))
            subs, early = await open_fresh(stack, pool, publisher, PATTERNS)
            # resuming and replaying subscribers, joined before the fault
            await join(
                stack,
                subs,
                Subscriber("resumes f.#", pool, ("f.#",), last_event_id=early),
                Subscriber("resumes two", pool, PATTERNS[2], last_event_id=early),
                Subscriber("since first", pool, ("f.b.*",), since_first=True),
            )
            publisher.start(interval=0.01)
            await publisher.wait_confirmed(150)
            timings.mark("stop_app")
            async with rabbitmq_stopped():
                await wait_ready(gw.url, ready=False)
                # a client resuming while the broker is away is served from the ring
                away = Subscriber("resumes while away", pool, ("f.*.x",), last_event_id=early)
                await join(stack, subs, away, past=early)
                await asyncio.sleep(2)
            timings.mark("started again")
            await flowing(subs, publisher, "the broker came back")
            timings.mark("flowing again")
            await wait_ready(gw.url)
            total = await publisher.stop(more=100)
            timings.mark(f"{total} confirmed")
            truth = await read_stream([AMQP_URL], names.stream, total)
            # read it back from the beginning through the gateway, after the fault
            await read_back(stack, pool, subs, truth)
            timings.mark("caught up")
        repeats = check_sequence(truth, total)
        assert_exact(subs, truth, [gw])
        assert publisher.failures, "the restart should have cost the publisher some attempts"
        # connected clients rode the restart out on their first connection
        assert all(len(s.connections) == 1 for s in subs[:4]), [s.describe() for s in subs]
    timings.show(f"broker restart ({repeats} numbers stored twice)")
