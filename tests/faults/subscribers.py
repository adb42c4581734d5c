"""Subscribers that read as a browser's EventSource does, and the checks made on what they hold.

A `Subscriber` honours ``retry:`` and reconnects with the ``Last-Event-ID`` of the
last block it completed; `Pool` spreads connections over gateways as a load
balancer would. `assert_exact` checks that each subscriber holds exactly the
events the stream holds for its patterns after its start point, in order, none
twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode

import httpx

from tests.faults.sequence import Publisher, Stored, number_in, topic_matches
from tests.support.processes import ChildGateway
from tests.support.sse import EventStream


class Pool:
    """The gateways behind a load balancer: each new connection goes to the next one in turn."""

    def __init__(self, *urls: str) -> None:
        self.urls = list(urls)
        self._turn = 0

    def pick(self) -> str:
        url = self.urls[self._turn % len(self.urls)]
        self._turn += 1
        return url

    def drain(self, url: str) -> None:
        """Send no new connection to ``url`` (an operator drains an instance it stops)."""
        self.urls.remove(url)


@dataclass(frozen=True)
class Received:
    id: int
    event: str
    data: str


@dataclass
class Connection:
    """One HTTP response of a subscriber."""

    url: str
    sent_last_id: str | None
    local_port: int | None = None
    ended: str = ""
    """``eof`` (the gateway ended the response) or the transport error's name."""
    retries: list[int] = field(default_factory=list)
    """The ``retry:`` hints it carried (the first one comes with the preamble)."""


def events_path(patterns: Sequence[str], query: Mapping[str, str] | None = None) -> str:
    """``/events/{pattern}`` for one pattern, ``/events?topic=…&topic=…`` for several."""
    extra = urlencode(dict(query or {}))
    if len(patterns) == 1:
        path = "/events/" + quote(patterns[0], safe="*.")
        return path + (f"?{extra}" if extra else "")
    params = urlencode([("topic", p) for p in patterns])
    return f"/events?{params}" + (f"&{extra}" if extra else "")


class Subscriber:
    """A resuming SSE client, as a browser's EventSource: honours ``retry:``, sends Last-Event-ID.

    Its start point is the ``Last-Event-ID`` it was given, -1 with
    ``since_first``, or else the ``id:`` block a fresh subscription begins with.
    With ``continues=(start, events)`` it goes on from another client's reading.
    """

    def __init__(
        self,
        name: str,
        pool: Pool,
        patterns: Sequence[str],
        *,
        last_event_id: int | None = None,
        since_first: bool = False,
        retry_ms: int = 500,
        read_timeout: float = 30.0,
        lifetime: float = 240.0,
        max_connections: int = 200,
        continues: tuple[int, Sequence[Received]] | None = None,
    ) -> None:
        self.name = name
        self.pool = pool
        self.patterns = tuple(patterns)
        self.path = events_path(patterns, {"since": "first"} if since_first else None)
        self.start: int | None = -1 if since_first else last_event_id
        self.stream = EventStream("" if last_event_id is None else str(last_event_id))
        self.events: list[Received] = []
        if continues is not None:  # it takes over from a client that read since a start
            self.start, earlier = continues
            self.events += earlier
        self.connections: list[Connection] = []
        self.refusals: list[str] = []
        self.retry_ms = retry_ms
        self._timeout = httpx.Timeout(5.0, read=read_timeout)
        self._lifetime = lifetime
        self._max_connections = max_connections
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"<Subscriber {self.name} {self.path} start={self.start}>"

    async def __aenter__(self) -> Subscriber:
        self._task = asyncio.create_task(self._run(), name=f"subscriber {self.name}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def last_id(self) -> int | None:
        return self.events[-1].id if self.events else None

    def matches(self, topic: str) -> bool:
        return any(topic_matches(p, topic) for p in self.patterns)

    def expected(self, truth: Sequence[Stored]) -> list[tuple[int, str, str]]:
        start = -1 if self.start is None else self.start
        return [s.as_event() for s in truth if s.offset > start and self.matches(s.topic)]

    async def _run(self) -> None:
        give_up = time.monotonic() + self._lifetime
        async with httpx.AsyncClient(timeout=self._timeout) as http:
            while len(self.connections) < self._max_connections:
                if time.monotonic() > give_up:
                    self.refusals.append("still reconnecting when its lifetime ended")
                    return
                if not await self._connect_once(http):
                    return
                self.stream.reconnect()
                self._changed.set()
                await asyncio.sleep(self.retry_ms / 1000)
            self.refusals.append(f"gave up after {len(self.connections)} connections")

    async def _connect_once(self, http: httpx.AsyncClient) -> bool:
        """One response, read to its end; False when EventSource would give up for good."""
        url = self.pool.pick()
        last_id = self.stream.last_event_id
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        conn = Connection(url, last_id)
        self.connections.append(conn)
        hints = len(self.stream.retries)
        try:
            async with http.stream("GET", url + self.path, headers=headers) as response:
                if response.status_code != 200:
                    body = (await response.aread())[:300]
                    self.refusals.append(f"{response.status_code} from {url}: {body!r}")
                    return False  # a non-200 answer makes EventSource stop for good
                stream = response.extensions.get("network_stream")
                if stream is not None:
                    conn.local_port = stream.get_extra_info("client_addr")[1]
                async for raw in response.aiter_raw():
                    self._take(raw)
            conn.ended = "eof"
        except httpx.TransportError as exc:
            conn.ended = type(exc).__name__
        conn.retries = self.stream.retries[hints:]
        if self.stream.retry is not None:
            self.retry_ms = self.stream.retry
        return True

    def _take(self, raw: bytes) -> None:
        for event in self.stream.feed(raw):
            self.events.append(Received(int(event.last_event_id), event.type, event.data))
        if self.start is None and self.stream.last_event_id:
            if self.events:
                self.refusals.append("a fresh subscription did not begin with its position")
            self.start = int(self.stream.last_event_id)
        self._changed.set()

    async def wait_started(self, timeout: float = 60.0) -> None:
        """Until the first response began (a fresh subscriber knows its position)."""
        await self._wait(lambda: self.start is not None and bool(self.connections), timeout)

    async def wait_for_offset(self, offset: int, timeout: float = 90.0) -> None:
        """Until an event at or beyond ``offset`` arrived."""
        await self._wait(lambda: self.last_id is not None and self.last_id >= offset, timeout)

    async def wait_count(self, count: int, timeout: float = 90.0) -> None:
        """Until ``count`` events arrived."""
        await self._wait(lambda: len(self.events) >= count, timeout)

    async def wait_connections(self, count: int, timeout: float = 60.0) -> None:
        """Until its ``count``-th connection was opened (it reconnected)."""
        await self._wait(lambda: len(self.connections) >= count, timeout)

    async def wait_number(self, number: int, timeout: float = 60.0) -> None:
        """Until an event carrying ``number`` or a later one arrived."""
        await self._wait(
            lambda: bool(self.events) and number_in(self.events[-1].data) >= number, timeout
        )

    async def wait_caught_up(self, truth: Sequence[Stored], timeout: float = 90.0) -> None:
        expected = self.expected(truth)
        if expected:
            await self.wait_for_offset(expected[-1][0], timeout)

    async def _wait(self, check: Callable[[], bool], timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not check():
                    if self._task is not None and self._task.done():
                        raise AssertionError(f"{self} stopped: {self.refusals}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"{self} timed out; {self.describe()}") from None

    def describe(self) -> str:
        ends = [(c.url.rsplit(":", 1)[-1], c.sent_last_id, c.ended) for c in self.connections]
        return f"{len(self.events)} events, last id {self.last_id}, connections {ends}"

    def problems(self, truth: Sequence[Stored]) -> list[str]:
        """What differs from exactly the stream's matching events after the start, in order."""
        problems = [f"{self.name}: {r}" for r in self.refusals]
        if self.start is None:
            return [*problems, f"{self.name}: never learnt its position"]
        expected = self.expected(truth)
        got = [(e.id, e.event, e.data) for e in self.events]
        if got == expected:
            return problems
        want_ids = [e[0] for e in expected]
        got_ids = [e[0] for e in got]
        missing = sorted(set(want_ids) - set(got_ids))
        extra = sorted(set(got_ids) - set(want_ids))
        twice = sorted(k for k, n in Counter(got_ids).items() if n > 1)
        disorder = [b for a, b in itertools.pairwise(got_ids) if b <= a]
        altered = [g for g in got if g[0] in set(want_ids) and g not in set(expected)]
        problems.append(
            f"{self.name} ({self.path}, start {self.start}): {len(got)} events, "
            f"{len(expected)} expected; missing {missing[:10]} ({len(missing)}), "
            f"unexpected {extra[:10]}, twice {twice[:10]}, out of order {disorder[:10]}, "
            f"altered {altered[:3]}; {self.describe()}"
        )
        return problems


async def flowing(
    subscribers: Sequence[Subscriber], publisher: Publisher, after: str, timeout: float = 60.0
) -> None:
    """Live events reach every subscriber again while publishing goes on (recovery, not a pause).

    Waits for an event numbered 20 beyond what is confirmed now; a healthy gateway
    gets there in seconds (its reconnect backoff is at most 5 s), so ``timeout`` is
    generous, and a failure names the scenario's step.
    """
    target = publisher.confirmed + 20
    deadline = time.monotonic() + timeout
    try:
        for sub in subscribers:
            await sub.wait_number(target, max(0.1, deadline - time.monotonic()))
    except AssertionError as exc:
        raise AssertionError(
            f"live events stopped reaching subscribers after {after}: event {target} "
            f"(published at {publisher.confirmed} now) not seen within {timeout} s: {exc}"
        ) from None


async def caught_up(
    subscribers: Sequence[Subscriber], truth: Sequence[Stored], timeout: float = 120.0
) -> None:
    """Wait (generously) until every subscriber received its last expected event."""
    deadline = time.monotonic() + timeout
    for sub in subscribers:
        await sub.wait_caught_up(truth, max(0.1, deadline - time.monotonic()))
    await asyncio.sleep(0.5)  # anything sent twice at the end would show up by now


def assert_exact(
    subscribers: Sequence[Subscriber],
    truth: Sequence[Stored],
    gateways: Sequence[ChildGateway] = (),
) -> None:
    """Each subscriber holds exactly its events of the stream, in order, none twice."""
    problems = [p for s in subscribers for p in s.problems(truth)]
    if problems:
        logs = "\n".join(f"--- {g.label} log ---\n{g.log_tail()}" for g in gateways)
        raise AssertionError("\n".join(problems) + "\n" + logs)


async def open_fresh(
    stack: contextlib.AsyncExitStack,
    pool: Pool,
    publisher: Publisher,
    patterns: Sequence[Sequence[str]],
    copies: int = 1,
) -> tuple[list[Subscriber], int]:
    """Fresh subscribers (``copies`` per pattern set), 30 events published; the 10th's id.

    Every scenario starts so: the id is where its resuming subscribers start.
    """
    subs = [
        Subscriber(f"fresh {'&'.join(p)}" + (f" #{i}" if copies > 1 else ""), pool, tuple(p))
        for i in range(1, copies + 1)
        for p in patterns
    ]
    for sub in subs:
        await stack.enter_async_context(sub)
        await sub.wait_started()
    await publisher.publish(30)
    await subs[0].wait_count(10)
    return subs, subs[0].events[9].id


async def join(
    stack: contextlib.AsyncExitStack,
    subs: list[Subscriber],
    *more: Subscriber,
    past: int | None = None,
) -> None:
    """Open ``more`` subscribers beside ``subs``; with ``past``, wait until each read beyond it."""
    for sub in more:
        await stack.enter_async_context(sub)
        if past is not None:
            await sub.wait_for_offset(past + 1)
    subs.extend(more)


async def read_back(
    stack: contextlib.AsyncExitStack, pool: Pool, subs: list[Subscriber], truth: Sequence[Stored]
) -> Subscriber:
    """After the fault, one more subscriber reads everything from the stream's first event;
    then every subscriber is waited for until it holds its last expected event."""
    after = Subscriber("since first, after", pool, ("f.#",), since_first=True)
    await join(stack, subs, after)
    await caught_up(subs, truth)
    return after
