"""The hub's pattern trie routes exactly as `Pattern.matches` (and so as RabbitMQ)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from hopcast._broker.base import Message, Pace, StartAt
from hopcast._broker.memory import MemoryBroker, _MemoryReader
from hopcast._core.errors import BrokerUnavailable
from hopcast._core.settings import Settings
from hopcast._core.topics import Pattern
from hopcast._hub.hub import Hub
from hopcast._hub.patterns import PatternTrie
from hopcast._hub.subscription import Subscription
from tests import sse_spec
from tests.support import until

WORDS = st.sampled_from(["a", "b", "c"])
PATTERN_WORDS = st.sampled_from(["a", "b", "*", "#"])


def _hub() -> Hub:
    return Hub(MemoryBroker(), Settings.from_env({"HOPCAST_BROKER": "memory://"}))


@settings(max_examples=300, deadline=None)
@given(
    patterns=st.lists(st.lists(PATTERN_WORDS, min_size=1, max_size=4), min_size=1, max_size=6),
    topics=st.lists(st.lists(WORDS, min_size=0, max_size=5), min_size=1, max_size=10),
)
def test_trie_matches_like_patterns(patterns: list[list[str]], topics: list[list[str]]) -> None:
    hub = _hub()
    trie: PatternTrie[Subscription] = PatternTrie()
    subs = [hub.subscribe([Pattern.parse(".".join(p))]) for p in patterns]
    for sub in subs:
        trie.add(sub)
    for words in topics:
        topic = ".".join(words)
        expected = {s for s in subs if s.patterns[0].matches(topic)}
        assert set(trie.match(topic)) == expected, topic
    for sub in subs[::2]:
        trie.remove(sub)
    for words in topics:
        topic = ".".join(words)
        expected = {s for s in subs[1::2] if s.patterns[0].matches(topic)}
        assert set(trie.match(topic)) == expected, topic


@settings(max_examples=300, deadline=None)
@given(
    patterns=st.lists(st.lists(PATTERN_WORDS, min_size=1, max_size=4), min_size=1, max_size=4),
    topics=st.lists(st.lists(WORDS, min_size=0, max_size=5), min_size=1, max_size=10),
)
def test_a_subscription_matches_as_its_patterns_do(
    patterns: list[list[str]], topics: list[list[str]]
) -> None:
    parsed = [Pattern.parse(".".join(p)) for p in patterns]
    sub = _hub().subscribe(parsed)
    for words in topics:
        topic = ".".join(words)
        assert sub.matches(topic) == any(p.matches(topic) for p in parsed), topic


def test_one_subscription_with_overlapping_patterns_is_matched_once() -> None:
    hub = _hub()
    trie: PatternTrie[Subscription] = PatternTrie()
    sub = hub.subscribe([Pattern.parse("a.*"), Pattern.parse("#"), Pattern.parse("a.b")])
    trie.add(sub)
    assert trie.match("a.b") == (sub,)


def test_nested_hashes_do_not_explode() -> None:
    hub = _hub()
    trie: PatternTrie[Subscription] = PatternTrie()
    trie.add(hub.subscribe([Pattern.parse(".".join(["#"] * 12 + ["x"]))]))
    # the exponential walk took seconds on a third of this; the suite's timeout catches a relapse
    assert trie.match(".".join(["a"] * 60)) == ()


class _SlowToShowItsTail(MemoryBroker):
    """A broker whose quick look at the stream's tail finds nothing, as a loaded RabbitMQ's
    may: its first delivery is late, and a probe that stops waiting calls the stream empty."""

    async def tail(self, *, patient: bool = False) -> int | None:
        return await super().tail() if patient else None


async def test_a_broker_slow_to_show_its_tail_is_not_taken_for_a_recreated_stream() -> None:
    broker = _SlowToShowItsTail()
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


class _HeldBack(MemoryBroker):
    """A broker whose reads deliver nothing until ``release`` is set, as a slow one's may."""

    def __init__(self, *, max_length: int) -> None:
        super().__init__(max_length=max_length)
        self.release = asyncio.Event()

    def read(
        self, start: StartAt, *, purpose: str = "live", pace: Pace | None = None
    ) -> _MemoryReader:
        return _HeldRead(self, start, self.release)


class _HeldRead(_MemoryReader):
    def __init__(self, broker: MemoryBroker, start: StartAt, release: asyncio.Event) -> None:
        super().__init__(broker, start)
        self._release = release

    async def __aiter__(self) -> AsyncIterator[Sequence[Message]]:
        await self._release.wait()
        async for batch in super().__aiter__():
            yield batch


async def _read_until(sub: Subscription, last_id: str) -> list[sse_spec.Event]:
    received = b""
    while True:
        chunk = await sub.next_chunk(timeout=60)
        assert chunk is not None, received
        received += chunk
        events = sse_spec.parse(received).events
        if events and events[-1].last_event_id == last_id:
            return list(events)


async def test_a_resume_into_events_the_stream_no_longer_holds_is_told_so() -> None:
    """A resume placed while the hub fills its ring, from a point retention has taken:
    the stream then starts later than the hub asked, and the client must hear of the gap."""
    broker = _HeldBack(max_length=10)
    for n in range(30):
        broker.append("t", b"%d" % n, None)  # offsets 0-29; the stream keeps 20-29
    hub_settings = Settings.from_env({"HOPCAST_BROKER": "memory://", "HOPCAST_RING_SIZE": "100"})
    async with Hub(broker, hub_settings) as hub:
        sub = hub.subscribe([Pattern.parse("t")], after=5)
        await sub.start()
        assert await sub.next_chunk(timeout=0.05) is None  # live, waiting for the reader
        broker.release.set()
        events = await _read_until(sub, "29")
    missed, *rest = events
    assert (missed.type, missed.last_event_id) == ("hopcast-missed", "19")
    assert json.loads(missed.data) == {"reason": "retention", "requested": 5, "first": 20}
    assert [(e.last_event_id, e.data) for e in rest] == [(str(n), str(n)) for n in range(20, 30)]


async def test_a_live_reader_that_comes_back_after_retention_passed_tells_its_clients() -> None:
    broker = _HeldBack(max_length=10)
    broker.release.set()
    hub_settings = Settings.from_env({"HOPCAST_BROKER": "memory://", "HOPCAST_RING_SIZE": "100"})
    async with Hub(broker, hub_settings) as hub:
        await until(lambda: hub.ready, "the hub ready")
        sub = hub.subscribe([Pattern.parse("t")])
        await sub.start()
        for n in range(3):
            broker.append("t", b"%d" % n, None)
        assert [e.data for e in await _read_until(sub, "2")] == ["0", "1", "2"]
        broker.release.clear()
        await broker.aclose()  # the connection drops; meanwhile retention passes the hub
        await until(lambda: hub.stats.reconnects >= 1, "the reader gone")
        await broker.start()
        for n in range(3, 30):
            broker.append("t", b"%d" % n, None)  # offsets 3-29; the stream keeps 20-29
        broker.release.set()
        events = await _read_until(sub, "29")
    missed, *rest = events
    assert (missed.type, missed.last_event_id) == ("hopcast-missed", "19")
    assert json.loads(missed.data) == {"reason": "retention", "requested": 2, "first": 20}
    assert [e.data for e in rest] == [str(n) for n in range(20, 30)]


class _CutMidRead(MemoryBroker):
    """The first catch-up read loses its connection after offset ``cut_after``, once ``cut``
    is set; the reads after it go as usual."""

    def __init__(self, *, max_length: int, cut_after: int) -> None:
        super().__init__(max_length=max_length)
        self.cut_after = cut_after
        self.cut = asyncio.Event()
        self.cuts = 0

    def read(
        self, start: StartAt, *, purpose: str = "live", pace: Pace | None = None
    ) -> _MemoryReader:
        if purpose == "catch-up" and not self.cuts:
            return _CutRead(self, start)
        return super().read(start, purpose=purpose)


class _CutRead(_MemoryReader):
    def __init__(self, broker: _CutMidRead, start: StartAt) -> None:
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
    broker = _CutMidRead(max_length=100, cut_after=10)
    for n in range(30):
        broker.append("t", b"%d" % n, None)
    hub_settings = Settings.from_env({"HOPCAST_BROKER": "memory://", "HOPCAST_RING_SIZE": "5"})
    async with Hub(broker, hub_settings) as hub:
        await until(lambda: hub.ready and hub.position == 29, "the hub ready")
        sub = hub.subscribe([Pattern.parse("t")], after=2)
        await sub.start()  # the ring holds 25-29: a catch-up reader from 2
        first = await _read_until(sub, "10")  # ... which stops there, its connection lost
        for n in range(30, 180):
            broker.append("t", b"%d" % n, None)  # meanwhile the stream moves to 80-179
        broker.cut.set()
        rest = await _read_until(sub, "179")
    assert [e.data for e in first] == [str(n) for n in range(3, 11)]
    missed, *after = rest
    assert (missed.type, missed.last_event_id) == ("hopcast-missed", "79")
    assert json.loads(missed.data) == {"reason": "retention", "requested": 10, "first": 80}
    assert [e.data for e in after] == [str(n) for n in range(80, 180)]
