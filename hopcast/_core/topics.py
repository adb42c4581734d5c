"""Topics and patterns: parsing, matching and containment with RabbitMQ's topic semantics.

A topic is dot-separated words of ``[A-Za-z0-9_:-]{1,64}``, at most 255 bytes; a
pattern may use ``*`` (exactly one word) and ``#`` (zero or more words).

>>> Pattern.parse("orders.*").matches("orders.42")
True
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from hopcast._core.errors import InvalidTopic

MAX_TOPIC_BYTES = 255
MAX_WORD_CHARS = 64
_WORD = re.compile(r"[A-Za-z0-9_:\-]{1,64}")
STAR = "*"
HASH = "#"


def _check_length(text: str, kind: str) -> None:
    if not text:
        raise InvalidTopic(f"{kind} is empty")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise InvalidTopic(f"{kind} is longer than {MAX_TOPIC_BYTES} bytes")


def _bad_word(word: str, kind: str) -> InvalidTopic:
    if not word:
        return InvalidTopic(f"{kind} has an empty word (two dots, or a dot at an end)")
    if len(word) > MAX_WORD_CHARS:
        return InvalidTopic(f"{kind} has a word longer than {MAX_WORD_CHARS} characters")
    return InvalidTopic(f"{kind} word {word[:70]!r} may use only letters, digits, '_', ':' and '-'")


@lru_cache(maxsize=4096)
def parse_topic(text: str) -> str:
    """Return ``text`` if it is a valid topic, else raise `InvalidTopic`.

    >>> parse_topic("chat.room-7.typing")
    'chat.room-7.typing'
    """
    _check_length(text, "topic")
    for word in text.split("."):
        if not _WORD.fullmatch(word):
            if word in (STAR, HASH):
                raise InvalidTopic("a topic may not contain '*' or '#'; those are for patterns")
            raise _bad_word(word, "topic")
    return text


@dataclass(frozen=True, slots=True)
class Pattern:
    """A parsed subscription pattern; ``words`` keeps ``*`` and ``#`` as they are.

    >>> Pattern.parse("user.42.#").matches("user.42")
    True
    """

    words: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """Parse and validate a pattern; raise `InvalidTopic` with a reason."""
        return _parse_pattern(text)

    @property
    def text(self) -> str:
        return ".".join(self.words)

    def __str__(self) -> str:
        return self.text

    @property
    def wild(self) -> bool:
        """Whether the pattern has a ``*`` or ``#`` (else it matches one topic: its text)."""
        return STAR in self.words or HASH in self.words

    def matches(self, topic: str) -> bool:
        """Whether RabbitMQ would route a message with routing key ``topic`` to this binding."""
        # Any routing key, as RabbitMQ splits it: '' is no word at all, 'a..b' has an empty one.
        return _matches(self.words, topic.split(".") if topic else [])

    def contains(self, other: Pattern) -> bool:
        """Whether every topic ``other`` can match is matched by this pattern.

        >>> Pattern.parse("orders.#").contains(Pattern.parse("orders.*"))
        True
        >>> Pattern.parse("orders.*").contains(Pattern.parse("orders.#"))
        False
        """
        return _contains(self.words, other.words)


@lru_cache(maxsize=4096)
def _parse_pattern(text: str) -> Pattern:
    _check_length(text, "pattern")
    words = tuple(text.split("."))
    for word in words:
        if word not in (STAR, HASH) and not _WORD.fullmatch(word):
            raise _bad_word(word, "pattern")
    return Pattern(words)


def _matches(pattern: tuple[str, ...], topic: list[str]) -> bool:
    """Run ``pattern`` as an automaton over words, keeping the set of positions it can be at.

    The work grows with len(pattern) * len(topic); a backtracking regex takes
    exponential time on a pattern with many ``#`` and a topic that fails at its end.
    """
    end = len(pattern)

    def skip_hashes(states: set[int]) -> set[int]:
        for start in list(states):
            i = start
            while i < end and pattern[i] == HASH:  # '#' may match no word
                i += 1
                states.add(i)
        return states

    states = skip_hashes({0})
    for word in topic:
        after: set[int] = set()
        for i in states:
            if i < end:
                w = pattern[i]
                if w == HASH:
                    after.add(i)
                elif w in (STAR, word):
                    after.add(i + 1)
        if not after:
            return False
        states = skip_hashes(after)
    return end in states


def _contains(outer: tuple[str, ...], inner: tuple[str, ...]) -> bool:
    """Language inclusion of two patterns over non-empty topics.

    Each pattern is a regular language over words; ``inner`` is inside ``outer``
    when no topic is matched by ``inner`` alone. We explore the product of
    ``inner``'s positions with sets of ``outer``'s positions (a subset
    construction on the fly), feeding ``inner``'s symbols: a literal, a fresh
    word standing for "any word no literal names" (what ``*`` and ``#`` can
    produce besides the literals), and the literals of ``outer``.
    """
    literals = {w for w in outer if w not in (STAR, HASH)}
    symbols_for_wild = [*sorted(literals), "\x00fresh"]
    start_outer = _outer_closure(outer, {0})
    # state: (inner position, outer position set, consumed at least one word)
    seen: set[tuple[int, frozenset[int], bool]] = set()
    todo = [(j, start_outer, False) for j in _inner_closure(inner, 0)]
    while todo:
        state = todo.pop()
        if state in seen:
            continue
        seen.add(state)
        j, states, nonempty = state
        if j == len(inner) and nonempty and len(outer) not in states:
            return False  # inner accepts a topic that outer does not
        if j >= len(inner):
            continue
        w = inner[j]
        words = symbols_for_wild if w in (STAR, HASH) else [w]
        nxt = j if w == HASH else j + 1
        for word in words:
            after = _outer_step(outer, states, word)
            for k in _inner_closure(inner, nxt):
                todo.append((k, after, True))
    return True


def _outer_step(outer: tuple[str, ...], states: frozenset[int], word: str) -> frozenset[int]:
    """Where ``outer`` can be after reading ``word`` from any of ``states``."""
    out: set[int] = set()
    for i in states:
        if i < len(outer):
            w = outer[i]
            if w == HASH:
                out.add(i)  # '#' eats this word and stays
            elif w in (STAR, word):
                out.add(i + 1)
    return _outer_closure(outer, out)


def _outer_closure(outer: tuple[str, ...], states: set[int]) -> frozenset[int]:
    """``states`` and every position of ``outer`` a ``#`` matching no word leads on to."""
    todo = list(states)
    while todo:
        i = todo.pop()
        if i < len(outer) and outer[i] == HASH and i + 1 not in states:
            states.add(i + 1)
            todo.append(i + 1)
    return frozenset(states)


def _inner_closure(inner: tuple[str, ...], j: int) -> set[int]:
    """Position ``j`` of ``inner`` and those after it that its ``#`` can skip to."""
    out = {j}
    while j < len(inner) and inner[j] == HASH:
        j += 1
        out.add(j)
    return out
