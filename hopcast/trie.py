"""Subscriptions indexed by pattern: finding who wants a topic costs the number of matches.

>>> PatternTrie().match("orders.42")
()
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from hopcast.topics import HASH, STAR

if TYPE_CHECKING:
    from hopcast.subscription import Subscription


class _Node:
    __slots__ = ("children", "hash", "star", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.hash: _Node | None = None
        self.subs: dict[Subscription, None] = {}

    def child(self, word: str) -> _Node:
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

    def collect(self, words: Sequence[str], out: dict[Subscription, None]) -> None:
        """Gather the subscriptions of every pattern below this node that matches ``words``.

        Each (node, position) pair is visited once, so nested ``#`` cost
        nodes times words, not an exponential number of splits.
        """
        end = len(words)
        seen: set[tuple[int, int]] = set()
        todo: list[tuple[_Node, int]] = [(self, 0)]
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


class PatternTrie:
    """Subscriptions indexed by pattern; `match` costs the number of matches, cached per topic."""

    def __init__(self) -> None:
        self._root = _Node()
        self._cache: dict[str, tuple[Subscription, ...]] = {}
        self.size = 0

    def add(self, sub: Subscription) -> None:
        for pattern in sub.patterns:
            node = self._root
            for word in pattern.words:
                node = node.child(word)
            node.subs[sub] = None
        self.size += 1
        self._cache.clear()

    def remove(self, sub: Subscription) -> None:
        for pattern in sub.patterns:
            path = [self._root]
            for word in pattern.words:
                nxt = (
                    path[-1].star
                    if word == STAR
                    else path[-1].hash
                    if word == HASH
                    else path[-1].children.get(word)
                )
                if nxt is None:
                    break
                path.append(nxt)
            else:
                path[-1].subs.pop(sub, None)
        self.size -= 1
        self._cache.clear()

    def match(self, topic: str) -> tuple[Subscription, ...]:
        found = self._cache.get(topic)
        if found is None:
            out: dict[Subscription, None] = {}
            self._root.collect(topic.split(".") if topic else (), out)
            found = self._cache[topic] = tuple(out)
            if len(self._cache) > 100_000:
                self._cache.clear()
        return found
