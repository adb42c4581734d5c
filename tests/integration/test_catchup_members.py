"""Members of one catch-up reader never wait for each other.

Several clients resume from before the ring, so one catch-up reader serves them
all. Among them, one socket never reads and one reads slowly, with far more
data than kernel buffers and queues hold. The healthy members must get every
event, exactly once, while the never-reading one is still connected (they do
not wait for it); the slow one gets everything too; the never-reading one is
cut off once it has made no progress for the stall bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

import hopcast._http.connection
import hopcast._http.streaming
import hopcast._hub.replay
from hopcast._broker.memory import MemoryBroker
from tests.support.gateways import serve_in_loop, settings_for
from tests.support.rabbitmq import Names, amqp_publish, need_rabbitmq
from tests.support.sse import EventStream
from tests.support.waits import until

pytestmark = pytest.mark.slow

EVENTS = 3000
SIZE = 4000
"""Bytes per event: 12 MB per member, far beyond what sockets and a queue of 100 hold."""
STALL = 3.0
"""The stall bound in this test (seconds without progress before a member is cut off)."""


class RawReader:
    """An event stream on a raw socket, resumed after offset 0, read at a chosen pace.

    ``pace`` None: never read after the request (its receive buffer is tiny);
    0: read as fast as data comes; above 0: sleep that long between reads of 64 KB.
    """

    def __init__(self, port: int, pace: float | None) -> None:
        self.port = port
        self.pace = pace
        self.ids: list[int] = []
        self.ended = False
        self._stream = EventStream()
        self._sock = socket.socket()
        if pace is None:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        self._sock.setblocking(False)
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self._sock, ("127.0.0.1", self.port))
        request = (
            f"GET /events/bulk.%23 HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            "Accept: text/event-stream\r\nLast-Event-ID: 0\r\n\r\n"
        )
        await loop.sock_sendall(self._sock, request.encode())
        if self.pace is not None:
            self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        head = b""
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(self._sock, 65536)
        rest = head.split(b"\r\n\r\n", 1)[1]
        while True:
            self.ids.extend(int(e.last_event_id) for e in self._stream.feed(rest))
            if self.pace:
                await asyncio.sleep(self.pace)
            try:
                rest = await loop.sock_recv(self._sock, 65536)
            except ConnectionError:
                rest = b""
            if not rest:
                self.ended = True
                return

    def done(self) -> bool:
        return len(self.ids) >= EVENTS - 1 or self.ended

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._sock.close()


@pytest.fixture
def short_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stall bound of a few seconds, and a gather long enough that all members share a reader."""
    monkeypatch.setattr(hopcast._hub.replay, "CATCHUP_GATHER", 1.0)
    monkeypatch.setattr(hopcast._http.connection, "STALL_TIMEOUT", STALL)
    monkeypatch.setattr(hopcast._http.streaming, "SEND_TIMEOUT", STALL)


@pytest.fixture(
    params=[("memory", "native"), ("amqp", "native"), ("memory", "uvicorn")],
    ids=["memory-native", "amqp-native", "memory-uvicorn"],
)
def setup(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The broker (the real RabbitMQ once) and the server that writes the streams."""
    kind, server = request.param
    if kind == "amqp":
        need_rabbitmq()
    return kind, server


@pytest.mark.usefixtures("short_stall")
async def test_a_stalled_and_a_slow_member_hold_up_no_other_member_of_a_catch_up(
    setup: tuple[str, str], names: Names
) -> None:
    kind, server = setup
    settings = settings_for(
        kind, names if kind == "amqp" else None, ring_size=100, subscriber_buffer=100
    )
    broker = MemoryBroker() if kind == "memory" else None
    body = b"x" * SIZE
    async with serve_in_loop(settings, broker, server=server) as gateway:
        items = [(f"bulk.{i % 7}", body, None) for i in range(EVENTS)]
        if isinstance(broker, MemoryBroker):
            for topic, data, event in items:
                broker.append(topic, data, event)
        else:
            await amqp_publish(names, items)
        hub = gateway.hub
        await until(lambda: hub.position >= 0 and hub.stats.events >= EVENTS, "all dispatched")
        port = gateway.port
        healthy = [RawReader(port, 0) for _ in range(3)]
        slow = RawReader(port, 0.02)
        stalled = RawReader(port, None)
        readers = [*healthy, slow, stalled]
        try:
            for reader in readers:
                await reader.open()
            try:
                await until(lambda: all(r.done() for r in healthy), "the healthy members caught up")
            except AssertionError as exc:
                counts = [len(r.ids) for r in readers]
                detail = f"{exc}; events per member (the last never reads): {counts}"
                raise AssertionError(detail) from None
            assert hub.subscribers == len(readers), "the never-reading member is still connected"
            expected = list(range(1, EVENTS))
            for reader in healthy:
                assert reader.ids == expected
            await until(slow.done, "the slow member caught up")
            assert slow.ids == expected
            await until(lambda: hub.subscribers <= len(healthy) + 1, "the stalled member cut off")
            assert hub.stats.slow_disconnects >= 1
        finally:
            for reader in readers:
                with contextlib.suppress(OSError):
                    reader.close()
