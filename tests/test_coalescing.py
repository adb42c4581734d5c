"""Write coalescing: the window follows the load, and held connections go in turns."""

from __future__ import annotations

import pytest

from hopcast.app import create_app
from hopcast.broker.memory import MemoryBroker
from hopcast.coalescing import EVENTS_PER_WRITE, MIN_WINDOW, PHASES, Coalescer, coalescing_window
from hopcast.hub import Hub
from hopcast.listener import HttpConnection, StreamServer
from hopcast.topics import Pattern
from tests.support import settings_for


@pytest.mark.parametrize(
    ("share", "workers", "current", "expected"),
    [
        (0.4, 1, 0.0, 0.04),  # busy: the window opens
        (0.2, 1, 0.0, 0.0),  # between the marks: as it was
        (0.2, 1, 0.04, 0.04),  # coalesced, the same load costs ~3x less: it stays open
        (0.08, 1, 0.04, 0.0),  # quiet: it closes
        (0.2, 2, 0.0, 0.04),  # one of two workers at 0.2: the gateway uses 0.4
        (0.04, 2, 0.04, 0.0),
    ],
)
def test_the_window_follows_the_gateways_load(
    share: float, workers: int, current: float, expected: float
) -> None:
    assert coalescing_window(share, workers, current, 0.04) == expected


class _Recorder:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def set_write_buffer_limits(self, high: int) -> None:
        pass


async def test_held_connections_go_in_turns_and_all_within_one_window() -> None:
    app = create_app(settings_for("memory"))
    server = StreamServer(app)
    hub = app.state.hub = Hub(MemoryBroker(), server.settings)
    coalescer = server.coalescer
    coalescer.window = 0.04
    conns, recorders = [], []
    for i in range(2 * PHASES + 1):
        conn = HttpConnection(server)
        recorders.append(_Recorder())
        conn.transport = recorders[-1]  # type: ignore[assignment]
        conn.phase = i % PHASES
        sub = conn.sub = hub.subscribe([Pattern.parse("a")])
        sub._frames.append(b"event %d\n\n" % i)
        coalescer.hold(conn)
        conns.append(conn)

    def written() -> set[int]:
        return {i for i, r in enumerate(recorders) if r.written}

    assert coalescer._timer is not None
    coalescer._timer.cancel()
    seen: set[int] = set()
    for turn in range(1, PHASES):  # the turns a window holds, one phase each
        coalescer.next_turn()
        new = written() - seen
        assert new and {conns[i].phase for i in new} == {turn % PHASES}
        seen |= new
        assert coalescer._timer is not None  # others still wait: the next turn is due
        coalescer._timer.cancel()
    coalescer.window = 0.0  # the window closed: the rest go at once
    coalescer.next_turn()
    assert written() == set(range(len(conns)))
    assert coalescer._timer is None
    assert [r.written for r in recorders] == [[b"event %d\n\n" % i] for i in range(len(conns))]


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (0.0, 0.05),  # no deliveries measured: the configured window
        (50.0, 0.05),  # 5 events take 100 ms: no more than configured
        (100.0, 0.05),
        (200.0, 0.025),  # busier: 5 events arrive in 25 ms
        (10_000.0, MIN_WINDOW),
    ],
)
def test_a_busier_connection_is_held_for_about_five_events(rate: float, expected: float) -> None:
    coalescer = Coalescer(window_ms=50, workers=1)
    coalescer.sample(share=0.9, rate=rate)
    assert coalescer.window == pytest.approx(expected)
    assert EVENTS_PER_WRITE == 5


def test_the_window_closes_whatever_the_rate() -> None:
    coalescer = Coalescer(window_ms=50, workers=1)
    coalescer.sample(share=0.9, rate=200.0)
    coalescer.sample(share=0.01, rate=200.0)
    assert coalescer.window == 0.0
