"""Topic matching and pattern containment, against independent references.

``reference_match`` is RabbitMQ's topic matching written out word by word, and a real
RabbitMQ topic exchange routes as `Pattern.matches` does; containment is checked by
brute force over every short topic.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from functools import cache

import aiormq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pamqp import commands as spec

from hopcast._core.topics import Pattern, parse_topic
from tests.support.rabbitmq import AMQP_URL
from tests.support.rounds import rounds

FAST = rounds(300)


def reference_match(pattern: tuple[str, ...], topic: tuple[str, ...]) -> bool:
    """RabbitMQ topic-exchange matching, word by word: ``*`` one word, ``#`` zero or more."""
    if not pattern:
        return not topic
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return reference_match(rest, topic) or (bool(topic) and reference_match(pattern, topic[1:]))
    if not topic:
        return False
    return head in ("*", topic[0]) and reference_match(rest, topic[1:])


# Matching


def test_matching_examples() -> None:
    cases = {
        "orders.*": {"orders.42": True, "orders": False, "orders.42.paid": False},
        "orders.#": {"orders": True, "orders.42": True, "orders.42.paid": True, "order": False},
        "#": {"a": True, "a.b.c": True},
        "*": {"a": True, "a.b": False},
        "#.paid": {"paid": True, "orders.42.paid": True, "paid.x": False},
        "a.#.b": {"a.b": True, "a.x.y.b": True, "a.b.x": False, "b.a.b": False},
        "*.*": {"a": False, "a.b": True, "a.b.c": False},
        "#.#": {"a": True, "a.b.c": True},
        "a.*.#": {"a": False, "a.b": True, "a.b.c": True},
        "Orders.*": {"orders.1": False, "Orders.1": True},
        "a": {"ab": False, "a": True, "a.a": False},
    }
    for pattern, topics in cases.items():
        for topic, expected in topics.items():
            assert Pattern.parse(pattern).matches(topic) is expected, (pattern, topic)


def test_matching_routing_keys_that_are_not_topics() -> None:
    # An AMQP publisher may send these; RabbitMQ reads '' as no word and 'a..b' as an empty
    # middle word (test_patterns_route_like_rabbitmq checks this on the broker).
    cases = {
        "": {"#": True, "#.#": True, "*": False, "*.#": False, "a.#": False},
        "a..b": {"a.*.b": True, "a.#.b": True, "a.b": False, "*.*.*": True},
        "a.": {"a.*": True, "a": False, "a.#": True},
        ".": {"*.*": True, "*": False, "#": True},
        "a.*": {"a.*": True, "a.b": False, "*.*": True},
    }
    for key, patterns in cases.items():
        for pattern, expected in patterns.items():
            assert Pattern.parse(pattern).matches(key) is expected, (pattern, key)


small_pattern_words = st.lists(st.sampled_from(["a", "b", "*", "#"]), min_size=1, max_size=6)
small_topic_words = st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=7)


@FAST
@given(small_pattern_words, small_topic_words)
def test_matches_agrees_with_reference(pattern: list[str], topic: list[str]) -> None:
    parsed = Pattern.parse(".".join(pattern))
    assert parsed.matches(".".join(topic)) == reference_match(tuple(pattern), tuple(topic))


@FAST
@given(small_pattern_words, st.lists(st.sampled_from(["a", "b", ""]), max_size=5))
def test_matches_any_routing_key_like_reference(pattern: list[str], key_words: list[str]) -> None:
    key = ".".join(key_words)
    as_rabbitmq_splits = tuple(key.split(".")) if key else ()
    parsed = Pattern.parse(".".join(pattern))
    assert parsed.matches(key) == reference_match(tuple(pattern), as_rabbitmq_splits)


valid_words = st.text(st.sampled_from("abcXYZ019_:-"), min_size=1, max_size=64)
TOPIC_WORD = "<the topic's word here>"


@FAST
@given(
    st.lists(
        st.one_of(st.sampled_from(["*", "#", TOPIC_WORD]), valid_words), min_size=1, max_size=5
    ),
    st.lists(valid_words, min_size=1, max_size=6),
)
def test_matches_agrees_with_reference_on_real_words(pattern: list[str], topic: list[str]) -> None:
    # Take some words of the topic into the pattern so that not every case is a miss.
    merged = [topic[i % len(topic)] if w == TOPIC_WORD else w for i, w in enumerate(pattern)]
    text = ".".join(merged)
    if len(text) > 255 or len(".".join(topic)) > 255:
        return
    parsed = Pattern.parse(text)
    assert parsed.matches(".".join(topic)) == reference_match(tuple(merged), tuple(topic))


def test_matching_is_linear_not_backtracking() -> None:
    # A pattern of many '#' against a long topic that ends wrong: a backtracking matcher
    # tries every way of sharing the words among the '#'s and stalls the dispatcher
    # (the last case would not end); the suite's timeout catches a relapse.
    cases = [
        (".".join(["#"] * 10 + ["x"]), ".".join(["a"] * 30 + ["y"])),
        (".".join(["#", "a"] * 20 + ["x"]), ".".join(["a"] * 60 + ["y"])),
        (".".join(["#"] * 126 + ["x"]), ".".join(["a"] * 127)),
    ]
    for pattern, topic in cases:
        parsed = Pattern.parse(pattern)
        assert not parsed.matches(topic)
        assert parsed.matches(topic[:-1] + "x")


# Containment


def test_containment_examples() -> None:
    def inside(inner: str, outer: str) -> bool:
        return Pattern.parse(outer).contains(Pattern.parse(inner))

    assert inside("orders.*", "orders.#")
    assert not inside("orders.#", "orders.*")
    assert inside("orders", "orders.#")
    assert not inside("orders", "orders.*")
    assert inside("orders.42", "orders.*")
    assert not inside("orders.*", "orders.42")
    assert inside("a.b", "#")
    assert inside("a.b.c", "a.#.c")
    assert not inside("a.#.c", "a.*.c")
    assert inside("a.*.c", "a.#.c")
    assert inside("*.*", "#.*")
    assert not inside("*", "*.*")
    # '#' (every topic, each at least one word) is inside only what matches every topic.
    for outer in ["#", "*.#", "#.*", "#.#", "#.*.#", "#.#.*"]:
        assert inside("#", outer), outer
        assert inside(outer, "#"), outer
    for outer in ["*", "*.*.#", "a.#", "#.a", "*.*", "#.a.#", "#.*.*"]:
        assert not inside("#", outer), outer


def _all_topics(alphabet: Sequence[str], max_words: int) -> list[tuple[str, ...]]:
    return [
        topic for n in range(1, max_words + 1) for topic in itertools.product(alphabet, repeat=n)
    ]


# "c" is a word that no generated pattern names: it stands for every fresh word. Six words
# are enough for patterns of four: '*.*.a.#' leaves out '#.a.a.a' first at 'c.c.c.a.a.a'.
ALL_TOPICS = _all_topics(["a", "b", "c"], 6)
contain_words = st.lists(st.sampled_from(["a", "b", "*", "#"]), min_size=1, max_size=4)


@cache
def matched_topics(pattern: tuple[str, ...]) -> frozenset[tuple[str, ...]]:
    return frozenset(topic for topic in ALL_TOPICS if reference_match(pattern, topic))


@FAST
@given(contain_words, contain_words)
def test_contains_agrees_with_brute_force(outer: list[str], inner: list[str]) -> None:
    expected = matched_topics(tuple(inner)) <= matched_topics(tuple(outer))
    assert Pattern.parse(".".join(outer)).contains(Pattern.parse(".".join(inner))) == expected


def test_contains_needs_long_witnesses() -> None:
    # Every topic of up to five words that '#.a.a.a' matches has 'a' third; six words do not.
    assert not Pattern.parse("*.*.a.#").contains(Pattern.parse("#.a.a.a"))
    assert not Pattern.parse("#.a.*.*").contains(Pattern.parse("a.a.a.#"))


@FAST
@given(contain_words)
def test_contains_is_reflexive_and_inside_hash(pattern: list[str]) -> None:
    parsed = Pattern.parse(".".join(pattern))
    assert parsed.contains(parsed)
    assert Pattern.parse("#").contains(parsed)


# As a RabbitMQ topic exchange routes

ROUTED_PATTERNS = [
    "#",
    "*",
    "#.#",
    "#.#.#",
    "*.*",
    "*.*.*",
    "*.#",
    "#.*",
    "#.*.#",
    "*.#.*",
    "a",
    "a.b",
    "a.*",
    "*.a",
    "a.#",
    "#.a",
    "#.a.#",
    "a.#.b",
    "a.*.b",
    "a.#.#.b",
    "a.*.#",
    "a.#.*",
    "#.a.*.#",
    "#.b.#.a",
    "a.b.c.#",
    "A.b",
    "ab.*",
    "x-1:y_z.#",
    "#." + "w" * 64,
]

_LONG_WORD = "w" * 64
ROUTING_KEYS = [
    *(".".join(key) for n in (1, 2, 3) for key in itertools.product("abc", repeat=n)),
    "A",
    "A.b",
    "ab",
    "ab.c",
    "ab.c.d",
    "a.ab",
    "ba.a",
    "aa.b",
    "a:b",
    "a-b.b",
    "x-1:y_z",
    "x-1:y_z.a",
    "x-1:y_zz",
    "a.b.c.d",
    "a.a.a.a",
    "b.a.b.a",
    "a.x.y.z.b",
    "c.c.c.c.c.a",
    "b.c.a.c.a",
    _LONG_WORD,
    "a." + _LONG_WORD,
    "w" * 63 + ".a",
    ".".join(["a"] * 127 + ["b"]),  # 255 bytes
    ".".join(["a" * 63] * 4),  # 255 bytes
]
# Not topics, but an AMQP publisher may still send them, and the stream keeps them.
OTHER_KEYS = ["", ".", "..", ".a", "a.", "a..b", "a.b.", "*", "#", "a.*", "#.a", "é.a", "a b.a"]


@pytest.mark.rabbitmq
async def test_patterns_route_like_rabbitmq(rabbitmq: None) -> None:
    for key in ROUTING_KEYS:
        parse_topic(key)  # a topic a publisher may use
    keys = ROUTING_KEYS + OTHER_KEYS
    routed = await _routed_by_rabbitmq(ROUTED_PATTERNS, keys)
    expected = {
        pattern: {key for key in keys if Pattern.parse(pattern).matches(key)}
        for pattern in ROUTED_PATTERNS
    }
    assert routed == expected
    assert all(expected.values())  # every binding is exercised


async def _routed_by_rabbitmq(patterns: list[str], keys: list[str]) -> dict[str, set[str]]:
    """The keys a topic exchange of a test's own routes to a queue bound with each pattern."""
    exchange = f"hopcast-test.routing.{uuid.uuid4().hex[:12]}"
    conn = await aiormq.connect(AMQP_URL)
    try:
        channel = await conn.channel(publisher_confirms=True)
        await channel.exchange_declare(exchange, exchange_type="topic")
        try:
            queues: dict[str, str] = {}
            for pattern in patterns:
                declared = await channel.queue_declare(
                    "",
                    exclusive=True,
                    auto_delete=True,
                    arguments={"x-queue-type": "classic"},
                )
                assert declared.queue is not None
                await channel.queue_bind(declared.queue, exchange, routing_key=pattern)
                queues[pattern] = declared.queue
            for key in keys:
                # A confirm for a transient message means every queue it routes to has it.
                await channel.basic_publish(
                    key.encode(),
                    exchange=exchange,
                    routing_key=key,
                    properties=spec.Basic.Properties(delivery_mode=1),
                )
            routed: dict[str, set[str]] = {}
            for pattern, queue in queues.items():
                got = routed[pattern] = set()
                while True:
                    message = await channel.basic_get(queue, no_ack=True)
                    if isinstance(message.delivery, spec.Basic.GetEmpty):
                        break
                    assert message.routing_key is not None
                    assert message.body == message.routing_key.encode()
                    got.add(message.routing_key)
            return routed
        finally:
            cleanup = await conn.channel()  # the first one may have been closed by an error
            await cleanup.exchange_delete(exchange)
    finally:
        await conn.close()
