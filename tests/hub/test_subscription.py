"""A subscription with several patterns matches a topic when any of them does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hopcast._core.topics import Pattern
from tests.hub.kit import memory_hub
from tests.support.rounds import rounds

WORDS = st.sampled_from(["a", "b", "c"])
PATTERN_WORDS = st.sampled_from(["a", "b", "*", "#"])


@rounds(300)
@given(
    patterns=st.lists(st.lists(PATTERN_WORDS, min_size=1, max_size=4), min_size=1, max_size=4),
    topics=st.lists(st.lists(WORDS, min_size=0, max_size=5), min_size=1, max_size=10),
)
def test_a_subscription_matches_as_its_patterns_do(
    patterns: list[list[str]], topics: list[list[str]]
) -> None:
    parsed = [Pattern.parse(".".join(p)) for p in patterns]
    sub = memory_hub().subscribe(parsed)
    for words in topics:
        topic = ".".join(words)
        assert sub.matches(topic) == any(p.matches(topic) for p in parsed), topic
