"""Fault 5: a subscriber stops reading: it is cut off, nobody waits for it, it catches up later."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import h11
import pytest

from tests.faults.sequence import (
    PATTERNS,
    Publisher,
    check_sequence,
    read_stream,
)
from tests.faults.subscribers import (
    Pool,
    Received,
    Subscriber,
    assert_exact,
    caught_up,
    events_path,
    join,
)
from tests.faults.timings import Timings
from tests.support.processes import child_gateway
from tests.support.rabbitmq import AMQP_URL, Names
from tests.support.sse import EventStream
from tests.support.waits import wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]

TOTAL = 150
PADDING = 64_000
"""Bytes per event: ~10 MB in all, far more than a socket and a queue of 16 can hold."""


class StalledReader:
    """A subscriber on a raw socket with a tiny receive buffer, which stops reading on purpose."""

    def __init__(self, port: int, path: str) -> None:
        self.port = port
        self.path = path
        self.stream = EventStream()
        self.events: list[Received] = []
        self.start: int | None = None
        self.ended = ""
        self._http = h11.Connection(h11.CLIENT)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)

    async def open(self) -> None:
        """Connect, read up to the first block (its position), then stop reading."""
        sock = self._sock
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", self.port))
        request = h11.Request(
            method="GET",
            target=self.path,
            headers=[("Host", f"127.0.0.1:{self.port}"), ("Accept", "text/event-stream")],
        )
        await loop.sock_sendall(
            sock, self._http.send(request) + self._http.send(h11.EndOfMessage())
        )
        async with asyncio.timeout(30):
            while self.start is None and not self.ended:
                await self._read_some()
        if self.start is None:
            raise AssertionError(f"the subscription did not begin: {self.ended}")

    async def read_to_end(self, timeout: float = 60.0) -> None:
        """Read again: what got through before the cut, up to the end of the connection."""
        async with asyncio.timeout(timeout):
            while not self.ended:
                await self._read_some()

    def close(self) -> None:
        self._sock.close()

    async def _read_some(self) -> None:
        data = await asyncio.get_running_loop().sock_recv(self._sock, 65536)
        self._http.receive_data(data)
        while not self.ended:
            try:
                event = self._http.next_event()
            except h11.RemoteProtocolError as exc:
                self.ended = f"cut mid-response ({exc})"
                return
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Response) and event.status_code != 200:
                self.ended = f"status {event.status_code}"
            elif isinstance(event, h11.Data):
                for sse in self.stream.feed(bytes(event.data)):
                    self.events.append(Received(int(sse.last_event_id), sse.type, sse.data))
                if self.start is None and self.stream.last_event_id:
                    self.start = int(self.stream.last_event_id)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                self.ended = "end of response"


async def test_a_subscriber_that_stops_reading_is_cut_off_and_catches_up(
    names: Names, tmp_path: Path
) -> None:
    timings = Timings()
    env = {
        **names.env(),
        "HOPCAST_QUEUE_SIZE": "16",
        "HOPCAST_RING_SIZE": "40",
        "HOPCAST_RETRY": "300",
    }
    with child_gateway(env, log_dir=tmp_path) as gw:
        await wait_ready(gw.url)
        pool = Pool(gw.url)
        stalled = StalledReader(gw.port, events_path(("f.#",)))
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(stalled.close)
            await stalled.open()
            assert stalled.start is not None
            publisher = await stack.enter_async_context(Publisher(names.exchange, padding=PADDING))
            subs = [Subscriber(f"fresh {'&'.join(p)}", pool, p) for p in PATTERNS]
            for sub in subs:
                await stack.enter_async_context(sub)
                await sub.wait_started()
            await publisher.publish(TOTAL, interval=0.01)
            timings.mark("published")
            truth = await read_stream([AMQP_URL], names.stream, TOTAL)
            # everyone else got everything while the stalled one still does not read
            await caught_up(subs, truth)
            timings.mark("others caught up")
            await stalled.read_to_end()
            timings.mark(f"stalled one read {len(stalled.events)} events and the end")
            last = stalled.stream.last_event_id
            assert last
            resumed = Subscriber(
                "stalled, resuming",
                pool,
                ("f.#",),
                last_event_id=int(last),
                continues=(stalled.start, stalled.events),
            )
            await join(stack, subs, resumed)
            await caught_up([resumed], truth)
            timings.mark("it caught up")
        check_sequence(truth, TOTAL)
        assert_exact(subs, truth, [gw])
        # it was cut off: its first connection ended long before the last event
        assert len(stalled.events) < TOTAL // 2, (len(stalled.events), stalled.ended)
        assert len(resumed.connections) == 1, resumed.describe()
    timings.show(f"slow reader ({stalled.ended})")
