"""The hub: one live stream reader per process, dispatch through a pattern index, and resume.

The data path is stream → `Hub._dispatch` → `deliver` into each matching
`Subscription` (`hopcast._hub.subscription`: a client's queue and cursor) → its
writer, a connection of the HTTP edge. Resumes are placed here (`Hub.place`)
and served by the ring and the catch-up readers (`hopcast._hub.replay`). How a
resume hands over from replay to live without a gap or a duplicate is drawn in
``docs/architecture.md``.

>>> from hopcast._broker.memory import MemoryBroker
>>> hub = Hub(MemoryBroker(), Settings.from_env({"HOPCAST_BROKER": "memory://"}))
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from hopcast._broker.base import Broker, Message, StartAt
from hopcast._core.errors import BrokerUnavailable, SubscriptionClosed
from hopcast._core.settings import Settings
from hopcast._core.sse import encode_message, encode_missed
from hopcast._core.topics import Pattern
from hopcast._hub.patterns import PatternTrie
from hopcast._hub.replay import CatchUps, Event, Ring
from hopcast._hub.subscription import Mode, Since, Subscription, deliver

log = logging.getLogger("hopcast.hub")  # named by layer: module paths are internal

DISPATCH_SLICE = 128
"""Events dispatched before writers get a turn: a burst must not overflow a fast client's queue."""
BACKOFF_START = 0.2
BACKOFF_MAX = 5.0


@dataclass
class Stats:
    """Counters for ``/metrics``; plain integers, bumped per batch on the hot path."""

    events: int = 0
    deliveries: int = 0
    slow_disconnects: int = 0
    reconnects: int = 0
    refused_connections: int = 0


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
        self.shutting_down = False
        self._ring = Ring(settings.ring_size)
        self._trie: PatternTrie[Subscription] = PatternTrie()
        self.catchups = CatchUps(
            broker, max_event_bytes=settings.max_event_bytes, covers=self.covers
        )
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
        await self.catchups.aclose()
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)

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
        first = self._ring.first
        return first if first is not None else self.position + 1

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
                async with self.broker.read(start, purpose="live") as reader:
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
                sub.queue([encode_missed("retention", sub.cursor, first)], first - 1)
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
                sub.queue([encode_missed("reset", sub.cursor, 0)], -1)
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
            if subs:
                deliver(subs, offset, frame, dirty)
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
            if not sub.closed:
                sub.flush()

    # -- subscriptions ---------------------------------------------------------

    def subscribe(
        self, patterns: Sequence[Pattern], *, after: int | None = None, since: Since | None = None
    ) -> Subscription:
        """A new subscription; resume after offset ``after``, or start at ``since``."""
        sub = Subscription(
            self, patterns, after=after, since=since, limit=self.settings.subscriber_buffer
        )
        self._subscriptions.add(sub)
        return sub

    async def place(self, sub: Subscription) -> int | None:
        """Put ``sub`` live (its first ``id`` returned), in replay, or in a catch-up."""
        await self._tail_known.wait()
        if sub.closed:
            raise SubscriptionClosed(sub.closed)
        if sub.after is not None:
            cursor = sub.after
            frames = []
            if sub.after > max(self.position, self.tail_hint) and not await self.reaches(sub.after):
                first = self.earliest
                frames.append(encode_missed("reset", sub.after, first))
                cursor = first - 1
            if sub.closed:
                raise SubscriptionClosed(sub.closed)
            sub.queue(frames, cursor)
            sub.enter(Mode.REPLAY)
            return None
        if sub.since is not None:
            self.catchups.join(sub, sub.since)
            return None
        sub.cursor = max(self.position, self.tail_hint)
        self._go_live(sub)
        return sub.cursor

    def step(self, sub: Subscription) -> None:
        """Queue the next ring events after the cursor; go live or to the stream at the ends."""
        cursor = sub.cursor
        if cursor >= self.position:
            self._go_live(sub)
        elif not self._ring.reaches(cursor):
            self.catchups.join(sub, cursor)
        else:
            self._ring.replay(sub)

    def forget(self, sub: Subscription, reason: str) -> None:
        """``sub`` closed: it leaves the index (a catch-up drops it at its next batch)."""
        self._subscriptions.discard(sub)
        if sub.mode is Mode.LIVE:
            self._trie.remove(sub)
        if reason == "slow":
            self.stats.slow_disconnects += 1

    def covers(self, after: int) -> bool:
        """Whether every event after offset ``after`` is in the ring or yet to be dispatched."""
        return after >= self.position or self._ring.reaches(after)

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
        sub.enter(Mode.LIVE)
        self._trie.add(sub)


__all__ = ["Hub", "Stats"]
