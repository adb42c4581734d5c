"""Write coalescing: while the gateway is busy, a client's next write waits for its turn.

One small write per event per client is what an event stream costs most (the
kernel's send); several events in one write cost a fraction each. So, while
the process uses a good share of a core, a connection written within the
last window is *held*: its events queue and go in one write when its turn
comes. The first event after a quiet spell still goes at once, and an idle
gateway never holds anything. How the window, the thresholds and the turns
were chosen is measured in ``docs/benchmarks.md``.

>>> coalescing_window(0.5, 1, 0.0, 0.04)
0.04
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hopcast.listener import HttpConnection

log = logging.getLogger(__name__)

BUSY_ON = 0.35
BUSY_OFF = 0.1
"""Share of a core the gateway uses above which writes coalesce, and below which they stop.

Coalescing cuts the gateway's CPU by about 3x at the load where it starts, so
the two must lie further apart than that, or the window flips on and off every
sample (measured: 70 % of a core without, 25 % with, at 100k deliveries/s).
With ``--workers N`` each process counts N times its own share: the workers
take a like share of the connections, and it is the gateway's CPU that is short.
"""
PHASES = 4
"""Turns the held connections are flushed in, a quarter of a window apart.

One flush of every held connection at once sends a burst that each client's
host, and the gateway's own loop, take the longest to get through; in
turns, the writes are as few and the bursts a quarter of the size.
"""
EVENTS_PER_WRITE = 5
"""Events a held connection waits to collect; the window shrinks to what that takes.

Past a few events per write the kernel's cost per event falls little, while
each millisecond held is latency: under heavier load the events arrive
sooner, and a shorter window fills the same write.
"""
MIN_WINDOW = 0.005
"""The shortest window held, however busy the connections."""
LOAD_SAMPLE = 0.25
"""Seconds over which the gateway's CPU share is measured to open or close the window.

A burst must not run a whole second uncoalesced (at 100k deliveries/s that
second alone queues enough to push the p99 latency past 100 ms).
"""


def coalescing_window(share: float, workers: int, current: float, window: float) -> float:
    """The window to use when this process took ``share`` of a core since the last sample.

    Coalesce only under load, with hysteresis between `BUSY_OFF` and `BUSY_ON`.

    >>> coalescing_window(0.2, 2, 0.0, 0.04)
    0.04
    """
    busy = share * workers
    if busy >= BUSY_ON:
        return window
    if busy <= BUSY_OFF:
        return 0.0
    return current


class Coalescer:
    """The window in force and the connections held, by turn, until their write goes."""

    def __init__(self, window_ms: float, workers: int) -> None:
        self._configured = window_ms / 1000
        self._workers = workers
        self.window = 0.0
        """The window in force while the process is busy (see `sample`), else 0."""
        self._held: list[list[HttpConnection]] = [[] for _ in range(PHASES)]
        self._timer: asyncio.TimerHandle | None = None
        self._phase = 0

    def sample(self, share: float, rate: float) -> None:
        """Set the window for a process that used ``share`` of a core.

        ``rate`` is the events per second each of its connections received on
        average: the window is what ``EVENTS_PER_WRITE`` of them take to
        arrive, within ``MIN_WINDOW`` and the configured window.
        """
        window = coalescing_window(share, self._workers, self.window, self._configured)
        if window and rate > 0:
            window = max(MIN_WINDOW, min(window, EVENTS_PER_WRITE / rate))
        if bool(window) != bool(self.window):
            log.info(
                "%s: the gateway used %.0f %% of a core",
                f"writes coalesce in windows of {window * 1000:.0f} ms"
                if window
                else "writes go out at once",
                share * 100,
            )
        self.window = window

    def hold(self, conn: HttpConnection) -> None:
        """Flush ``conn`` with the others of its turn when it comes (within one window)."""
        self._held[conn.phase].append(conn)
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.window / PHASES, self.next_turn)

    def next_turn(self) -> None:
        """Flush the next turn's held connections (all of them once the window closed)."""
        self._timer = None
        if not self.window:
            for phase in range(PHASES):
                self._flush(phase)
            return
        self._phase = (self._phase + 1) % PHASES
        self._flush(self._phase)
        if any(self._held):
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self.window / PHASES, self.next_turn)

    def _flush(self, phase: int) -> None:
        held, self._held[phase] = self._held[phase], []
        now = time.monotonic()
        for conn in held:  # a connection held twice finds nothing left the second time
            conn.write_held(now)


__all__ = [
    "BUSY_OFF",
    "BUSY_ON",
    "EVENTS_PER_WRITE",
    "LOAD_SAMPLE",
    "MIN_WINDOW",
    "PHASES",
    "Coalescer",
    "coalescing_window",
]
