"""The pattern index: finding who wants a topic costs the number of matches.

Anything hashable with a ``patterns`` tuple can be indexed (the hub indexes its
live subscriptions).

>>> PatternTrie().match("orders.42")
()
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Generic, Protocol, TypeVar

from hopcast._core.topics import HASH, STAR, Pattern


class Patterned(Hashable, Protocol):
    """What the index holds: an item that wants the topics its patterns match."""

    @property
    def patterns(self) -> tuple[Pattern, ...]: ...


T = TypeVar("T", bound=Patterned)


class _Node(Generic[T]):
    __slots__ = ("children", "hash", "star", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.star: _Node[T] | None = None
        self.hash: _Node[T] | None = None
        self.subs: dict[T, None] = {}

    def child(self, word: str) -> _Node[T]:
        if word == STAR:
            if self.star is None:
                self.star = _Node()
            return self.star
        if word == HASH:
            if self.hash is None:
                self.hash = _Node()
            return self.hash
        node = self.children.get(word)
        if node is None:
            node = self.children[word] = _Node()
        return node

    def step(self, word: str) -> _Node[T] | None:
        """The child for ``word`` as a pattern word, if there is one (never creates it)."""
        if word == STAR:
            return self.star
        if word == HASH:
            return self.hash
        return self.children.get(word)

    def collect(self, words: Sequence[str], out: dict[T, None]) -> None:
        """Gather the items of every pattern below this node that matches ``words``.

        Each (node, position) pair is visited once, so nested ``#`` cost
        nodes times words, not an exponential number of splits.
        """
        end = len(words)
        seen: set[tuple[int, int]] = set()
        todo: list[tuple[_Node[T], int]] = [(self, 0)]
        while todo:
            node, i = todo.pop()
            key = (id(node), i)
            if key in seen:
                continue
            seen.add(key)
            if node.hash is not None:
                todo.extend((node.hash, k) for k in range(i, end + 1))
            if i == end:
                out.update(node.subs)
                continue
            child = node.children.get(words[i])
            if child is not None:
                todo.append((child, i + 1))
            if node.star is not None:
                todo.append((node.star, i + 1))


class PatternTrie(Generic[T]):
    """Items indexed by pattern; `match` costs the number of matches, cached per topic."""

    def __init__(self) -> None:
        self._root: _Node[T] = _Node()
        self._cache: dict[str, tuple[T, ...]] = {}
        self.size = 0

    def add(self, item: T) -> None:
        for pattern in item.patterns:
            node = self._root
            for word in pattern.words:
                node = node.child(word)
            node.subs[item] = None
        self.size += 1
        self._cache.clear()

    def remove(self, item: T) -> None:
        for pattern in item.patterns:
            node: _Node[T] | None = self._root
            for word in pattern.words:
                node = node.step(word) if node is not None else None
            if node is not None:
                node.subs.pop(item, None)
        self.size -= 1
        self._cache.clear()

    def match(self, topic: str) -> tuple[T, ...]:
        found = self._cache.get(topic)
        if found is None:
            out: dict[T, None] = {}
            self._root.collect(topic.split(".") if topic else (), out)
            found = self._cache[topic] = tuple(out)
            if len(self._cache) > 100_000:
                self._cache.clear()
        return found
