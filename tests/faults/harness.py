"""The fault suite's tools: a confirmed publisher, resuming subscribers and the stream's truth.

Every scenario follows one script. A `Publisher` sends a numbered sequence with
publisher confirms, retrying each number until it is confirmed (so a number
whose confirm was lost in a fault may be stored twice: the stream, not the
publisher, is the truth). `Subscriber`s on several patterns, some fresh and some
resuming, read through the gateway as a browser's EventSource does: they honour
``retry:``, and every reconnect carries the ``Last-Event-ID`` of the last block
they completed. A fault is injected; afterwards `read_stream` reads the stream
straight from RabbitMQ and `assert_exact` checks that each subscriber holds
exactly the events the stream holds for it, in order, none twice.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import aiormq
import aiormq.abc
import httpx
from pamqp import commands as spec

from tests.support import AMQP_URL, free_port

AMQP_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
    RuntimeError,  # aiormq: "connection closed" when a channel is opened on a dying connection
)
"""What a publish or a connect can raise while the broker is away or the link is cut."""

WORDS = ("a", "b", "c")
KINDS = ("x", "y")
PATTERNS: tuple[tuple[str, ...], ...] = (("f.#",), ("f.a.*",), ("f.*.y", "f.b.#"), ("f.c.x",))
"""The subscribers' patterns: everything, one word, two overlapping patterns, one topic."""


def topic_of(number: int) -> str:
    """The topic of event ``number``: six topics in turn, ``f.a.x`` … ``f.c.y``."""
    return f"f.{WORDS[number % 3]}.{KINDS[(number // 3) % 2]}"


def type_of(number: int) -> str | None:
    """Odd events carry an event name, even ones none (``message`` on the client side)."""
    return "tick" if number % 2 else None


def body_of(number: int, padding: int = 0) -> bytes:
    return b"%d:" % number + b"x" * padding


def number_in(data: str) -> int:
    """The sequence number an event's data carries (-1 for anything else)."""
    head = data.split(":", 1)[0]
    return int(head) if head.isdigit() else -1


def topic_matches(pattern: str, topic: str) -> bool:
    """RabbitMQ's topic matching, written out independently of the gateway's trie."""

    def walk(words: Sequence[str], topic_words: Sequence[str]) -> bool:
        if not words:
            return not topic_words
        head, rest = words[0], words[1:]
        if head == "#":
            return any(walk(rest, topic_words[i:]) for i in range(len(topic_words) + 1))
        if not topic_words:
            return False
        return head in ("*", topic_words[0]) and walk(rest, topic_words[1:])

    return walk(pattern.split("."), topic.split("."))


# -- the truth: what the stream holds ---------------------------------------------------


@dataclass(frozen=True)
class Stored:
    """One message as the stream holds it."""

    offset: int
    topic: str
    type: str | None
    body: bytes

    @property
    def number(self) -> int:
        return int(self.body.split(b":", 1)[0])

    def as_event(self) -> tuple[int, str, str]:
        return self.offset, self.type or "message", self.body.decode()


async def read_stream(
    urls: Sequence[str], stream: str, total: int, timeout: float = 90.0
) -> list[Stored]:
    """Every message of ``stream`` from its first offset, read straight from RabbitMQ.

    Reads until every number below ``total`` was seen and a second passed with
    nothing more (a number may be stored twice when its first confirm was lost).
    """
    stored: dict[int, Stored] = {}
    arrived = asyncio.Event()
    async with asyncio.timeout(timeout):
        conn = await _connect_any(urls)
        try:
            channel = await conn.channel()
            await channel.basic_qos(prefetch_count=1000)

            async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
                props = message.header.properties
                offset = (props.headers or {})["x-stream-offset"]
                assert isinstance(offset, int), offset
                routing_key = getattr(message.delivery, "routing_key", "")
                stored[offset] = Stored(offset, routing_key, props.message_type, message.body)
                arrived.set()
                await channel.basic_ack(message.delivery_tag or 0)

            await channel.basic_consume(stream, on_message, arguments={"x-stream-offset": "first"})
            wanted = set(range(total))
            while True:
                arrived.clear()
                try:
                    async with asyncio.timeout(1.0):
                        await arrived.wait()
                except TimeoutError:
                    if wanted <= {s.number for s in stored.values()}:
                        break
        finally:
            await conn.close()
    return [stored[k] for k in sorted(stored)]


def check_sequence(truth: Sequence[Stored], total: int) -> int:
    """Every number below ``total`` is stored, first occurrences in order; returns repeats."""
    numbers = [s.number for s in truth]
    assert set(numbers) == set(range(total)), sorted(set(range(total)) ^ set(numbers))[:20]
    firsts = list(dict.fromkeys(numbers))
    assert firsts == sorted(firsts), "the stream holds the sequence out of order"
    return len(numbers) - len(firsts)


async def _connect_any(urls: Sequence[str]) -> aiormq.abc.AbstractConnection:
    errors = []
    for url in urls:
        try:
            async with asyncio.timeout(5):
                return await aiormq.connect(url)
        except AMQP_ERRORS as exc:
            errors.append(f"{url}: {exc!r}")
    raise ConnectionError("; ".join(errors))


# -- the publisher -------------------------------------------------------------------------


class Publisher:
    """Publishes the numbered sequence with confirms; retries each number until confirmed.

    ``mandatory`` is set: right after a broker restart a message can be confirmed
    yet unroutable, and a return counts as a failure, as a lost confirm does.
    """

    def __init__(
        self, exchange: str, urls: Sequence[str] = (AMQP_URL,), *, padding: int = 0
    ) -> None:
        self.exchange = exchange
        self.urls = list(urls)
        self.padding = padding
        self.confirmed = 0
        """Numbers 0 … confirmed-1 are confirmed."""
        self.failures: list[str] = []
        self._turn = 0
        self._conn: aiormq.abc.AbstractConnection | None = None
        self._channel: aiormq.abc.AbstractChannel | None = None
        self._progress = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def publish(self, count: int, *, interval: float = 0.0, deadline: float = 150.0) -> None:
        """Publish the next ``count`` numbers, one at a time, each retried until confirmed."""
        give_up = time.monotonic() + deadline
        for number in range(self.confirmed, self.confirmed + count):
            await self._publish_one(number, give_up)
            self.confirmed = number + 1
            self._progress.set()
            if interval:
                await asyncio.sleep(interval)

    async def run(self, *, interval: float, limit: int = 20000, deadline: float = 200.0) -> None:
        """Publish the next numbers until `stop` (or ``limit`` numbers, or ``deadline`` s)."""
        give_up = time.monotonic() + deadline
        while not self._stopping and self.confirmed < limit and time.monotonic() < give_up:
            await self.publish(1, deadline=max(1.0, give_up - time.monotonic()))
            await asyncio.sleep(interval)

    def start(self, *, interval: float) -> None:
        """Publish in the background, through whatever fault comes, until `stop`."""
        self._task = asyncio.create_task(self.run(interval=interval), name="publisher")
        self._task.add_done_callback(lambda _: self._progress.set())

    async def stop(self, more: int = 0, timeout: float = 150.0) -> int:
        """Stop once ``more`` numbers beyond those confirmed now are confirmed; return the total."""
        if self._task is None:
            return self.confirmed
        await self.wait_confirmed(self.confirmed + more, timeout)
        self._stopping = True
        await asyncio.wait_for(self._task, timeout)
        return self.confirmed

    async def wait_confirmed(self, count: int, timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while self.confirmed < count:
                if self._task is not None and self._task.done():
                    self._task.result()  # raises what stopped it
                    raise AssertionError(f"the publisher stopped at {self.confirmed} < {count}")
                self._progress.clear()
                await self._progress.wait()

    async def _publish_one(self, number: int, give_up: float) -> None:
        while time.monotonic() < give_up:
            try:
                channel = await self._ensure_channel()
                async with asyncio.timeout(10):
                    confirm = await channel.basic_publish(
                        body_of(number, self.padding),
                        exchange=self.exchange,
                        routing_key=topic_of(number),
                        properties=spec.Basic.Properties(
                            message_type=type_of(number), delivery_mode=2
                        ),
                        mandatory=True,
                    )
                if isinstance(confirm, spec.Basic.Ack):
                    return
                self._failed(number, repr(confirm))
            except AMQP_ERRORS as exc:
                self._failed(number, repr(exc))
                await self._drop()
            await asyncio.sleep(0.2)
        raise AssertionError(f"event {number} was never confirmed: {self.failures[-3:]}")

    def _failed(self, number: int, why: str) -> None:
        self.failures.append(f"{number}: {why}")
        if len(self.failures) <= 3 or len(self.failures) % 50 == 0:  # shown with -s, or on failure
            print(f"  publisher: {len(self.failures)} failed attempts; event {number}: {why[:200]}")

    async def _ensure_channel(self) -> aiormq.abc.AbstractChannel:
        if self._channel is not None and not self._channel.is_closed:
            return self._channel
        await self._drop()
        url = self.urls[self._turn % len(self.urls)]
        self._turn += 1  # the next connect tries the next broker (failover)
        async with asyncio.timeout(5):
            self._conn = await aiormq.connect(url)
            self._channel = await self._conn.channel(publisher_confirms=True)
        return self._channel

    async def _drop(self) -> None:
        conn, self._conn, self._channel = self._conn, None, None
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(*AMQP_ERRORS):
                async with asyncio.timeout(2):
                    await conn.close()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop()


# -- subscribers ------------------------------------------------------------------------------


class SseParser:
    """The WHATWG event-stream parser: a field per line, a block per blank line.

    ``last_event_id`` is what EventSource sends on reconnect: it changes only
    when a block is complete, so a block cut off mid-way is received again.
    """

    _LINES = re.compile(r"\r\n|\r|\n")

    def __init__(self) -> None:
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self.retries: list[int] = []
        """Every ``retry:`` value received, in order."""
        self.blocks = 0
        self._id_buffer: str | None = None
        self.reset()

    def reset(self) -> None:
        """A new connection: what was left of the old one is dropped."""
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._pending = ""
        self._data: list[str] = []
        self._event = ""
        self._id_buffer = self.last_event_id

    def feed(self, raw: bytes) -> list[tuple[str, str, str]]:
        """Parse bytes; return the events completed: (id, event, data)."""
        text = self._pending + self._decoder.decode(raw)
        keep = text.endswith("\r")  # may be the first half of a CRLF
        if keep:
            text = text[:-1]
        lines = self._LINES.split(text)
        self._pending = lines.pop() + ("\r" if keep else "")
        events = []
        for line in lines:
            if line == "":
                self.blocks += 1
                self.last_event_id = self._id_buffer
                if self._data:
                    events.append(
                        (self._id_buffer or "", self._event or "message", "\n".join(self._data))
                    )
                self._data, self._event = [], ""
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "id" and "\0" not in value:
                self._id_buffer = value
            elif name == "event":
                self._event = value
            elif name == "data":
                self._data.append(value)
            elif name == "retry" and value.isascii() and value.isdigit():
                self.retry = int(value)
                self.retries.append(self.retry)
        return events


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
        self.parser = SseParser()
        if last_event_id is not None:
            self.parser.last_event_id = str(last_event_id)
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
                self.parser.reset()
                self._changed.set()
                await asyncio.sleep(self.retry_ms / 1000)
            self.refusals.append(f"gave up after {len(self.connections)} connections")

    async def _connect_once(self, http: httpx.AsyncClient) -> bool:
        """One response, read to its end; False when EventSource would give up for good."""
        url = self.pool.pick()
        last_id = self.parser.last_event_id
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        conn = Connection(url, last_id)
        self.connections.append(conn)
        hints = len(self.parser.retries)
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
        conn.retries = self.parser.retries[hints:]
        if self.parser.retry is not None:
            self.retry_ms = self.parser.retry
        return True

    def _take(self, raw: bytes) -> None:
        for event_id, event, data in self.parser.feed(raw):
            self.events.append(Received(int(event_id), event, data))
        if self.start is None and self.parser.last_event_id:
            if self.events:
                self.refusals.append("a fresh subscription did not begin with its position")
            self.start = int(self.parser.last_event_id)
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
    gateways: Sequence[GatewayProcess] = (),
) -> None:
    """Each subscriber holds exactly its events of the stream, in order, none twice."""
    problems = [p for s in subscribers for p in s.problems(truth)]
    if problems:
        logs = "\n".join(f"--- {g.label} log ---\n{g.log_tail()}" for g in gateways)
        raise AssertionError("\n".join(problems) + "\n" + logs)


# -- the gateway as a child process --------------------------------------------------------------


class GatewayProcess:
    """``python -m hopcast serve`` in a child process, its log in a file for failure reports."""

    def __init__(
        self,
        env: Mapping[str, str],
        *args: str,
        log_dir: Path,
        label: str = "gateway",
        port: int | None = None,
    ) -> None:
        self.label = label
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{label}-{self.port}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("HOPCAST_")}
        full_env = {**base, "HOPCAST_HOST": "127.0.0.1", **env, "HOPCAST_PORT": str(self.port)}
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hopcast", "serve", *args],
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as exc:
            return repr(exc)
        return "\n".join(text.splitlines()[-lines:])

    def workers(self) -> list[int]:
        """The worker processes of a ``--workers N`` supervisor (spawned by multiprocessing)."""
        found = []
        for pid in _children(self.pid):
            with contextlib.suppress(OSError):
                if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
        return sorted(found)


@contextlib.contextmanager
def gateway(
    env: Mapping[str, str], *args: str, log_dir: Path, label: str = "gateway"
) -> Iterator[GatewayProcess]:
    child = GatewayProcess(env, *args, log_dir=log_dir, label=label)
    try:
        yield child
    finally:
        child.stop()


def _children(parent: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                found.append(int(stat.parent.name))
    return found


def client_ports(pid: int, server_port: int) -> set[int]:
    """The client ports of the established connections that process ``pid`` serves on a port."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                cols = row.split()
                local, remote, state, inode = cols[1], cols[2], cols[3], cols[9]
                if (
                    state == "01"
                    and inode in inodes
                    and int(local.rsplit(":", 1)[1], 16) == (server_port)
                ):
                    ports.add(int(remote.rsplit(":", 1)[1], 16))
    return ports


async def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {timeout} s: {what}") from None


async def wait_status(url: str, status: int, timeout: float = 120.0) -> None:
    """Poll ``url`` until it answers ``status`` (a transport error counts as no answer)."""
    async with httpx.AsyncClient(timeout=5) as http, asyncio.timeout(timeout):
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get(url)).status_code == status:
                    return
            await asyncio.sleep(0.1)


def rabbitmqctl(*args: str, timeout: float = 120.0) -> str:
    proc = subprocess.run(
        ["rabbitmqctl", "-q", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {proc.stderr.strip()[-500:]}")
    return proc.stdout


def amqp_host_port(url: str = AMQP_URL) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    return ("127.0.0.1" if host == "localhost" else host), parts.port or 5672


@dataclass
class Timings:
    """Phase durations of a scenario, printed for the report (``pytest -s`` or ``-rA``)."""

    marks: dict[str, float] = field(default_factory=dict)
    began: float = field(default_factory=time.monotonic)

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.monotonic() - self.began, 2)
        print(f"  {self.marks[name]:7.2f}s {name}")  # shown with -s, and for a failing test

    def show(self, title: str) -> None:
        print(f"{title}: " + ", ".join(f"{k} at {v}s" for k, v in self.marks.items()))
