"""The hub's pattern trie routes exactly as `Pattern.matches` (and so as RabbitMQ)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hopcast.broker.memory import MemoryBroker
from hopcast.config import Settings
from hopcast.hub import Hub
from hopcast.subscription import Subscription
from hopcast.topics import Pattern
from hopcast.trie import PatternTrie
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
    trie = PatternTrie()
    subs = [Subscription(hub, [Pattern.parse(".".join(p))], None, None) for p in patterns]
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
    sub = Subscription(_hub(), parsed, None, None)
    for words in topics:
        topic = ".".join(words)
        assert sub.matches(topic) == any(p.matches(topic) for p in parsed), topic


def test_one_subscription_with_overlapping_patterns_is_matched_once() -> None:
    hub = _hub()
    trie = PatternTrie()
    sub = Subscription(
        hub, [Pattern.parse("a.*"), Pattern.parse("#"), Pattern.parse("a.b")], None, None
    )
    trie.add(sub)
    assert trie.match("a.b") == (sub,)


def test_nested_hashes_do_not_explode() -> None:
    hub = _hub()
    trie = PatternTrie()
    trie.add(Subscription(hub, [Pattern.parse(".".join(["#"] * 12 + ["x"]))], None, None))
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
