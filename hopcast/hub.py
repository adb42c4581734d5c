"""The hub: one live stream reader per process, a pattern trie, a replay ring, and resume.

The data path is stream → `Hub._dispatch` → `Subscription` (`hopcast.subscription`:
each client's queue and cursor) → its writer, a connection in `hopcast.listener`
or, when mounted, `EventStreamResponse` in `hopcast.responses`. How a resume hands
over from replay to live without a gap or a duplicate is drawn in
``docs/architecture.md``.

>>> hub = Hub(MemoryBroker(), Settings.from_env({"HOPCAST_BROKER": "memory://"}))
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from hopcast.broker import Broker, Message, Pace, StartAt
from hopcast.broker.memory import MemoryBroker
from hopcast.config import Settings
from hopcast.errors import BrokerUnavailable
from hopcast.sse import encode_message, encode_missed
from hopcast.subscription import Mode, Since, Subscription
from hopcast.topics import Pattern
from hopcast.trie import PatternTrie

log = logging.getLogger(__name__)

REPLAY_CHUNK = 512
"""Ring events scanned per writer wake-up, so one resume does not hold the loop."""
CATCHUP_GATHER = 0.05
"""Seconds a new catch-up reader waits for other resumes to join it before it starts."""
DISPATCH_SLICE = 128
"""Events dispatched before writers get a turn: a burst must not overflow a fast client's queue."""
BACKOFF_START = 0.2
BACKOFF_MAX = 5.0


@dataclass(frozen=True, slots=True)
class Event:
    """An event as dispatched: its offset, topic and encoded frame."""

    offset: int
    topic: str
    frame: bytes


@dataclass
class Stats:
    """Counters for ``/metrics``; plain integers, bumped per batch on the hot path."""

    events: int = 0
    deliveries: int = 0
    slow_disconnects: int = 0
    catchup_readers: int = 0
    catchup_readers_started: int = 0
    reconnects: int = 0
    refused_connections: int = 0


class _CatchUp:
    """A temporary stream reader shared by resumes from nearby offsets."""

    def __init__(self, hub: Hub, start: StartAt) -> None:
        self.hub = hub
        self.start = start
        self.members: list[Subscription] = []
        self.position: int | None = None
        self.first: int | None = None
        self.task: asyncio.Task[None] | None = None
        self.room = asyncio.Event()
        """Set when a member's writer takes its frames (or the member closes)."""

    def add(self, sub: Subscription) -> None:
        sub.mode = Mode.CATCHUP
        sub.room = self.room
        self.members.append(sub)

    def _leave(self, sub: Subscription) -> None:
        """``sub`` goes on from its own cursor: the ring, or a later catch-up reader."""
        self.members.remove(sub)
        sub.room = None
        if not sub.closed and sub.mode is Mode.CATCHUP:
            sub.mode = Mode.REPLAY
            sub._wake.set()

    def can_take(self, after: int) -> bool:
        if not isinstance(self.start, int) or self.start > after:
            return False
        return self.position is None or self.position <= after

    async def run(self) -> None:
        hub = self.hub
        await asyncio.sleep(CATCHUP_GATHER)
        delay = BACKOFF_START
        hub.stats.catchup_readers += 1
        hub.stats.catchup_readers_started += 1
        try:
            while self.members:
                # again from the position itself, as the live reader (`Hub._run_reader`)
                start: StartAt = self.start if self.position is None else self.position
                try:
                    async with hub.broker.read(start, purpose="catch-up") as reader:
                        first_of_read = True
                        async for batch in reader:
                            if await self._feed(batch, first_of_read):
                                return
                            first_of_read = False
                            delay = BACKOFF_START
                except BrokerUnavailable as exc:
                    log.warning("catch-up reader: %s; retrying in %.1f s", exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(BACKOFF_MAX, delay * 2)
        finally:
            hub.stats.catchup_readers -= 1
            hub._catchups.discard(self)
            for sub in list(self.members):
                self._leave(sub)

    async def _feed(self, batch: Sequence[Message], first_of_read: bool) -> bool:
        """Hand a batch to the members; True once the hub's ring or live stream takes over.

        A read that begins past a member's cursor + 1 (its first batch; later ones may
        step over offsets that hold no event) began where retention left the stream.

        No member waits for another: one still a whole queue behind when the next batch
        comes leaves, and goes on from its own cursor at its own pace once its writer
        took what it holds (`Hub._replay_step`: the ring, or a reader of its own or a
        later shared one). The reader waits only while every member is that far behind.
        A member that makes no progress at all is cut off by its writer's send timeout.
        """
        hub = self.hub
        if self.first is None:
            self.first = batch[0].offset
            for sub in self.members:
                if sub.since is not None:
                    sub.cursor = self.first - 1
                    sub.since = None  # placed: a later reader takes it from its cursor
        max_size = hub.settings.max_event_bytes
        limit = hub.settings.queue_size
        encoded: dict[int, bytes] = {}
        last = batch[-1].offset
        for sub in list(self.members):
            if sub.closed:
                self.members.remove(sub)
                continue
            if sub.pending >= limit:
                self._leave(sub)
                continue
            frames = []
            if first_of_read and sub.cursor + 1 < batch[0].offset:
                frames.append(encode_missed("retention", sub.cursor, batch[0].offset))
            cursor = sub.cursor
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
            if last > cursor:
                sub.cursor = last
            sub._push_many(frames)
        self.position = last
        if hub.covers(last):
            return True
        while self.members and all(sub.pending >= limit for sub in self.members):
            self.room.clear()
            await self.room.wait()
        return not self.members


class Hub:
    """Fans the stream out to subscriptions; owns the live reader, the ring and catch-ups."""

    def __init__(self, broker: Broker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings
        self.stats = Stats()
        self.position = -1
        """The last offset dispatched (or known to precede the first one to dispatch)."""
        self.tail_hint = -1
        """The stream's tail learned at start-up; fresh subscribers start after it."""
        self.reader_running = False
        self.read_pause: Pace | None = None
        """How long the live reader leaves its socket unread after each read (the
        listener's coalescer sets it: until just before its next turn while it holds
        writes, else 0)."""
        self.shutting_down = False
        self._ring: deque[Event] = deque(maxlen=settings.ring_size)
        self._trie = PatternTrie()
        self._catchups: set[_CatchUp] = set()
        self._subscriptions: set[Subscription] = set()
        self._tail_known = asyncio.Event()
        self._ring_filled = asyncio.Event()
        self._reader_task: asyncio.Task[None] | None = None
        self._probe: asyncio.Future[int | None] | None = None

    # -- life cycle ---------------------------------------------------------

    async def start(self) -> None:
        """Start the live stream reader; it connects in the background and retries."""
        self._reader_task = asyncio.create_task(self._run_reader(), name="hopcast-stream-reader")

    def begin_shutdown(self) -> None:
        """End every stream now (clients are told to come back later) and refuse new ones."""
        self.shutting_down = True
        for sub in list(self._subscriptions):
            sub.close("shutdown")

    async def aclose(self) -> None:
        """Stop reading and end every subscription."""
        for sub in list(self._subscriptions):
            sub.close("shutdown")
        tasks = [t for t in [self._reader_task, *(c.task for c in self._catchups)] if t]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> Hub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    @property
    def ready(self) -> bool:
        """Broker connected, live reader running, and the ring filled up to the start-up tail."""
        return self.reader_running and self.broker.connected and self._ring_filled.is_set()

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    @property
    def earliest(self) -> int:
        """The first offset this process can serve without reading the stream."""
        return self._ring[0].offset if self._ring else self.position + 1

    async def wait_tail_known(self) -> None:
        await self._tail_known.wait()

    async def _run_reader(self) -> None:
        delay = BACKOFF_START
        start: StartAt | None = None
        while True:
            try:
                await self.broker.start()  # idempotent; recreates a deleted stream
                if start is None:
                    start = await self._learn_tail()
                else:
                    start = await self._check_reset(start)
                pace = self._read_pace
                async with self.broker.read(start, purpose="live", pace=pace) as reader:
                    self.reader_running = True
                    delay = BACKOFF_START
                    first = True
                    async for batch in reader:
                        if first:
                            first = False
                            self._check_gap(batch[0].offset)
                        await self._dispatch_sliced(batch)
            except BrokerUnavailable as exc:
                log.warning("stream reader: %s; reconnecting in %.1f s", exc, delay)
            finally:
                self.reader_running = False
            self.stats.reconnects += 1
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(BACKOFF_MAX, delay * 2)
            if start is not None:
                # At the position itself, not after it: the next offset may hold no event
                # (a new segment opens with a record of RabbitMQ's own), and a read asked to
                # start there would begin further on, as if retention had taken something.
                # What comes again is dropped by offset.
                start = max(0, self.position)

    def _read_pace(self) -> float:
        return self.read_pause() if self.read_pause is not None else 0.0

    async def _dispatch_sliced(self, batch: Sequence[Message]) -> None:
        for i in range(0, len(batch), DISPATCH_SLICE):
            self._dispatch(batch[i : i + DISPATCH_SLICE])
            if len(batch) > DISPATCH_SLICE:
                await asyncio.sleep(0)  # let writers drain between slices

    async def _check_reset(self, start: StartAt) -> StartAt:
        """After a reconnect: a tail behind our position means the stream was recreated."""
        if self.position < 0:
            return start
        tail = await self.broker.tail(patient=True)
        if tail is None or tail < self.position:
            return self._on_stream_reset(tail)
        return start

    async def _learn_tail(self) -> StartAt:
        tail = await self.broker.tail()
        if tail is None:
            self.position = self.tail_hint = -1
            self._ring_filled.set()
            self._tail_known.set()
            return "first"
        begin = max(0, tail - self.settings.ring_size + 1)
        self.position = begin - 1
        self.tail_hint = tail
        if self.position >= tail:
            self._ring_filled.set()
        self._tail_known.set()
        log.info("stream tail at offset %d; filling the ring from %d", tail, begin)
        return max(0, begin - 1)  # from just before, as after a reconnect (`_run_reader`)

    def _check_gap(self, first: int) -> None:
        """The live read began at ``first``, past the hub's position + 1, although it was
        asked to start at most there: retention took what lay between (while the reader
        was away, or before the ring filled at start-up).

        Live clients that were waiting for those events are told with ``hopcast-missed``,
        as a resume from the stream is. The ring is emptied, so that a replay reaching
        the gap continues from the stream and is told the same way.
        """
        if first <= self.position + 1:
            return
        told = 0
        for sub in list(self._subscriptions):
            if sub.mode is Mode.LIVE and sub.cursor + 1 < first:
                frame = encode_missed("retention", sub.cursor, first)
                sub.cursor = first - 1
                sub._push_many([frame])
                told += 1
        self._ring.clear()
        log.log(
            logging.WARNING if told else logging.INFO,
            "the stream starts at offset %d, after %d (retention); %d live clients told",
            first,
            self.position + 1,
            told,
        )

    def _on_stream_reset(self, tail: int | None) -> StartAt:
        """The stream was deleted and recreated: tell every live client and read it anew."""
        log.warning(
            "the stream's tail (%s) is behind offset %d: it was recreated; reading it anew",
            tail,
            self.position,
        )
        for sub in list(self._subscriptions):
            if sub.mode is Mode.LIVE:
                frame = encode_missed("reset", sub.cursor, 0)
                sub.cursor = -1
                sub._push_many([frame])
        self._ring.clear()
        self.position = self.tail_hint = -1
        return "first"

    # -- the hot path ------------------------------------------------------------

    def _dispatch(self, batch: Sequence[Message]) -> None:
        """Encode each new event once and queue it for every matching subscription."""
        position = self.position
        max_size = self.settings.max_event_bytes
        ring = self._ring
        match = self._trie.match
        deliveries = events = 0
        dirty: list[Subscription] = []
        for msg in batch:
            offset = msg.offset
            if offset <= position:
                continue  # read again (a read starts at the position, or a chunk before it)
            events += 1
            frame = encode_message(offset, msg.type, msg.body, max_size)
            ring.append(Event(offset, msg.topic, frame))
            position = self.position = offset
            subs = match(msg.topic)
            # Subscription.push, inlined: this loop runs once per delivery.
            for sub in subs:
                if offset > sub.cursor and not sub.closed:
                    sub.cursor = offset
                    frames = sub._frames
                    frames.append(frame)
                    if len(frames) == 1:
                        dirty.append(sub)
                    elif len(frames) > sub._limit:
                        sub.cut_slow()
            deliveries += len(subs)
        self.stats.events += events
        self.stats.deliveries += deliveries
        if dirty:
            self._flush(dirty)
        if position >= self.tail_hint and not self._ring_filled.is_set():
            log.info("ring filled up to offset %d; ready", position)
            self._ring_filled.set()

    def _flush(self, dirty: list[Subscription]) -> None:
        """Hand the subscriptions that got their first queued frame to their writers."""
        for sub in dirty:
            if sub.closed:
                continue
            sink = sub.sink
            if sink is not None:
                sink.flush(sub)
            else:
                sub._wake.set()

    # -- subscriptions ---------------------------------------------------------

    def subscribe(
        self, patterns: Sequence[Pattern], *, after: int | None = None, since: Since | None = None
    ) -> Subscription:
        """A new subscription; resume after offset ``after``, or start at ``since``."""
        sub = Subscription(self, patterns, after, since)
        self._subscriptions.add(sub)
        return sub

    def covers(self, after: int) -> bool:
        """Whether every event after offset ``after`` is in the ring or yet to be dispatched."""
        ring = self._ring
        return after >= self.position or (bool(ring) and ring[0].offset <= after + 1)

    async def reaches(self, offset: int) -> bool:
        """Whether the broker's stream holds ``offset`` (one probe shared by concurrent asks)."""
        if self._probe is None or self._probe.done():
            self._probe = asyncio.ensure_future(self.broker.tail(patient=True))
        try:
            tail = await asyncio.shield(self._probe)
        except BrokerUnavailable:
            return True  # cannot tell now: wait live for it, as a lagging worker would
        return tail is not None and tail >= offset

    def _go_live(self, sub: Subscription) -> None:
        if sub.closed:
            return
        sub.mode = Mode.LIVE
        self._trie.add(sub)

    def _replay_step(self, sub: Subscription) -> None:
        """Queue the next ring events after the cursor; go live or to the stream at the ends."""
        ring = self._ring
        cursor = sub.cursor
        if cursor >= self.position:
            self._go_live(sub)
            return
        if not ring or ring[0].offset > cursor + 1:
            self._join_catchup(sub, cursor)
            return
        i = bisect.bisect_right(ring, cursor, key=_offset_of)
        end = min(len(ring), i + REPLAY_CHUNK)
        frames = sub._frames
        hits: dict[str, bool] = {}  # a chunk holds few topics: match each once
        for k in range(i, end):
            event = ring[k]
            hit = hits.get(event.topic)
            if hit is None:
                hit = hits[event.topic] = sub.matches(event.topic)
            if hit:
                frames.append(event.frame)
        sub.cursor = ring[end - 1].offset

    def _join_catchup(self, sub: Subscription, start: int | Since) -> None:
        if sub.closed:
            return
        if isinstance(start, int):
            for catchup in self._catchups:
                if catchup.can_take(start):
                    catchup.add(sub)
                    return
        catchup = _CatchUp(self, start)
        catchup.add(sub)
        self._catchups.add(catchup)
        catchup.task = asyncio.create_task(catchup.run(), name="hopcast-catch-up")

    def _forget(self, sub: Subscription) -> None:
        self._subscriptions.discard(sub)
        if sub.mode is Mode.LIVE:
            self._trie.remove(sub)


def _offset_of(event: Event) -> int:
    return event.offset


__all__ = ["Event", "Hub", "MemoryBroker", "Stats"]
