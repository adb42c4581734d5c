"""When leases run out: one timer per tick for all the leases due in it, not one each.

A lease ends at most one tick (`TICK`) after its time; what a lease costs while
it is held is a place in a set, which matters when thousands are held at once.
An item is found again by its time: remove it before changing that.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T", bound=Hashable)


class Expiries(Generic[T]):
    """Items due at loop times, handed to ``on_due`` at the first tick after theirs."""

    TICK = 0.05
    """Seconds between two looks for items that are due."""

    def __init__(self, on_due: Callable[[T], object]) -> None:
        self._on_due = on_due
        self._due: dict[int, set[T]] = {}

    def __len__(self) -> int:
        return sum(len(items) for items in self._due.values())

    def add(self, item: T, at: float) -> None:
        tick = math.ceil(at / self.TICK)
        due = self._due.get(tick)
        if due is None:
            due = self._due[tick] = set()
            asyncio.get_running_loop().call_at(tick * self.TICK, self._fire, tick)
        due.add(item)

    def discard(self, item: T, at: float) -> None:
        """Forget ``item``, added for ``at`` (nothing when it is not there)."""
        due = self._due.get(math.ceil(at / self.TICK))
        if due is not None:
            due.discard(item)

    def _fire(self, tick: int) -> None:
        for item in self._due.pop(tick, ()):
            self._on_due(item)
