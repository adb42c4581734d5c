"""Subscriptions: one client's queue of frames and its cursor, from where it resumes to live.

A subscription starts (`Mode.STARTING`), replays the hub's ring (`Mode.REPLAY`)
or follows a catch-up reader where the ring does not reach back
(`Mode.CATCHUP`), and ends in the hub's trie (`Mode.LIVE`), where dispatch
queues frames for it. Its writer pulls them with `Subscription.next_chunk`,
unless a `Sink` (a listener connection) takes them, once live, as they are
dispatched. The ring and the readers belong to `hopcast.hub`; how a resume goes
live with no event lost or sent twice is drawn in ``docs/architecture.md``.

>>> from hopcast import Hub, Pattern, Settings
>>> from hopcast.broker.memory import MemoryBroker
>>> hub = Hub(MemoryBroker(), Settings.from_env({"HOPCAST_BROKER": "memory://"}))
>>> hub.subscribe([Pattern.parse("orders.*")], after=41)
<Subscription orders.* starting cursor=-1>
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from enum import Enum
from typing import TYPE_CHECKING, Literal, Protocol

from hopcast.errors import SubscriptionClosed
from hopcast.sse import encode_missed
from hopcast.topics import Pattern

if TYPE_CHECKING:
    from hopcast.hub import Hub

Since = datetime | Literal["first"]


class Mode(Enum):
    STARTING = "starting"
    REPLAY = "replay"
    CATCHUP = "catchup"
    LIVE = "live"


class Subscription:
    """One client's subscription; its writer calls `next_chunk` in a loop.

    ``cursor`` is the offset up to which every event has been queued for this
    client or judged not to match it.
    """

    __slots__ = (
        "_exact",
        "_frames",
        "_hub",
        "_limit",
        "_wake",
        "_wild",
        "after",
        "closed",
        "cursor",
        "mode",
        "on_cut",
        "patterns",
        "room",
        "since",
        "sink",
    )

    def __init__(
        self, hub: Hub, patterns: Sequence[Pattern], after: int | None, since: Since | None
    ) -> None:
        self._hub = hub
        self._limit = hub.settings.queue_size
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
        self.room: asyncio.Event | None = None
        """Set whenever the writer takes what is queued (a catch-up reader's flow control)."""
        self.on_cut: Callable[[], object] | None = None
        """Called when the gateway cuts this client off (its writer may be stuck in a send)."""
        self.sink: Sink | None = None
        """Where live frames go straight away (push mode); None: the writer pulls them."""

    def __repr__(self) -> str:
        pats = ",".join(p.text for p in self.patterns)
        return f"<Subscription {pats} {self.mode.value} cursor={self.cursor}>"

    def matches(self, topic: str) -> bool:
        return topic in self._exact or any(p.matches(topic) for p in self._wild)

    def cut_slow(self) -> None:
        """Its queue passed the bound: cut the client off (it resumes from its last id)."""
        self._hub.stats.slow_disconnects += 1
        self.close("slow")
        if self.on_cut is not None:
            self.on_cut()

    def take(self) -> bytes:
        """Everything queued, joined for one write (push mode: live, so no catch-up waits)."""
        frames = self._frames
        chunk = b"".join(frames)
        frames.clear()
        return chunk

    @property
    def pending(self) -> int:
        return len(self._frames)

    def _push_many(self, frames: Iterable[bytes]) -> None:
        self._frames.extend(frames)
        if self._frames:
            if self.sink is not None and self.mode is Mode.LIVE:
                self.sink.flush(self)
            else:
                self._wake.set()

    def close(self, reason: str) -> None:
        """End the subscription; its writer sees `SubscriptionClosed` with ``reason``."""
        if self.closed:
            return
        self.closed = reason
        self._frames.clear()
        self._hub._forget(self)
        self._wake.set()
        if self.room is not None:
            self.room.set()
        if self.sink is not None:
            self.sink.closed(self, reason)

    @property
    def safe_offset(self) -> int | None:
        """The offset a heartbeat may carry: everything up to it was sent or did not match."""
        if self.mode is not Mode.LIVE or self._frames:
            return None if self.mode is Mode.STARTING else self.cursor
        return max(self.cursor, self._hub.position)

    async def start(self) -> int | None:
        """Place the subscription (live, replay or catch-up); return its first ``id``, if any."""
        hub = self._hub
        await hub.wait_tail_known()
        if self.closed:
            raise SubscriptionClosed(self.closed)
        if self.after is not None:
            self.cursor = self.after
            known = max(hub.position, hub.tail_hint)
            if self.after > known and not await hub.reaches(self.after):
                first = hub.earliest
                self._frames.append(encode_missed("reset", self.after, first))
                self.cursor = first - 1
            if self.closed:
                raise SubscriptionClosed(self.closed)
            self.mode = Mode.REPLAY
            return None
        if self.since is not None:
            hub._join_catchup(self, self.since)
            return None
        self.cursor = max(hub.position, hub.tail_hint)
        hub._go_live(self)
        return self.cursor

    async def next_chunk(self, timeout: float) -> bytes | None:
        """The frames pending for this client joined in one chunk, or None after ``timeout``."""
        hub = self._hub
        while True:
            if self.closed:
                raise SubscriptionClosed(self.closed)
            if self._frames:
                chunk = b"".join(self._frames)
                self._frames.clear()
                if self.room is not None:
                    self.room.set()
                return chunk
            if self.mode is Mode.REPLAY:
                hub._replay_step(self)
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


class Sink(Protocol):
    """A connection that takes live frames as they are dispatched (push mode)."""

    def flush(self, sub: Subscription) -> None:
        """Write what `Subscription.take` gives, now or after its coalescing window."""

    def closed(self, sub: Subscription, reason: str) -> None:
        """The subscription ended (slow, shutdown, ...): end the response."""


__all__ = ["Mode", "Since", "Sink", "Subscription"]
