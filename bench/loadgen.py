"""The subscriber side of the load generator: thousands of SSE connections per process.

Each connection is a bare non-blocking socket speaking HTTP/1.1 by hand, read
with ``recvmsg`` when the loop says it is readable: no client library, no
per-event object. Event bodies have a fixed layout (see
`bench.publisher.make_body`). A read is timed by the kernel, not by the
generator: ``SO_TIMESTAMPNS`` stamps each socket read with the time its last
bytes reached the socket, on the same clock as the publisher's ``time.time()``.
With 1,000 connections over two processes on two busy cores, a read came up to
a few milliseconds after its bytes had arrived, as large as a fast server's
whole p99; the stamp leaves that out, and each step reports it (``read lag``)
and the latency the reads' own clock gives (``read p99``). While a step runs,
a read costs that stamp, a count of the event starts it completes
(``bytes.count``) and a list append: what it holds is kept, not parsed. After
the step, one compiled regex pulls the sequence numbers and send timestamps out
of each kept read (`SseSubscriber.tally`): repeats, and each event's latency
against the stamp of the read that completed it. That work counts in the
generator's CPU all the same. Chunked transfer encoding needs no decoding: a
chunk never splits an event that a server wrote in one piece, and the scan
skips the chunk-size lines.

A process opens its share of a step's connections (`subscriber_process`);
`bench.fleet.SubscriberFleet` starts and drives several.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import re
import socket
import struct
import time
from dataclasses import dataclass

import uvloop

from bench.publisher import BODY_LEN
from bench.tally import FINE, HIST_SIZE, FleetResult, Histogram, TopicTally, bucket_of

Arrivals = dict[tuple[str, int], float]
"""When a bare stream consumer received each event: (topic, seq) to epoch seconds."""

CONNECT_CONCURRENCY = 256
"""Connections a process opens at once, so the server's accept backlog never overflows."""
CONNECT_TIMEOUT = 30.0
READ_SIZE = 1 << 16
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Linux's option (and control message) for a read's receive time in nanoseconds;
Python's socket module does not name it."""
_ANCILLARY = socket.CMSG_SPACE(16)
_TIMESPEC = struct.Struct("@qq")

_FIND = re.compile(rb'"seq": *(\d+), "ts": *([0-9.]+)').findall
_START = b'{"seq"'


@dataclass(frozen=True)
class FleetConfig:
    """What every subscriber process of a fleet opens, and how it knows a stream is live."""

    host: str
    port: int
    topics: tuple[str, ...]
    """One entry per connection."""
    path: str = "/events/"
    ready_marker: bytes | None = None
    """Bytes in the body that say the subscription is live (None: the response headers)."""
    headers: tuple[tuple[str, str], ...] = ()
    processes: int = 1
    source_net: int = 1
    """Second octet of the processes' loopback source addresses (127.N.0.P)."""
    max_seconds: float = 600.0
    """A process closes everything and exits after this long, whatever happens."""


class SseSubscriber:
    """One SSE connection: parses the response head, then keeps its reads for `tally`."""

    __slots__ = (
        "_buf",
        "_head",
        "_marker",
        "_pool",
        "_reads",
        "duplicates",
        "last",
        "live",
        "received",
        "sock",
        "started",
        "topic",
    )

    def __init__(self, pool: _Pool, topic: str, marker: bytes | None) -> None:
        self._pool = pool
        self._marker = marker
        self._head: bytes | None = b""
        self._buf = b""
        self._reads: list[tuple[float, float, bytes]] = []
        """(kernel receive time, the generator's lag behind it, bytes holding whole
        events) per read, until `tally`."""
        self.topic = topic
        self.sock: socket.socket | None = None
        self.live: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.started = time.perf_counter()
        self.received = 0
        self.duplicates = 0
        self.last = -1

    def attach(self, sock: socket.socket) -> None:
        """Read ``sock`` (connected, the request sent) whenever it is readable."""
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self.readable)

    def close(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()

    def readable(self) -> None:
        if self.sock is None:
            return
        try:
            data, ancillary, _, _ = self.sock.recvmsg(READ_SIZE, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc)
            return
        if not data:
            self._lost(None)
            return
        now = time.time()
        at = now
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                at = seconds + nanoseconds * 1e-9
        self.data_received(data, at, now - at)

    def _lost(self, exc: Exception | None) -> None:
        self.close()
        if not self.live.done():
            self.live.set_exception(ConnectionError(f"closed before live: {exc!r}"))
        elif not self._pool.closing:
            self._pool.disconnects += 1

    def data_received(self, data: bytes, at: float, lag: float = 0.0) -> None:
        """What a read brought, whose last bytes reached the socket at ``at`` (epoch s),
        ``lag`` seconds before the generator read them."""
        if self._head is not None:
            data = self._read_head(data)
            if not data:
                return
        if not self.live.done() and (self._marker is None or self._marker in data):
            self.live.set_result(None)
        buf = self._buf + data if self._buf else data
        pos = buf.rfind(_START)
        if pos >= 0 and pos + BODY_LEN > len(buf):
            self._buf = buf[pos:]
            buf = buf[:pos]
        else:
            self._buf = buf[-5:]
        # Every event start left in ``buf`` has its whole body: count them now, and
        # read their numbers after the step (`tally`), off the machine's busy time.
        count = buf.count(_START)
        if not count:
            return
        self._reads.append((at, lag, buf))
        pool = self._pool
        pool.received += count
        if not pool.first_event_at:
            pool.first_event_at = at
        pool.last_event_at = at

    def tally(self, arrivals: Arrivals | None = None) -> None:
        """Read the sequence numbers and send times of what the reads brought: repeats
        and latencies (each event's receive time is that of the read that completed it);
        with ``arrivals``, also each event's lead over a bare stream consumer's receipt."""
        pool = self._pool
        hist, read_hist, lag_hist = pool.hist, pool.read_hist, pool.lag_hist
        last = self.last
        dups = received = 0
        for now, lag, buf in self._reads:
            found = _FIND(buf)
            if not found:
                continue
            received += len(found)
            lag_hist[bucket_of(int(lag * 10_000))] += 1
            for seq_b, ts_b in found:
                seq = int(seq_b)
                if seq <= last:
                    dups += 1
                else:
                    last = seq
                latency = now - float(ts_b)
                i = int(latency * 10_000)
                hist[i if 0 <= i < FINE else bucket_of(i)] += 1
                read_hist[bucket_of(int((latency + lag) * 10_000))] += 1
            # A connection's events arrive in publish order: the first of a read waited longest.
            longest = now - float(found[0][1])
            pool.max_latency = max(pool.max_latency, longest)
            pool.max_read_latency = max(pool.max_read_latency, longest + lag)
            pool.max_lag = max(pool.max_lag, lag)
            if arrivals is not None:
                pool.share_of(self.topic, now, found, arrivals)
        self._reads.clear()
        self.last = last
        self.duplicates += dups
        self.received += received

    def _read_head(self, data: bytes) -> bytes:
        head = (self._head or b"") + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            self._head = head
            return b""
        self._head = None
        status = head[: head.find(b"\r\n")]
        if b" 200 " not in status + b" ":
            if not self.live.done():
                self.live.set_exception(ConnectionError(status.decode(errors="replace")))
            self.close()
            return b""
        if self._marker is None and not self.live.done():
            self.live.set_result(None)
        return head[end + 4 :]


class _Pool:
    """The connections of one process and the counters they share."""

    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.hist = [0] * HIST_SIZE
        self.read_hist = [0] * HIST_SIZE
        self.lag_hist = [0] * HIST_SIZE
        self.subscribers: list[SseSubscriber] = []
        self.received = 0
        self.disconnects = 0
        self.max_latency = 0.0
        self.max_read_latency = 0.0
        self.max_lag = 0.0
        self.first_event_at = 0.0
        self.last_event_at = 0.0
        self.closing = False
        self.share = Histogram()
        self.share_negative = 0
        extra = "".join(f"{k}: {v}\r\n" for k, v in config.headers)
        self._template = (
            f"GET {config.path}{{}} HTTP/1.1\r\nHost: {config.host}:{config.port}\r\n"
            f"Accept: text/event-stream\r\nCache-Control: no-cache\r\n{extra}\r\n"
        )

    def request(self, topic: str) -> bytes:
        return self._template.format(topic).encode()

    def share_of(
        self, topic: str, now: float, found: list[tuple[bytes, bytes]], arrivals: Arrivals
    ) -> None:
        """Each event of a read: its receipt at ``now`` less the bare consumer's receipt."""
        counts = self.share.counts
        for seq_b, _ in found:
            there = arrivals.get((topic, int(seq_b)))
            if there is None:
                continue
            lead = now - there
            if lead < 0:
                self.share_negative += 1
            counts[bucket_of(int(lead * 10_000))] += 1
            self.share.maximum = max(self.share.maximum, lead)

    def result(
        self,
        connect_times: list[float],
        failed: int,
        errors: list[str],
        arrivals: Arrivals | None = None,
    ) -> FleetResult:
        started = time.process_time()
        for sub in self.subscribers:
            sub.tally(arrivals)
        out = FleetResult(
            connected=len(connect_times),
            failed=failed,
            disconnects=self.disconnects,
            received=sum(sub.received for sub in self.subscribers),
            tally_cpu=time.process_time() - started,
            connect_times=connect_times,
            first_event_at=self.first_event_at,
            last_event_at=self.last_event_at,
            errors=errors[:5],
        )
        for sub in self.subscribers:
            tally = out.topics.setdefault(sub.topic, TopicTally())
            tally.connections += 1
            tally.unique += sub.received - sub.duplicates
            tally.duplicates += sub.duplicates
        out.latency.counts.update({i: n for i, n in enumerate(self.hist) if n})
        out.latency.maximum = self.max_latency
        out.read_latency.counts.update({i: n for i, n in enumerate(self.read_hist) if n})
        out.read_latency.maximum = self.max_read_latency
        out.read_lag.counts.update({i: n for i, n in enumerate(self.lag_hist) if n})
        out.read_lag.maximum = self.max_lag
        out.share, out.share_negative = self.share, self.share_negative
        return out


async def _open(
    pool: _Pool, topic: str, source: str, gate: asyncio.Semaphore
) -> SseSubscriber | BaseException:
    loop = asyncio.get_running_loop()
    config = pool.config
    async with gate:
        sub = SseSubscriber(pool, topic, config.ready_marker)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind((source, 0))
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, (config.host, config.port))
                await loop.sock_sendall(sock, pool.request(topic))
                sub.attach(sock)
                await sub.live
        except (OSError, TimeoutError, ConnectionError) as exc:
            sub.close()
            sock.close()
            return exc
        return sub


async def _serve(
    config: FleetConfig, index: int, link: multiprocessing.connection.Connection
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + config.max_seconds
    pool = _Pool(config)
    source = f"127.{config.source_net}.0.{index + 2}"
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened_at = time.time()
    outcomes = await asyncio.gather(*(_open(pool, t, source, gate) for t in config.topics))
    connect_times: list[float] = []
    errors: list[str] = []
    for outcome in outcomes:
        if isinstance(outcome, SseSubscriber):
            pool.subscribers.append(outcome)
            connect_times.append(time.perf_counter() - outcome.started)
        else:
            errors.append(repr(outcome))
    failed = len(outcomes) - len(pool.subscribers)
    link.send(("connected", len(pool.subscribers), failed, errors[:5]))
    arrivals: Arrivals | None = None
    try:
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            ready = await loop.run_in_executor(None, link.poll, min(remaining, 1.0))
            if not ready:
                continue
            command, argument = link.recv()
            if command == "count":
                link.send((pool.received, pool.last_event_at))
            elif command == "finish":
                arrivals = argument
                break
    finally:
        pool.closing = True
        result = pool.result(connect_times, failed, errors, arrivals)
        result.opened_at = opened_at
        for sub in pool.subscribers:
            sub.close()
        link.send(("result", result))


def subscriber_process(
    config: FleetConfig, index: int, link: multiprocessing.connection.Connection
) -> None:
    """One subscriber process: its connections, the fleet's commands, then what they saw."""
    uvloop.run(_serve(config, index, link))
