"""Held writes: held only while busy and filling, never past the delay, released together."""

from __future__ import annotations

import asyncio
import time

import pytest

from hopcast._broker.memory import MemoryBroker
from hopcast._core.topics import Pattern
from hopcast._http.app import create_app
from hopcast._http.server import HttpConnection, StreamServer
from hopcast._http.writes import SLOT, Coalescer, should_hold
from hopcast._hub.hub import Hub
from tests.support.gateways import settings_for


@pytest.mark.parametrize(
    ("busy", "fill", "holding", "expected"),
    [
        (0.4, 1.5, False, True),  # busy, and more than one event per delay: hold
        (0.2, 1.5, False, False),  # between the marks: as it was
        (0.2, 1.5, True, True),  # held, the same load costs less: it stays held
        (0.08, 1.5, True, False),  # quiet: it stops
        (0.9, 0.5, False, False),  # one event per two delays: holding would only delay it
        (0.9, 0.9, False, False),
        (0.9, 0.9, True, True),  # between the fill marks: as it was
        (0.9, 0.6, True, False),
    ],
)
def test_writes_are_held_when_busy_and_more_than_one_event_comes_per_delay(
    busy: float, fill: float, holding: bool, expected: bool
) -> None:
    assert should_hold(busy, fill, holding) is expected


def test_workers_count_the_gateways_load() -> None:
    coalescer = Coalescer(max_delay=0.015, workers=2)
    coalescer.active = 10
    coalescer.sample(share=0.2, deliveries=10 * 100.0)  # 0.2 each: 0.4 of a core in all
    assert coalescer.holding


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (20.0, False),  # the 20k/s standard load: one event per 50 ms, 0.3 per delay
        (60.0, False),  # 0.9 per delay
        (100.0, True),  # the 100k/s load: 1.5 per delay
        (10_000.0, True),
    ],
)
def test_a_connection_is_held_only_when_it_gets_more_than_an_event_per_delay(
    rate: float, expected: bool
) -> None:
    coalescer = Coalescer(max_delay=0.015, workers=1)
    coalescer.active = 100
    coalescer.sample(share=0.9, deliveries=100 * rate)
    assert coalescer.holding is expected
    assert coalescer.active == 0  # counted afresh for the next sample


def test_a_delay_of_zero_never_holds() -> None:
    coalescer = Coalescer(max_delay=0.0, workers=1)
    coalescer.active = 1
    coalescer.sample(share=1.0, deliveries=1e6)
    assert not coalescer.holding


def test_holding_stops_whatever_the_rate() -> None:
    coalescer = Coalescer(max_delay=0.015, workers=1)
    coalescer.active = 1
    coalescer.sample(share=0.9, deliveries=200.0)
    assert coalescer.holding
    coalescer.active = 1
    coalescer.sample(share=0.01, deliveries=200.0)
    assert not coalescer.holding


class _Recorder:
    """A transport that keeps what is written, and when."""

    def __init__(self) -> None:
        self.written: list[tuple[float, bytes]] = []

    def write(self, data: bytes) -> None:
        self.written.append((time.monotonic(), data))

    def set_write_buffer_limits(self, high: int) -> None:
        pass


def _connections(count: int) -> tuple[StreamServer, list[HttpConnection], list[_Recorder]]:
    app = create_app(settings_for("memory"))
    server = StreamServer(app)
    hub = app.state.hub = Hub(MemoryBroker(), server.settings)
    conns, recorders = [], []
    for _ in range(count):
        conn = HttpConnection(server)
        recorders.append(_Recorder())
        conn.transport = recorders[-1]  # type: ignore[assignment]
        conn.sub = hub.subscribe([Pattern.parse("a")])
        conns.append(conn)
    return server, conns, recorders


def _event(conn: HttpConnection, data: bytes) -> None:
    sub = conn.sub
    assert sub is not None
    sub.queue([data], sub.cursor)
    conn.flush(sub)


async def test_an_unheld_connection_writes_every_event_at_once() -> None:
    server, [conn], [recorder] = _connections(1)
    for i in range(3):
        _event(conn, b"event %d\n\n" % i)
    assert [data for _, data in recorder.written] == [b"event %d\n\n" % i for i in range(3)]
    assert server.coalescer.held == 0


async def test_a_held_connection_writes_once_the_delay_after_the_first_held_event() -> None:
    """The first event goes at once; the second, written just after, waits the delay,
    and the third joins its write: one write, the delay (plus the millisecond slot) later."""
    server, [conn], [recorder] = _connections(1)
    coalescer = server.coalescer
    coalescer.holding = True
    _event(conn, b"a\n\n")
    _event(conn, b"b\n\n")
    _event(conn, b"c\n\n")
    assert [data for _, data in recorder.written] == [b"a\n\n"]
    assert coalescer.held == 1  # held once, however many events came
    await asyncio.sleep(coalescer.delay + 0.02)
    (first, _), (second, data) = recorder.written
    assert data == b"b\n\nc\n\n"
    assert coalescer.delay <= second - first
    assert coalescer.held == 0 and not conn.held


async def test_connections_due_in_one_millisecond_share_one_timer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server, conns, recorders = _connections(50)
    coalescer = server.coalescer
    coalescer.holding = True
    loop = asyncio.get_running_loop()
    timers = []
    call_later = loop.call_later

    def counting(delay: float, callback: object, *args: object) -> asyncio.TimerHandle:
        timers.append(delay)
        return call_later(delay, callback, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "call_later", counting)
    now = time.monotonic()
    for conn in conns:
        conn.last_write = now  # all written just now: all due in the same millisecond
        _event(conn, b"x\n\n")
    assert coalescer.held == 50
    assert len(timers) <= 2  # the delay's end may straddle a millisecond's edge
    assert all(0 < delay <= coalescer.delay + SLOT for delay in timers)
    await asyncio.sleep(coalescer.delay + 0.02)
    assert all(len(r.written) == 1 for r in recorders)


async def test_a_connection_closed_while_held_is_skipped() -> None:
    server, [conn], [recorder] = _connections(1)
    server.coalescer.holding = True
    conn.last_write = time.monotonic()
    _event(conn, b"x\n\n")
    conn.transport = None
    await asyncio.sleep(server.coalescer.delay + 0.02)
    assert recorder.written == []
    assert not conn.held


async def test_the_rate_is_a_busy_connections_not_the_average() -> None:
    """Ten connections get 100 events/s each, 990 get none: the ten are held."""
    server, conns, _ = _connections(1000)
    coalescer = server.coalescer
    for _ in range(2):  # a connection is counted once per sample, however often it is flushed
        for conn in conns[:10]:
            _event(conn, b"data: x\n\n")
    assert coalescer.active == 10
    coalescer.sample(share=0.9, deliveries=10 * 100.0)
    assert coalescer.holding
