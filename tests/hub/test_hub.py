"""The hub's live reader: a reconnect, a broker slow to answer, and retention passing it by."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

from hopcast._broker.base import Message, StartAt
from hopcast._broker.memory import MemoryBroker, _MemoryReader
from hopcast._core.settings import Settings
from hopcast._core.topics import Pattern
from hopcast._hub.hub import Hub
from tests.hub.kit import read_until
from tests.support.waits import until


class SlowToShowItsTail(MemoryBroker):
    """A broker whose quick look at the stream's tail finds nothing, as a loaded RabbitMQ's
    may: its first delivery is late, and a probe that stops waiting calls the stream empty."""

    async def tail(self, *, patient: bool = False) -> int | None:
        return await super().tail() if patient else None


async def test_a_broker_slow_to_show_its_tail_is_not_taken_for_a_recreated_stream() -> None:
    broker = SlowToShowItsTail()
    for n in range(5):
        broker.append("t", b"%d" % n, None)
    async with Hub(broker, Settings.from_env({"HOPCAST_BROKER": "memory://"})) as hub:
        await until(lambda: hub.ready and hub.position == 4, "the stream read")
        await broker.aclose()  # the connection drops; the hub reconnects and checks the tail
        await until(lambda: hub.stats.reconnects >= 1 and hub.ready, "the hub back")
        broker.append("t", b"5", None)
        await until(lambda: hub.position == 5, "the new event read")
        # each event read once: a stream taken for recreated is read again from the start
        assert hub.stats.events == 6


class HeldBack(MemoryBroker):
    """A broker whose reads deliver nothing until ``release`` is set, as a slow one's may."""

    def __init__(self, *, max_length: int) -> None:
        super().__init__(max_length=max_length)
        self.release = asyncio.Event()

    def read(self, start: StartAt, *, purpose: str = "live") -> _MemoryReader:
        return HeldRead(self, start, self.release)


class HeldRead(_MemoryReader):
    def __init__(self, broker: MemoryBroker, start: StartAt, release: asyncio.Event) -> None:
        super().__init__(broker, start)
        self._release = release

    async def __aiter__(self) -> AsyncIterator[Sequence[Message]]:
        await self._release.wait()
        async for batch in super().__aiter__():
            yield batch


async def test_a_resume_into_events_the_stream_no_longer_holds_is_told_so() -> None:
    """A resume placed while the hub fills its ring, from a point retention has taken:
    the stream then starts later than the hub asked, and the client must hear of the gap."""
    broker = HeldBack(max_length=10)
    for n in range(30):
        broker.append("t", b"%d" % n, None)  # offsets 0-29; the stream keeps 20-29
    hub_settings = Settings.from_env({"HOPCAST_BROKER": "memory://", "HOPCAST_RING_SIZE": "100"})
    async with Hub(broker, hub_settings) as hub:
        sub = hub.subscribe([Pattern.parse("t")], after=5)
        await sub.start()
        assert await sub.next_chunk(timeout=0.05) is None  # live, waiting for the reader
        broker.release.set()
        events = await read_until(sub, "29")
    missed, *rest = events
    assert (missed.type, missed.last_event_id) == ("hopcast-missed", "19")
    assert json.loads(missed.data) == {"reason": "retention", "requested": 5, "first": 20}
    assert [(e.last_event_id, e.data) for e in rest] == [(str(n), str(n)) for n in range(20, 30)]


async def test_a_live_reader_that_comes_back_after_retention_passed_tells_its_clients() -> None:
    broker = HeldBack(max_length=10)
    broker.release.set()
    hub_settings = Settings.from_env({"HOPCAST_BROKER": "memory://", "HOPCAST_RING_SIZE": "100"})
    async with Hub(broker, hub_settings) as hub:
        await until(lambda: hub.ready, "the hub ready")
        sub = hub.subscribe([Pattern.parse("t")])
        await sub.start()
        for n in range(3):
            broker.append("t", b"%d" % n, None)
        assert [e.data for e in await read_until(sub, "2")] == ["0", "1", "2"]
        broker.release.clear()
        await broker.aclose()  # the connection drops; meanwhile retention passes the hub
        await until(lambda: hub.stats.reconnects >= 1, "the reader gone")
        await broker.start()
        for n in range(3, 30):
            broker.append("t", b"%d" % n, None)  # offsets 3-29; the stream keeps 20-29
        broker.release.set()
        events = await read_until(sub, "29")
    missed, *rest = events
    assert (missed.type, missed.last_event_id) == ("hopcast-missed", "19")
    assert json.loads(missed.data) == {"reason": "retention", "requested": 2, "first": 20}
    assert [e.data for e in rest] == [str(n) for n in range(20, 30)]
