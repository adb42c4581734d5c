"""Write coalescing: the window follows the load, and held connections go in turns."""

from __future__ import annotations

import asyncio
import time

import pytest

from hopcast._broker.memory import MemoryBroker
from hopcast._core.topics import Pattern
from hopcast._http.app import create_app
from hopcast._http.server import HttpConnection, StreamServer
from hopcast._http.writes import (
    EVENTS_PER_WRITE,
    MIN_TURNS,
    MIN_WINDOW,
    PHASES,
    READ_LEAD,
    TURN_CONNECTIONS,
    Coalescer,
    should_hold,
)
from hopcast._hub.hub import Hub
from tests.support.gateways import settings_for


@pytest.mark.parametrize(
    ("busy", "fill", "holding", "expected"),
    [
        (0.4, 3.0, False, True),  # busy, and several events per window: hold
        (0.2, 3.0, False, False),  # between the marks: as it was
        (0.2, 3.0, True, True),  # coalesced, the same load costs ~3x less: it stays open
        (0.08, 3.0, True, False),  # quiet: it closes
        (0.9, 1.0, False, False),  # one event per window: holding would only delay it
        (0.9, 1.8, False, False),
        (0.9, 1.8, True, True),  # between the fill marks: as it was
        (0.9, 1.2, True, False),
    ],
)
def test_writes_are_held_when_busy_and_several_events_come_per_window(
    busy: float, fill: float, holding: bool, expected: bool
) -> None:
    assert should_hold(busy, fill, holding) is expected


def test_workers_count_the_gateways_load() -> None:
    coalescer = Coalescer(window_ms=50, workers=2)
    coalescer.active = 10
    coalescer.sample(share=0.2, deliveries=10 * 100.0)  # 0.2 each: 0.4 of a core in all
    assert coalescer.window == pytest.approx(0.05)


class _Recorder:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def set_write_buffer_limits(self, high: int) -> None:
        pass


def _held_connections(server: StreamServer, hub: Hub, phases: list[float]) -> list[_Recorder]:
    """A connection per place in the window (``phases``), each with an event, all held."""
    recorders = []
    for i, phase in enumerate(phases):
        conn = HttpConnection(server)
        recorders.append(_Recorder())
        conn.transport = recorders[-1]  # type: ignore[assignment]
        conn.phase = phase
        sub = conn.sub = hub.subscribe([Pattern.parse("a")])
        sub.queue([b"event %d\n\n" % i], sub.cursor)
        server.coalescer.hold(conn)
    return recorders


async def test_held_connections_go_in_turns_and_all_within_one_window() -> None:
    app = create_app(settings_for("memory"))
    server = StreamServer(app)
    hub = app.state.hub = Hub(MemoryBroker(), server.settings)
    coalescer = server.coalescer
    coalescer.window = 0.04
    count = 2 * PHASES + 1
    recorders = _held_connections(server, hub, [(i % PHASES + 0.5) / PHASES for i in range(count)])

    def written() -> set[int]:
        return {i for i, r in enumerate(recorders) if r.written}

    assert coalescer._timer is not None
    coalescer._timer.cancel()
    seen: set[int] = set()
    for turn in range(1, PHASES):  # the turns a window holds, one phase each
        coalescer.next_turn()
        new = written() - seen
        assert new and {i % PHASES for i in new} == {turn % PHASES}
        seen |= new
        assert coalescer._timer is not None  # others still wait: the next turn is due
        coalescer._timer.cancel()
    coalescer.window = 0.0  # the window closed: the rest go at once
    coalescer.next_turn()
    assert written() == set(range(count))
    assert coalescer._timer is None
    assert [r.written for r in recorders] == [[b"event %d\n\n" % i] for i in range(count)]


@pytest.mark.parametrize(
    ("active", "turns"),
    [
        (4 * TURN_CONNECTIONS, PHASES),  # one process with the standard load's 1,000
        (2 * TURN_CONNECTIONS, 2),  # each of two workers, with half as many: half the turns
        (TURN_CONNECTIONS * 22 // 10, 2),
        (TURN_CONNECTIONS * 28 // 10, 3),
        (30 * TURN_CONNECTIONS, PHASES),  # never more than PHASES: a turn's share only grows
        (10, MIN_TURNS),  # a read never carries a whole window's events
        (0, MIN_TURNS),
    ],
)
def test_a_process_takes_a_turn_per_so_many_busy_connections(active: int, turns: int) -> None:
    """A turn costs more than its writes; a worker with half the connections takes half
    the turns, and the gateway as a whole as many as one process would."""
    coalescer = Coalescer(window_ms=50, workers=1)
    coalescer.active = active
    coalescer.sample(share=0.9, deliveries=active * 200.0)
    assert coalescer.turns == turns


async def test_fewer_turns_flush_every_connection_held_for_more() -> None:
    """Connections held in the third and fourth of four turns still go, in the next turn,
    when the count falls to two: none waits past its window."""
    app = create_app(settings_for("memory"))
    server = StreamServer(app)
    hub = app.state.hub = Hub(MemoryBroker(), server.settings)
    coalescer = server.coalescer
    coalescer.window = 0.04
    eighths = [(i + 0.5) / 8 for i in range(8)]
    recorders = _held_connections(server, hub, eighths)  # two in each of four turns
    assert coalescer._timer is not None
    coalescer._timer.cancel()
    coalescer.turns = 2
    coalescer.next_turn()  # the second of two, and all held in the third and fourth of four
    assert [bool(r.written) for r in recorders] == [False, False] + [True] * 6
    assert coalescer._timer is not None
    assert coalescer._timer.when() - asyncio.get_running_loop().time() == pytest.approx(
        0.04 / 2, abs=0.005
    )
    coalescer._timer.cancel()
    coalescer.next_turn()
    assert all(r.written for r in recorders)
    assert coalescer._timer is None
    held = _held_connections(server, hub, eighths)  # held anew: in two turns, half each
    assert coalescer._timer is not None
    coalescer._timer.cancel()
    coalescer.next_turn()
    assert [bool(r.written) for r in held] == [False] * 4 + [True] * 4


@pytest.mark.parametrize("workers", [1, 2, 3])
async def test_a_worker_waits_as_long_again_as_its_turn_took_for_each_other_worker(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection's turn comes round a window plus all the turns between: in one
    process, every connection's writes; in each of N workers, a share. A worker's turn
    waits what its own writes took once more for each other worker, so that a connection
    is written as often whatever the count (10 ms of CPU here: 20, 30 or 40 ms to the next)."""
    app = create_app(settings_for("memory"))
    server = StreamServer(app)
    hub = app.state.hub = Hub(MemoryBroker(), server.settings)
    server.coalescer = coalescer = Coalescer(window_ms=50, workers=workers)
    coalescer.window = 0.04
    coalescer.turns = 2
    cpu = [7.0, 7.010]  # the process's CPU seconds before and after the turn's writes
    monkeypatch.setattr(time, "process_time", lambda: cpu.pop(0) if len(cpu) > 1 else cpu[0])
    recorders = _held_connections(server, hub, [0.25, 0.75])  # one in each of two turns
    assert coalescer._timer is not None
    coalescer._timer.cancel()
    coalescer.next_turn()
    assert [bool(r.written) for r in recorders] == [False, True]
    assert coalescer._timer is not None  # the first turn's connection still waits
    pause = coalescer._timer.when() - asyncio.get_running_loop().time()
    coalescer._timer.cancel()
    assert pause == pytest.approx(0.04 / 2 + 0.010 * (workers - 1), abs=0.004)


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (20.0, 0.0),  # one event per 50 ms: not held at all
        (50.0, 0.05),  # 10 events take 200 ms: no more than configured
        (200.0, 0.05),
        (400.0, 0.025),  # busier: 10 events arrive in 25 ms
        (10_000.0, MIN_WINDOW),
    ],
)
def test_a_busier_connection_is_held_for_about_ten_events(rate: float, expected: float) -> None:
    coalescer = Coalescer(window_ms=50, workers=1)
    coalescer.active = 100
    coalescer.sample(share=0.9, deliveries=100 * rate)
    assert coalescer.window == pytest.approx(expected)
    assert coalescer.active == 0  # counted afresh for the next sample
    assert EVENTS_PER_WRITE == 10


def test_the_window_closes_whatever_the_rate() -> None:
    coalescer = Coalescer(window_ms=50, workers=1)
    coalescer.active = 1
    coalescer.sample(share=0.9, deliveries=200.0)
    assert coalescer.window
    coalescer.active = 1
    coalescer.sample(share=0.01, deliveries=200.0)
    assert coalescer.window == 0.0


async def test_the_rate_is_a_busy_connections_not_the_average() -> None:
    """Ten connections get 400 events/s each, 990 get none: the ten are held for 25 ms."""
    app = create_app(settings_for("memory"))
    server = StreamServer(app)
    hub = app.state.hub = Hub(MemoryBroker(), server.settings)
    coalescer = server.coalescer
    conns = []
    for _ in range(1000):
        conn = HttpConnection(server)
        conn.transport = _Recorder()  # type: ignore[assignment]
        conn.sub = hub.subscribe([Pattern.parse("a")])
        conns.append(conn)
    for _ in range(2):  # a connection is counted once per sample, however often it is flushed
        for conn in conns[:10]:
            assert conn.sub is not None
            conn.sub.queue([b"data: x\n\n"], conn.sub.cursor)
            conn.flush(conn.sub)
    assert coalescer.active == 10
    coalescer.sample(share=0.9, deliveries=10 * 400.0)
    assert coalescer.window == pytest.approx(EVENTS_PER_WRITE / 400.0)


async def test_the_stream_is_read_just_before_each_turn_while_writes_are_held() -> None:
    """A read costs a wake-up; while writes are held, what the reader takes waits for its
    connection's turn anyway. So it reads once per turn, just ahead of it."""
    app = create_app(settings_for("memory"))
    server = StreamServer(app)
    app.state.hub = Hub(MemoryBroker(), server.settings)
    coalescer = server.coalescer
    assert coalescer.read_pause() == 0.0  # writes go at once: so do reads
    coalescer.window = 0.04
    assert coalescer.read_pause() == pytest.approx(0.04 / PHASES)  # no turn due yet
    conn = HttpConnection(server)
    conn.phase = 0.0
    coalescer.hold(conn)
    assert coalescer._timer is not None
    loop = asyncio.get_running_loop()
    due = coalescer._timer.when() - loop.time()
    assert coalescer.read_pause() == pytest.approx(due - READ_LEAD, abs=0.002)
    coalescer._timer.cancel()
