"""What the hostile-input tests share: a gateway held at its one-stream limit.

Subscriptions that pass validation would stream forever; each gateway here runs
with ``max_connections=1`` and one held stream, so every further valid
subscription gets the finite "come back later" answer (200, ``retry:``, end).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from hopcast._broker.memory import MemoryBroker
from hopcast._core.settings import Settings
from tests.support.clients import Listener
from tests.support.gateways import Gateway, serve_in_loop

PROBLEM = "application/problem+json"
IO_TIMEOUT = 30.0
"""Generous: these tests check that the gateway answers, never how fast."""


async def published(broker: MemoryBroker) -> int:
    """How many events the broker holds: offsets grow from 0 and nothing is trimmed here."""
    tail = await broker.tail()
    return 0 if tail is None else tail + 1


@contextlib.asynccontextmanager
async def full_gateway(settings: Settings, *, server: str = "native") -> AsyncIterator[Gateway]:
    """A gateway at its one-stream limit: valid subscriptions get 200, ``retry:`` and the end."""
    assert settings.max_connections == 1
    async with (
        serve_in_loop(settings, MemoryBroker(), server=server) as gw,
        Listener(f"{gw.url}/events/news.held") as held,
    ):
        await held.wait_until(lambda s: s.stream.retry is not None, IO_TIMEOUT)
        assert held.status == 200
        yield gw
        assert not held.ended.is_set(), "the held stream was dropped"
