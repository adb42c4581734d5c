"""Catch-up readers: one that loses its connection while retention moves on tells its client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

from hopcast._broker.base import Message, StartAt
from hopcast._broker.memory import MemoryBroker, _MemoryReader
from hopcast._core.errors import BrokerUnavailable
from hopcast._core.settings import Settings
from hopcast._core.topics import Pattern
from hopcast._hub.hub import Hub
from tests.hub.kit import read_until
from tests.support.waits import until


class CutMidRead(MemoryBroker):
    """The first catch-up read loses its connection after offset ``cut_after``, once ``cut``
    is set; the reads after it go as usual."""

    def __init__(self, *, max_length: int, cut_after: int) -> None:
        super().__init__(max_length=max_length)
        self.cut_after = cut_after
        self.cut = asyncio.Event()
        self.cuts = 0

    def read(self, start: StartAt, *, purpose: str = "live") -> _MemoryReader:
        if purpose == "catch-up" and not self.cuts:
            return CutRead(self, start)
        return super().read(start, purpose=purpose)


class CutRead(_MemoryReader):
    def __init__(self, broker: CutMidRead, start: StartAt) -> None:
        super().__init__(broker, start)
        self._cutting = broker

    async def __aiter__(self) -> AsyncIterator[Sequence[Message]]:
        async for batch in super().__aiter__():
            for msg in batch:
                if msg.offset > self._cutting.cut_after:
                    await self._cutting.cut.wait()
                    self._cutting.cuts += 1
                    raise BrokerUnavailable("the connection was lost")
                yield [msg]


async def test_a_catch_up_that_comes_back_after_retention_passed_tells_its_client() -> None:
    broker = CutMidRead(max_length=100, cut_after=10)
    for n in range(30):
        broker.append("t", b"%d" % n, None)
    hub_settings = Settings.from_env({"HOPCAST_BROKER": "memory://", "HOPCAST_RING_SIZE": "5"})
    async with Hub(broker, hub_settings) as hub:
        await until(lambda: hub.ready and hub.position == 29, "the hub ready")
        sub = hub.subscribe([Pattern.parse("t")], after=2)
        await sub.start()  # the ring holds 25-29: a catch-up reader from 2
        first = await read_until(sub, "10")  # ... which stops there, its connection lost
        for n in range(30, 180):
            broker.append("t", b"%d" % n, None)  # meanwhile the stream moves to 80-179
        broker.cut.set()
        rest = await read_until(sub, "179")
    assert [e.data for e in first] == [str(n) for n in range(3, 11)]
    missed, *after = rest
    assert (missed.type, missed.last_event_id) == ("hopcast-missed", "79")
    assert json.loads(missed.data) == {"reason": "retention", "requested": 10, "first": 80}
    assert [e.data for e in after] == [str(n) for n in range(80, 180)]
