"""Resumes: the ring of the latest events, and the catch-up readers for what lies before it.

A resume after offset N first replays the ring (`Ring.replay`, a chunk per
writer wake-up); where the ring does not reach back to N + 1, the subscription
joins a catch-up reader (`CatchUps.join`): a temporary stream reader that
resumes from nearby offsets share. No member of a catch-up waits for another
(`CatchUp.feed`). How this hands over to live without a gap or a duplicate is
drawn in ``docs/architecture.md``.

>>> ring = Ring(2)
>>> for offset in (4, 7, 9):
...     ring.append(Event(offset, "a", b"id: %d\\n\\n" % offset))
>>> ring.reaches(6), ring.reaches(5)
(True, False)
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hopcast._broker.base import Broker, Message, StartAt
from hopcast._core.errors import BrokerUnavailable
from hopcast._core.sse import encode_message, encode_missed
from hopcast._hub.subscription import Mode, Since, Subscription

log = logging.getLogger("hopcast.hub")  # named by layer: module paths are internal

REPLAY_CHUNK = 512
"""Ring events scanned per writer wake-up, so one resume does not hold the loop."""
CATCHUP_GATHER = 0.05
"""Seconds a new catch-up reader waits for other resumes to join it before it starts."""
BACKOFF_START = 0.2
BACKOFF_MAX = 5.0


@dataclass(frozen=True, slots=True)
class Event:
    """An event as dispatched: its offset, topic and encoded frame."""

    offset: int
    topic: str
    frame: bytes


class Ring:
    """The latest events dispatched, oldest first, for resumes that need no stream read."""

    def __init__(self, size: int) -> None:
        self._events: deque[Event] = deque(maxlen=size)

    def __len__(self) -> int:
        return len(self._events)

    def append(self, event: Event) -> None:
        self._events.append(event)

    def clear(self) -> None:
        self._events.clear()

    @property
    def first(self) -> int | None:
        """The oldest offset held, if any."""
        return self._events[0].offset if self._events else None

    def reaches(self, after: int) -> bool:
        """Whether the ring holds every event after offset ``after`` that it will ever hold.

        Offsets are not contiguous, so this is judged by the first offset, never
        by arithmetic.
        """
        return bool(self._events) and self._events[0].offset <= after + 1

    def replay(self, sub: Subscription) -> None:
        """Queue for ``sub`` the matching events after its cursor, scanning at most a chunk."""
        events = self._events
        cursor = sub.cursor
        i = bisect.bisect_right(events, cursor, key=_offset_of)
        end = min(len(events), i + REPLAY_CHUNK)
        if i >= end:
            return
        frames = []
        hits: dict[str, bool] = {}  # a chunk holds few topics: match each once
        for k in range(i, end):
            event = events[k]
            hit = hits.get(event.topic)
            if hit is None:
                hit = hits[event.topic] = sub.matches(event.topic)
            if hit:
                frames.append(event.frame)
        sub.queue(frames, events[end - 1].offset)


def _offset_of(event: Event) -> int:
    return event.offset


class CatchUps:
    """The catch-up readers of one hub: started on demand, shared by nearby resumes."""

    def __init__(
        self, broker: Broker, *, max_event_bytes: int, covers: Callable[[int], bool]
    ) -> None:
        self.broker = broker
        self.max_event_bytes = max_event_bytes
        self.covers = covers
        """Whether the hub's ring or live stream serves every event after an offset."""
        self.readers: set[CatchUp] = set()
        self.started = 0
        """Readers started since the hub began (for ``/metrics``)."""

    @property
    def running(self) -> int:
        return len(self.readers)

    def join(self, sub: Subscription, start: int | Since) -> None:
        """Serve ``sub`` from the stream at ``start``: with a reader that can, or a new one."""
        if sub.closed:
            return
        if isinstance(start, int):
            for reader in self.readers:
                if reader.can_take(start):
                    reader.add(sub)
                    return
        reader = CatchUp(self, start)
        reader.add(sub)
        self.readers.add(reader)
        self.started += 1
        reader.task = asyncio.create_task(reader.run(), name="hopcast-catch-up")

    async def aclose(self) -> None:
        tasks = [r.task for r in self.readers if r.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class CatchUp:
    """A temporary stream reader shared by resumes from nearby offsets."""

    def __init__(self, owner: CatchUps, start: StartAt) -> None:
        self.owner = owner
        self.start = start
        self.members: list[Subscription] = []
        self.position: int | None = None
        self.first: int | None = None
        self.task: asyncio.Task[None] | None = None
        self.taken = asyncio.Event()
        """Set when a member's writer takes its frames (or the member closes)."""

    def can_take(self, after: int) -> bool:
        """Whether a resume after ``after`` can join: this reader has not read past it."""
        if not isinstance(self.start, int) or self.start > after:
            return False
        return self.position is None or self.position <= after

    def add(self, sub: Subscription) -> None:
        sub.taken = self.taken
        self.members.append(sub)
        sub.enter(Mode.CATCHUP)

    def leave(self, sub: Subscription) -> None:
        """``sub`` goes on from its own cursor: the ring, or a later catch-up reader."""
        self.members.remove(sub)
        sub.taken = None
        if sub.mode is Mode.CATCHUP:
            sub.enter(Mode.REPLAY)

    async def run(self) -> None:
        await asyncio.sleep(CATCHUP_GATHER)
        delay = BACKOFF_START
        try:
            while self.members:
                # again from the position itself, as the live reader (`Hub._run_reader`)
                start: StartAt = self.start if self.position is None else self.position
                try:
                    async with self.owner.broker.read(start, purpose="catch-up") as reader:
                        first_of_read = True
                        async for batch in reader:
                            if await self.feed(batch, first_of_read):
                                return
                            first_of_read = False
                            delay = BACKOFF_START
                except BrokerUnavailable as exc:
                    log.warning("catch-up reader: %s; retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(BACKOFF_MAX, delay * 2)
        finally:
            self.owner.readers.discard(self)
            for sub in list(self.members):
                self.leave(sub)

    async def feed(self, batch: Sequence[Message], first_of_read: bool) -> bool:
        """Hand a batch to the members; True once the hub's ring or live stream takes over.

        A read that begins past a member's cursor + 1 (its first batch; later ones may
        step over offsets that hold no event) began where retention left the stream.

        No member waits for another: one still a whole queue behind when the next batch
        comes leaves, and goes on from its own cursor at its own pace once its writer
        took what it holds (the ring, or a reader of its own or a later shared one). The
        reader waits only while every member is that far behind. A member that makes no
        progress at all is cut off by its writer's send timeout.
        """
        if self.first is None:
            self.first = batch[0].offset
            for sub in self.members:
                if sub.since is not None:
                    sub.cursor = self.first - 1
                    sub.since = None  # placed: a later reader takes it from its cursor
        encoded: dict[int, bytes] = {}
        for sub in list(self.members):
            if sub.closed:
                self.members.remove(sub)
            elif sub.full:
                self.leave(sub)
            else:
                self._feed_one(sub, batch, first_of_read, encoded)
        last = batch[-1].offset
        self.position = last
        if self.owner.covers(last):
            return True
        while self.members and all(sub.full for sub in self.members):
            self.taken.clear()
            await self.taken.wait()
        return not self.members

    def _feed_one(
        self,
        sub: Subscription,
        batch: Sequence[Message],
        first_of_read: bool,
        encoded: dict[int, bytes],
    ) -> None:
        """Queue for ``sub`` the batch's events above its cursor that match it."""
        frames = []
        if first_of_read and sub.cursor + 1 < batch[0].offset:
            frames.append(encode_missed("retention", sub.cursor, batch[0].offset))
        cursor = sub.cursor
        max_size = self.owner.max_event_bytes
        hits: dict[str, bool] = {}  # a batch holds few topics: match each once
        for msg in batch:
            if msg.offset <= cursor:
                continue
            hit = hits.get(msg.topic)
            if hit is None:
                hit = hits[msg.topic] = sub.matches(msg.topic)
            if hit:
                frame = encoded.get(msg.offset)
                if frame is None:
                    frame = encoded[msg.offset] = encode_message(
                        msg.offset, msg.type, msg.body, max_size
                    )
                frames.append(frame)
        sub.queue(frames, max(cursor, batch[-1].offset))


__all__ = ["CATCHUP_GATHER", "REPLAY_CHUNK", "CatchUp", "CatchUps", "Event", "Ring"]
