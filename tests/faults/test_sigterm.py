"""Fault 4: SIGTERM. The gateway ends its streams with a spread-out ``retry:``, stops within its
grace period, and its clients resume on another instance (same exchange and stream) without loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
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
    events_path,
    flowing,
    join,
    open_fresh,
    read_back,
)
from tests.faults.timings import Timings
from tests.support.processes import ChildGateway, child_gateway
from tests.support.rabbitmq import AMQP_URL, Names
from tests.support.waits import wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]

RETRY_MS = 1000
GRACE = 3.0


async def test_sigterm_sends_clients_to_another_instance_without_loss(
    names: Names, tmp_path: Path
) -> None:
    timings = Timings()
    env = {
        **names.env(),
        "HOPCAST_RETRY": str(RETRY_MS),
        "HOPCAST_SHUTDOWN_GRACE": str(GRACE),
    }
    with (
        child_gateway(env, log_dir=tmp_path, label="a") as a,
        child_gateway(env, log_dir=tmp_path, label="b") as b,
    ):
        await wait_ready(a.url)
        await wait_ready(b.url)
        pool = Pool(a.url, b.url)  # a load balancer: connections alternate between the two
        async with contextlib.AsyncExitStack() as stack:
            publisher = await stack.enter_async_context(Publisher(names.exchange))
            subs, early = await open_fresh(stack, pool, publisher, PATTERNS, copies=2)
            await join(
                stack,
                subs,
                Subscriber("resumes f.#", pool, ("f.#",), last_event_id=early),
                Subscriber("resumes two", pool, PATTERNS[2], last_event_id=early),
                Subscriber("since first", pool, ("f.b.x",), since_first=True),
                Subscriber("since first too", pool, ("f.*.y",), since_first=True),
                past=early,
            )
            publisher.start(interval=0.01)
            await publisher.wait_confirmed(100)

            on_a = [s for s in subs if s.connections[-1].url == a.url]
            assert len(on_a) >= 5, [s.connections[-1].url for s in subs]
            pool.drain(a.url)  # the balancer sends new connections elsewhere
            code, stopped_after, late = await _stop_with_sigterm(a, timings)
            for sub in on_a:
                await sub.wait_connections(2)
            await flowing(subs, publisher, "SIGTERM")
            timings.mark("all resumed on b")
            total = await publisher.stop(more=100)
            truth = await read_stream([AMQP_URL], names.stream, total)
            await read_back(stack, pool, subs, truth)
            timings.mark(f"{total} caught up")
        check_sequence(truth, total)
        assert_exact(subs, truth, [a, b])

        assert code in (0, -signal.SIGTERM), a.log_tail()
        # a server that waited for its endless streams would never stop; this one ends them
        assert stopped_after < GRACE + 10, a.log_tail()
        hints = _retry_hints(on_a, b.url)
        assert all(RETRY_MS <= h <= 3 * RETRY_MS for h in hints), hints
        assert len(set(hints)) > 1, hints  # spread, so that they do not all come back at once
        assert late in ("refused", "sent away"), late
    timings.show(f"SIGTERM (late subscriber: {late}; retry hints {sorted(hints)})")


async def _stop_with_sigterm(gw: ChildGateway, timings: Timings) -> tuple[int, float, str]:
    """SIGTERM, then a late subscription; its exit code, how long it took, the late one's fate."""
    began = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    timings.mark("SIGTERM")
    late = await _subscribe_during_shutdown(gw.url)
    code = await asyncio.to_thread(gw.proc.wait, 60)
    stopped_after = time.monotonic() - began
    timings.mark(f"stopped ({stopped_after:.1f} s)")
    return code, stopped_after, late


def _retry_hints(sent_away: Sequence[Subscriber], other_url: str) -> list[int]:
    """The ``retry:`` each of ``sent_away`` was told as the gateway ended its stream.

    Each stream was ended by the gateway, not broken, after the preamble's hint and
    one more; each subscriber then resumed on the other gateway.
    """
    hints = []
    for sub in sent_away:
        ended = sub.connections[0]
        assert ended.ended == "eof", sub.describe()
        assert ended.retries[0] == RETRY_MS and len(ended.retries) == 2, ended
        hints.append(ended.retries[-1])
        assert sub.connections[1].url == other_url
    return hints


async def _subscribe_during_shutdown(url: str) -> str:
    """A subscription that arrives once SIGTERM was sent: refused, or told to come back later."""
    async with httpx.AsyncClient(timeout=10) as http:
        try:
            response = await http.get(url + events_path(("f.#",)))
        except httpx.TimeoutException:
            return "hung"  # neither refused nor ended: a client left waiting
        except httpx.TransportError:
            return "refused"
    last_line = response.content.rstrip(b"\n").rsplit(b"\n", 1)[-1]
    if response.status_code == 200 and last_line.startswith(b"retry: "):
        return "sent away"
    return f"{response.status_code}: {response.content[-200:]!r}"
