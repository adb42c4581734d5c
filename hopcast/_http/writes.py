"""Write coalescing: while the gateway is busy, a client's next write waits for its turn.

One small write per event per client is what an event stream costs most (the
kernel's send); several events in one write cost a fraction each. So, while
the process uses a good share of a core, a connection written within the
last window is *held*: its events queue and go in one write when its turn
comes. The first event after a quiet spell still goes at once, and an idle
gateway never holds anything. How the window, the thresholds and the turns
were chosen is measured in ``docs/benchmarks.md``.

>>> coalescing_window(rate=400.0, configured=0.05)
0.025
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

log = logging.getLogger("hopcast.http")  # named by layer: module paths are internal

BUSY_ON = 0.35
BUSY_OFF = 0.1
"""Share of a core the gateway uses above which writes coalesce, and below which they stop.

Coalescing cuts the gateway's CPU by about 3x at the load where it starts, so
the two must lie further apart than that, or the window flips on and off every
sample (measured: 70 % of a core without, 25 % with, at 100k deliveries/s).
With ``--workers N`` each process counts N times its own share: the workers
take a like share of the connections, and it is the gateway's CPU that is short.
"""
FILL_ON = 2.0
FILL_OFF = 1.5
"""Events a connection gets within the configured window, on average, for holding to pay.

Below two, a held event mostly waits for a write it would have had alone: at
20k deliveries/s over 1,000 connections (one event per connection per 50 ms)
holding put the p99 latency at 71 ms instead of 4-6, for little CPU. Counted
over the connections that got any event, so a few busy connections among
many idle ones still coalesce. The rate does not depend on holding, so the
two marks only keep noise from flipping the window.
"""
PHASES = 4
"""Turns, at most, that the held connections are flushed in, each a window's share apart.

One flush of every held connection at once sends a burst that each client's
host, and the gateway's own loop, take the longest to get through; in
turns, the writes are as few and the bursts smaller.
"""
MIN_TURNS = 2
"""Turns, at least. The stream is read once per turn (`Coalescer.read_pause`): in one
turn a read carried a whole window's events, and a client of 60 KB events that read
them as they came was cut off as slow (``queue_size`` 50) in about one run in five of
the slow-client test (`tests/integration/test_backpressure.py`); in two, in none of 15.
"""
TURN_CONNECTIONS = 250
"""Busy connections a turn writes, about: a process with fewer takes fewer turns.

A turn costs more than its writes alone (its timer, the stream read before it,
the burst it sends): at the standard load one process with 1,000 connections
used 3.2 µs per delivery in four turns a window and 2.6-2.8 in two, for 5 %
fewer writes, at a p99 latency of 66-69 ms against 70-82 (in one turn: 2.1 µs,
125 ms). Sized by connections rather than counted, the turns of a worker that
holds half the connections cost no more per delivery than one process's, at
the standard load (`docs/benchmarks.md`).
"""
EVENTS_PER_WRITE = 10
"""Events a held connection waits to collect; the window shrinks to what that takes.

Under heavier load the events arrive sooner, and a shorter window fills the
same write. Measured at 250k deliveries/s over 1,000 connections: 1.74 µs of
the gateway's CPU per delivery at five events per write, 1.3 at ten, 1.2-1.3
at the full 50 ms window, with a p99 latency set more by the machine's load
than by the window (`docs/benchmarks.md`).
"""
MIN_WINDOW = 0.005
"""The shortest window held, however busy the connections."""
READ_LEAD = 0.003
"""Seconds before a turn that the stream reader reads what came since its last read."""
LOAD_SAMPLE = 0.25
"""Seconds over which the gateway's CPU share is measured to open or close the window.

A burst must not run a whole second uncoalesced (at 100k deliveries/s that
second alone queues enough to push the p99 latency past 100 ms).
"""


class Held(Protocol):
    """A connection whose write waits for its turn (the listener's connections)."""

    phase: float
    """Where in a window its held writes go, as a fraction of it."""

    def write_held(self, now: float) -> None:
        """Its turn came: write what is queued, if the socket takes it."""


def should_hold(busy: float, fill: float, holding: bool) -> bool:
    """Whether to hold writes, for a gateway using ``busy`` of a core whose connections
    get ``fill`` events each within the configured window; with hysteresis on both.

    >>> should_hold(0.5, 3.0, holding=False), should_hold(0.2, 3.0, holding=False)
    (True, False)
    >>> should_hold(0.2, 1.8, holding=True), should_hold(0.2, 1.0, holding=True)
    (True, False)
    """
    if holding:
        return busy > BUSY_OFF and fill >= FILL_OFF
    return busy >= BUSY_ON and fill >= FILL_ON


def coalescing_window(rate: float, configured: float) -> float:
    """The window for connections that get ``rate`` events per second: about
    `EVENTS_PER_WRITE` events' time, within `MIN_WINDOW` and ``configured``.

    >>> coalescing_window(200.0, 0.05), coalescing_window(400.0, 0.05)
    (0.05, 0.025)
    """
    if rate <= 0:
        return configured
    return max(MIN_WINDOW, min(configured, EVENTS_PER_WRITE / rate))


class Coalescer:
    """The window in force and the connections held, by turn, until their write goes."""

    def __init__(self, window_ms: float, workers: int) -> None:
        self._configured = window_ms / 1000
        self._workers = workers
        self.window = 0.0
        """The window in force while the process is busy (see `sample`), else 0."""
        self.round = 0
        """Counts the samples; a connection notes the round it was last counted `active` in."""
        self.active = 0
        """Connections that got an event since the last sample."""
        self.turns = PHASES
        """Turns a window's held connections are flushed in: one per `TURN_CONNECTIONS`,
        within `MIN_TURNS` and `PHASES`."""
        self._held: list[list[Held]] = [[] for _ in range(PHASES)]
        self._timer: asyncio.TimerHandle | None = None
        self._phase = 0

    def sample(self, share: float, deliveries: float) -> None:
        """Set the window for a process that used ``share`` of a core and made
        ``deliveries`` per second since the last sample.

        The rate that matters is a busy connection's: the deliveries are divided
        among the connections that got any (counted in `active`) since then.
        """
        rate = deliveries / self.active if self.active else 0.0
        self.turns = max(MIN_TURNS, min(PHASES, int(self.active / TURN_CONNECTIONS + 0.5)))
        self.active = 0
        self.round += 1
        holding = should_hold(share * self._workers, rate * self._configured, bool(self.window))
        window = coalescing_window(rate, self._configured) if holding else 0.0
        if bool(window) != bool(self.window):
            log.info(
                "%s: the gateway used %.0f %% of a core, %.0f events/s per busy connection",
                f"writes coalesce in windows of {window * 1000:.0f} ms"
                if window
                else "writes go out at once",
                share * 100,
                rate,
            )
        self.window = window

    def read_pause(self) -> float:
        """Seconds the stream reader may leave its socket unread: while writes are held,
        until just before the next turn, so that the turn writes what came meanwhile.

        A read costs the process a wake-up; under load that is one per publisher's
        batch (hundreds a second), and every event read waits for its connection's
        turn anyway. Reading once per turn, `READ_LEAD` ahead of it, saves those
        wake-ups and delays no held write. An idle gateway reads at once.
        """
        if not self.window:
            return 0.0
        if self._timer is None:
            return self.window / self.turns
        return max(0.0, self._timer.when() - asyncio.get_running_loop().time() - READ_LEAD)

    def hold(self, conn: Held) -> None:
        """Flush ``conn`` with the others of its turn when it comes (within one window)."""
        self._held[int(conn.phase * self.turns)].append(conn)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.window / self.turns, self.next_turn)

    def next_turn(self) -> None:
        """Flush the next turn's held connections (all of them once the window closed)."""
        self._timer = None
        if not self.window:
            for phase in range(PHASES):
                self._flush(phase)
            return
        began = time.process_time()
        self._phase = (self._phase + 1) % self.turns
        self._flush(self._phase)
        for phase in range(self.turns, PHASES):  # held when there were more turns
            self._flush(phase)
        if any(self._held):
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._pause(time.process_time() - began), self.next_turn)

    def _pause(self, took: float) -> float:
        """Seconds from the end of a turn whose writes took ``took`` of CPU to the next.

        A connection's turn comes round a window after its last one, plus the time all
        the turns between took: its writes come further apart, the more connections
        the gateway writes. One process writes them all; each of N workers, a share.
        So a worker waits as long again as its own turn took for each other worker,
        and a connection is written as often whether the gateway runs one process or
        several: in CPU time, as the other workers write meanwhile on other cores.
        """
        return self.window / self.turns + took * (self._workers - 1)

    def _flush(self, phase: int) -> None:
        held, self._held[phase] = self._held[phase], []
        now = time.monotonic()
        for conn in held:  # a connection held twice finds nothing left the second time
            conn.write_held(now)


__all__ = [
    "BUSY_OFF",
    "BUSY_ON",
    "EVENTS_PER_WRITE",
    "FILL_OFF",
    "FILL_ON",
    "LOAD_SAMPLE",
    "MIN_TURNS",
    "MIN_WINDOW",
    "PHASES",
    "READ_LEAD",
    "TURN_CONNECTIONS",
    "Coalescer",
    "Held",
    "coalescing_window",
    "should_hold",
]
