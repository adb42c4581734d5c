"""The hub's pattern trie routes exactly as `Pattern.matches` (and so as RabbitMQ)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hopcast._core.topics import Pattern
from hopcast._hub.patterns import PatternTrie
from hopcast._hub.subscription import Subscription
from tests.hub.kit import memory_hub
from tests.support.rounds import rounds

WORDS = st.sampled_from(["a", "b", "c"])
PATTERN_WORDS = st.sampled_from(["a", "b", "*", "#"])


@rounds(300)
@given(
    patterns=st.lists(st.lists(PATTERN_WORDS, min_size=1, max_size=4), min_size=1, max_size=6),
    topics=st.lists(st.lists(WORDS, min_size=0, max_size=5), min_size=1, max_size=10),
)
def test_trie_matches_like_patterns(patterns: list[list[str]], topics: list[list[str]]) -> None:
    hub = memory_hub()
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


def test_one_subscription_with_overlapping_patterns_is_matched_once() -> None:
    hub = memory_hub()
    trie: PatternTrie[Subscription] = PatternTrie()
    sub = hub.subscribe([Pattern.parse("a.*"), Pattern.parse("#"), Pattern.parse("a.b")])
    trie.add(sub)
    assert trie.match("a.b") == (sub,)


def test_nested_hashes_do_not_explode() -> None:
    hub = memory_hub()
    trie: PatternTrie[Subscription] = PatternTrie()
    trie.add(hub.subscribe([Pattern.parse(".".join(["#"] * 12 + ["x"]))]))
    # the exponential walk took seconds on a third of this; the suite's timeout catches a relapse
    assert trie.match(".".join(["a"] * 60)) == ()
