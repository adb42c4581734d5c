"""Topics and patterns: what is valid, checked against the grammar and by examples.

Any text gives a topic, a pattern or `InvalidTopic`, never another error; matching
and containment are tested in ``test_topics_matching``.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hopcast._core.errors import InvalidInput, InvalidTopic
from hopcast._core.topics import MAX_TOPIC_BYTES, Pattern, parse_topic
from tests.support.rounds import rounds

FAST = rounds(300)

ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=300)
"""Every code point, lone surrogates included: a header decodes as latin-1, a path may not."""
TOPIC_LIKE = st.lists(
    st.one_of(
        st.text("abZ09_:-", min_size=0, max_size=66),
        st.sampled_from(["*", "#", "**", "a#", "é", "a b", "a\x00", "\n", "\uff41", "\ud800"]),
    ),
    min_size=1,
    max_size=140,
).map(".".join)

_WORD = r"[A-Za-z0-9_:\-]{1,64}"
SPEC_TOPIC = re.compile(rf"{_WORD}(?:\.{_WORD})*")
SPEC_PATTERN = re.compile(rf"(?:{_WORD}|\*|#)(?:\.(?:{_WORD}|\*|#))*")


def _fits(text: str) -> bool:
    return len(text.encode("utf-8", "surrogatepass")) <= MAX_TOPIC_BYTES


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


# Any text


@FAST
@given(st.one_of(ANY_TEXT, TOPIC_LIKE))
@example("")
@example(".")
@example("a..b")
@example("a" * 65)
@example(".".join(["a" * 63] * 4) + "a")  # 256 bytes
@example("\ud800")
@example("a.#")
def test_parse_topic_gives_the_topic_or_invalid_input(text: str) -> None:
    try:
        topic = parse_topic(text)
    except InvalidTopic as exc:
        assert isinstance(exc, InvalidInput) and str(exc)
        assert not (SPEC_TOPIC.fullmatch(text) and _fits(text))
        return
    assert topic == text
    assert SPEC_TOPIC.fullmatch(text) and _fits(text)
    assert Pattern.parse(topic).matches(topic)  # a topic is a pattern for itself


@FAST
@given(st.one_of(ANY_TEXT, TOPIC_LIKE))
@example("#")
@example("*.#.*")
@example("a.**")
@example("#.")
@example(".".join("#" * 128))
def test_pattern_parse_gives_a_pattern_or_invalid_input(text: str) -> None:
    try:
        pattern = Pattern.parse(text)
    except InvalidTopic as exc:
        assert isinstance(exc, InvalidInput) and str(exc)
        assert not (SPEC_PATTERN.fullmatch(text) and _fits(text))
        return
    assert SPEC_PATTERN.fullmatch(text) and _fits(text)
    assert str(pattern) == pattern.text == text
    assert Pattern.parse(str(pattern)) == pattern
    assert pattern.words == tuple(text.split("."))
