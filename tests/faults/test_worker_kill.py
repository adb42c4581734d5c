"""Fault 3: a gateway worker is killed with SIGKILL; its clients resume on another worker."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
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
from tests.support.processes import ChildGateway, child_gateway, client_ports
from tests.support.rabbitmq import AMQP_URL, Names
from tests.support.waits import until, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]


async def test_a_killed_worker_s_clients_resume_on_another(names: Names, tmp_path: Path) -> None:
    timings = Timings()
    env = {**names.env(), "HOPCAST_RETRY": "300"}
    with child_gateway(env, "--workers", "2", log_dir=tmp_path) as gw:
        await wait_ready(gw.url)
        await until(lambda: len(gw.workers()) == 2, "two workers")
        timings.mark("gateway ready")
        pool = Pool(gw.url)
        async with contextlib.AsyncExitStack() as stack:
            publisher = await stack.enter_async_context(Publisher(names.exchange))
            subs, early = await open_fresh(stack, pool, publisher, PATTERNS, copies=2)
            await join(
                stack,
                subs,
                Subscriber("resumes f.#", pool, ("f.#",), last_event_id=early),
                Subscriber("resumes two", pool, PATTERNS[2], last_event_id=early),
                Subscriber("since first", pool, ("f.a.*",), since_first=True),
                past=early,
            )
            timings.mark("subscribers in place")
            publisher.start(interval=0.01)
            await publisher.wait_confirmed(100)

            moved = await _kill_each_worker(gw, subs, publisher, timings)
            total = await publisher.stop(more=100)
            truth = await read_stream([AMQP_URL], names.stream, total)
            after = await read_back(stack, pool, subs, truth)
            timings.mark(f"{total} caught up")
        check_sequence(truth, total)
        assert_exact(subs, truth, [gw])
        for sub in subs:
            if sub in moved:  # its connection broke, and it resumed
                assert sub.connections[0].ended != "", sub.describe()
                assert len(sub.connections) >= 2, sub.describe()
            elif sub is not after:
                assert len(sub.connections) == 1, sub.describe()
    timings.show("worker kill")


async def _kill_each_worker(
    gw: ChildGateway, subs: list[Subscriber], publisher: Publisher, timings: Timings
) -> set[Subscriber]:
    """SIGKILL each original worker in turn; the subscribers that were on one of them.

    The busier worker first; then the other one, whose clients (by then nearly all of
    them) can only resume on the worker the supervisor started in the meantime.
    """
    originals = gw.workers()
    busy = {pid: len(client_ports(pid, gw.port)) for pid in originals}
    moved: set[Subscriber] = set()
    for round_, victim in enumerate(sorted(originals, key=lambda p: -busy[p]), 1):
        ports = client_ports(victim, gw.port)
        on_victim = [s for s in subs if s.connections[-1].local_port in ports]
        assert on_victim, (ports, [s.connections[-1].local_port for s in subs])
        seen = {sub: len(sub.connections) for sub in on_victim}
        os.kill(victim, signal.SIGKILL)
        timings.mark(f"killed worker {round_}, serving {len(on_victim)} of {len(subs)}")
        await until(_replaced(gw, victim), "the supervisor starts another worker")
        for sub in on_victim:
            await sub.wait_connections(seen[sub] + 1)
        await flowing(subs, publisher, f"worker kill {round_}")
        timings.mark(f"flowing again after kill {round_}")
        moved.update(on_victim)
    return moved


def _replaced(gw: ChildGateway, victim: int) -> Callable[[], bool]:
    return lambda: len(gw.workers()) == 2 and victim not in gw.workers()
