"""Fault 2: the broker connection goes silent without a close; the AMQP heartbeat must notice.

A proxy in the test stands between the gateway and RabbitMQ and, on command,
stops forwarding in both directions while keeping every socket open. The
publisher talks to RabbitMQ directly, so events keep arriving in the stream.
"""

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
from tests.support.proxy import BlackHoleProxy
from tests.support.rabbitmq import AMQP_URL, Names, amqp_host_port
from tests.support.waits import wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]


@pytest.mark.parametrize("route", ["failover", "heal"])
async def test_a_silent_broker_link_is_noticed_and_nothing_is_lost(
    route: str, names: Names, tmp_path: Path
) -> None:
    """``failover``: brokers ``[proxy, direct]``; ``heal``: the proxy alone, healed later."""
    timings = Timings()
    host, port = amqp_host_port()
    async with contextlib.AsyncExitStack() as stack:
        proxy = await stack.enter_async_context(BlackHoleProxy(host, port))
        gw = stack.enter_context(child_gateway(_env(names, proxy, route), log_dir=tmp_path))
        await wait_ready(gw.url)
        pool = Pool(gw.url)
        publisher = await stack.enter_async_context(Publisher(names.exchange))
        subs, early = await open_fresh(stack, pool, publisher, PATTERNS)
        await join(
            stack,
            subs,
            Subscriber("resumes f.#", pool, ("f.#",), last_event_id=early),
            Subscriber("since first", pool, ("f.c.*",), since_first=True),
        )
        publisher.start(interval=0.02)
        await publisher.wait_confirmed(100)
        assert len(proxy.links) >= 2  # the gateway's connections run through the proxy
        proxy.black_hole()
        timings.mark("black hole")
        if route == "heal":
            # nothing closes the link: only the AMQP heartbeat can tell the gateway
            await wait_ready(gw.url, ready=False, timeout=60)
            timings.mark("noticed")
            away = Subscriber("resumes while away", pool, ("f.a.#",), last_event_id=early)
            await join(stack, subs, away, past=early)
            await asyncio.sleep(1)
            proxy.heal()
            timings.mark("healed")
        # events published after the cut reach clients only through a new connection
        await flowing(subs, publisher, "the black hole" if route == "failover" else "healing")
        timings.mark("flowing again")
        await wait_ready(gw.url)
        total = await publisher.stop(more=50)
        truth = await read_stream([AMQP_URL], names.stream, total)
        await read_back(stack, pool, subs, truth)
        timings.mark(f"{total} caught up")
        check_sequence(truth, total)
        assert_exact(subs, truth, [gw])
        assert all(len(s.connections) == 1 for s in subs[:4]), [s.describe() for s in subs]
    timings.show(f"black hole ({route})")


def _env(names: Names, proxy: BlackHoleProxy, route: str) -> dict[str, str]:
    """The gateway reaches RabbitMQ through the proxy, and with ``failover`` directly next."""
    brokers = [f"amqp://guest:guest@127.0.0.1:{proxy.port}/"]
    if route == "failover":
        brokers.append(AMQP_URL)
    return {
        **names.env(),
        "HOPCAST_BROKER": ",".join(brokers),
        "HOPCAST_AMQP_HEARTBEAT": "2",
        "HOPCAST_RETRY": "300",
    }
