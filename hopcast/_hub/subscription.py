"""Subscriptions: one client's queue of frames and its cursor, from where it resumes to live.

A subscription is placed by its owner, the hub (`Owner.place`): it replays the
ring (`Mode.REPLAY`) or follows a catch-up reader where the ring does not reach
back (`Mode.CATCHUP`), and ends in the hub's pattern index (`Mode.LIVE`), where
dispatch queues frames for it (`deliver`). Its writer pulls them with
`Subscription.next_chunk`, unless a `Sink` (a listener connection) takes them,
once live, as they are dispatched. This module alone touches the queue; the hub,
the ring replay and the catch-up readers go through `deliver`, `queue`, `enter`
and `taken`. How a resume goes live with no event lost or sent twice is drawn in
``docs/architecture.md``.

>>> from hopcast._core.topics import Pattern
>>> Subscription(_Nobody(), [Pattern.parse("orders.*")], after=41, since=None, limit=10)
<Subscription orders.* starting cursor=-1>
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import Enum
from typing import Literal, Protocol

from hopcast._core.errors import SubscriptionClosed
from hopcast._core.topics import Pattern

Since = datetime | Literal["first"]


class Mode(Enum):
    STARTING = "starting"
    REPLAY = "replay"
    CATCHUP = "catchup"
    LIVE = "live"


class Owner(Protocol):
    """What a subscription asks of the hub that placed it."""

    @property
    def position(self) -> int:
        """The last offset dispatched."""

    async def place(self, sub: Subscription) -> int | None:
        """Put ``sub`` live, in replay or in a catch-up; its first ``id``, if any."""

    def step(self, sub: Subscription) -> None:
        """In replay: queue its next events, or move it on (live, or to a catch-up)."""

    def forget(self, sub: Subscription, reason: str) -> None:
        """``sub`` closed for ``reason``: drop it from wherever it is."""


class Sink(Protocol):
    """A connection that takes live frames as they are dispatched (push mode)."""

    def flush(self, sub: Subscription) -> None:
        """Write what `Subscription.take` gives, now or after its coalescing window."""

    def closed(self, sub: Subscription, reason: str) -> None:
        """The subscription ended (slow, shutdown, ...): end the response."""


class Subscription:
    """One client's subscription; its writer calls `next_chunk` in a loop.

    ``cursor`` is the offset up to which every event has been queued for this
    client or judged not to match it.
    """

    __slots__ = (
        "_exact",
        "_frames",
        "_limit",
        "_owner",
        "_wake",
        "_wild",
        "after",
        "closed",
        "cursor",
        "mode",
        "on_cut",
        "patterns",
        "since",
        "sink",
        "taken",
    )

    def __init__(
        self,
        owner: Owner,
        patterns: Sequence[Pattern],
        *,
        after: int | None,
        since: Since | None,
        limit: int,
    ) -> None:
        self._owner = owner
        self._limit = limit
        self.patterns = tuple(patterns)
        self._exact = frozenset(p.text for p in patterns if not p.wild)
        self._wild = tuple(p for p in patterns if p.wild)
        self.after = after
        self.since = since
        self.cursor = -1
        self.mode = Mode.STARTING
        self.closed: str | None = None
        self._frames: list[bytes] = []
        self._wake = asyncio.Event()
        self.taken: asyncio.Event | None = None
        """Set whenever the writer takes what is queued, or the subscription closes
        (a catch-up reader's flow control)."""
        self.on_cut: Callable[[], object] | None = None
        """Called when the gateway cuts this client off (its writer may be stuck in a send)."""
        self.sink: Sink | None = None
        """Where live frames go straight away (push mode); None: the writer pulls them."""

    def __repr__(self) -> str:
        pats = ",".join(p.text for p in self.patterns)
        return f"<Subscription {pats} {self.mode.value} cursor={self.cursor}>"

    # -- what the hub, the replay and the catch-up readers use -------------------------

    def matches(self, topic: str) -> bool:
        return topic in self._exact or any(p.matches(topic) for p in self._wild)

    @property
    def pending(self) -> int:
        """Frames queued and not yet taken by the writer."""
        return len(self._frames)

    @property
    def full(self) -> bool:
        """A whole queue (``limit`` frames) waits for the writer."""
        return len(self._frames) >= self._limit

    def queue(self, frames: Sequence[bytes], cursor: int) -> None:
        """Queue ``frames`` (the events up to ``cursor`` that it gets) and set the cursor
        there; hand them to the writer."""
        if self.closed:
            return
        self.cursor = cursor
        if frames:
            self._frames.extend(frames)
            self.flush()

    def flush(self) -> None:
        """Hand what is queued to the writer: the sink once live, else wake the pulling writer."""
        if self.sink is not None and self.mode is Mode.LIVE:
            self.sink.flush(self)
        else:
            self._wake.set()

    def enter(self, mode: Mode) -> None:
        """Move to ``mode``; a pulling writer is woken to act on it."""
        if self.closed:
            return
        self.mode = mode
        self._wake.set()

    def cut_slow(self) -> None:
        """Cut the client off as too slow (its queue overflowed, or it made no progress);
        it resumes from its last id."""
        self.close("slow")
        if self.on_cut is not None:
            self.on_cut()

    def close(self, reason: str) -> None:
        """End the subscription; its writer sees `SubscriptionClosed` with ``reason``."""
        if self.closed:
            return
        self.closed = reason
        self._frames.clear()
        self._owner.forget(self, reason)
        self._wake.set()
        if self.taken is not None:
            self.taken.set()
        if self.sink is not None:
            self.sink.closed(self, reason)

    # -- what the writer uses ------------------------------------------------------------

    async def start(self) -> int | None:
        """Place the subscription (live, replay or catch-up); return its first ``id``, if any."""
        return await self._owner.place(self)

    def take(self) -> bytes:
        """Everything queued, joined for one write (push mode: live, so no catch-up waits)."""
        frames = self._frames
        chunk = b"".join(frames)
        frames.clear()
        return chunk

    @property
    def safe_offset(self) -> int | None:
        """The offset a heartbeat may carry: everything up to it was sent or did not match."""
        if self.mode is not Mode.LIVE or self._frames:
            return None if self.mode is Mode.STARTING else self.cursor
        return max(self.cursor, self._owner.position)

    async def next_chunk(self, timeout: float) -> bytes | None:
        """The frames pending for this client joined in one chunk, or None after ``timeout``."""
        while True:
            if self.closed:
                raise SubscriptionClosed(self.closed)
            if self._frames:
                chunk = b"".join(self._frames)
                self._frames.clear()
                if self.taken is not None:
                    self.taken.set()
                return chunk
            if self.mode is Mode.REPLAY:
                self._owner.step(self)
                continue
            if self.mode is Mode.LIVE and self.sink is not None:
                return b""  # live frames now go straight to the sink
            self._wake.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                if not self._frames and not self.closed:
                    return None


def deliver(
    subs: Sequence[Subscription], offset: int, frame: bytes, dirty: list[Subscription]
) -> None:
    """Queue one dispatched event for each of ``subs`` whose cursor it passes (the hot path).

    A subscription whose queue was empty is added to ``dirty`` (the hub flushes
    those once per slice); one whose queue passes its limit is cut off.
    """
    for sub in subs:
        if offset > sub.cursor and not sub.closed:
            sub.cursor = offset
            frames = sub._frames
            frames.append(frame)
            if len(frames) == 1:
                dirty.append(sub)
            elif len(frames) > sub._limit:
                sub.cut_slow()


class _Nobody:
    """An owner that places nothing (for the doctest)."""

    position = -1

    async def place(self, sub: Subscription) -> int | None:
        return None

    def step(self, sub: Subscription) -> None:
        pass

    def forget(self, sub: Subscription, reason: str) -> None:
        pass


__all__ = ["Mode", "Owner", "Since", "Sink", "Subscription", "deliver"]
