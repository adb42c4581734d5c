"""Topics and patterns: validation, matching and containment against independent references."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hopcast._core.errors import InvalidInput, InvalidTopic
from hopcast._core.topics import Pattern, parse_topic

FAST = settings(max_examples=300, deadline=None)


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


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split("."))


# Validation


@pytest.mark.parametrize(
    "topic",
    [
        "orders",
        "orders.42",
        "chat.room-7.typing",
        "A_b:c-9.Z",
        "_",
        "-",
        ":",
        "0.1.2",
        "x" * 64,
        ".".join(["y" * 64, "z"]),
        ".".join(["a" * 63] * 4),  # exactly 255 bytes
        ".".join("a" * 128),  # 128 one-letter words, 255 bytes
    ],
)
def test_valid_topics(topic: str) -> None:
    assert parse_topic(topic) == topic
    assert Pattern.parse(topic).matches(topic)  # a topic is also a pattern for itself


@pytest.mark.parametrize(
    "topic",
    [
        "",
        ".",
        "a.",
        ".a",
        "a..b",
        "*",
        "#",
        "a.*",
        "a.#.b",
        "a*",
        "a b",
        "a/b",
        "a+b",
        "a\n",
        "a.b\n",
        "\na",
        "a\x00",
        "é",
        "a.ß",
        "\uff41",  # fullwidth letter a
        "\u0661",  # Arabic-Indic digit one: not [0-9]
        "x" * 65,
        "a." + "x" * 65,
        ".".join(["a" * 64] + ["a" * 63] * 3),  # 256 bytes
        ".".join("a" * 129),  # 257 bytes
    ],
)
def test_invalid_topics(topic: str) -> None:
    with pytest.raises(InvalidTopic):
        parse_topic(topic)


@pytest.mark.parametrize(
    "pattern",
    ["*", "#", "#.#", "*.*", "a.*.b", "a.#.b", "#.a", "orders.*", "user.42.#", "x" * 64],
)
def test_valid_patterns(pattern: str) -> None:
    parsed = Pattern.parse(pattern)
    assert parsed.text == str(parsed) == pattern
    assert parsed.words == words(pattern)
    assert parsed == Pattern.parse(pattern)


@pytest.mark.parametrize(
    "pattern",
    [
        "",
        ".",
        "a.",
        ".#",
        "#.",
        "a..b",
        "a*",
        "*a",
        "**",
        "##",
        "#*",
        "a.#b",
        "a.b*.c",
        "a b",
        "a\n",
        "é",
        "x" * 65,
        "#." + "x" * 65,
        ".".join(["*"] * 127 + ["ab"]),  # 256 bytes
    ],
)
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(InvalidTopic):
        Pattern.parse(pattern)


def test_pattern_length_limit() -> None:
    for longest in (".".join(["#"] * 128), ".".join(["*"] * 127 + ["a"])):  # 255 bytes
        assert Pattern.parse(longest).text == longest
    with pytest.raises(InvalidTopic, match="255"):
        Pattern.parse(".".join(["*"] * 127 + ["ab"]))  # 256 bytes
    with pytest.raises(InvalidTopic, match="255"):
        parse_topic(".".join(["a" * 64] + ["a" * 63] * 3))


def test_errors_are_client_errors() -> None:
    assert issubclass(InvalidTopic, InvalidInput)
    assert issubclass(InvalidTopic, ValueError)
    with pytest.raises(InvalidTopic, match="pattern"):
        parse_topic("orders.*")


word_chars = "abcXYZ019_:-"
valid_words = st.text(st.sampled_from(word_chars), min_size=1, max_size=64)


@FAST
@given(st.lists(valid_words, min_size=1, max_size=8), st.data())
def test_topic_validation(parts: list[str], data: st.DataObject) -> None:
    topic = ".".join(parts)
    if len(topic) <= 255:
        assert parse_topic(topic) == topic
    else:
        with pytest.raises(InvalidTopic):
            parse_topic(topic)
    # One foreign character anywhere makes it invalid, as a topic and as a pattern.
    bad = data.draw(st.sampled_from([" ", "/", "+", "é", "\n", "\t", "$", "\x00", "*", "#", "."]))
    at = data.draw(st.integers(0, len(topic)))
    broken = topic[:at] + bad + topic[at:]
    if bad == "." and 0 < at < len(topic) and "." not in topic[at - 1 : at + 1]:
        return  # a dot between two word characters splits a word: still a topic
    with pytest.raises(InvalidTopic):
        parse_topic(broken)
    with pytest.raises(InvalidTopic):
        Pattern.parse(broken)  # '*' or '#' glued to other characters is no wildcard either


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
    # middle word (tests/integration/test_routing_rabbitmq.py checks this on the broker).
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


@settings(max_examples=300, deadline=None)
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
