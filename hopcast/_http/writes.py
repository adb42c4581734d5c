"""Held writes: while holding saves CPU the gateway is short of, a write may wait, boundedly.

One small write per event per client is what an event stream costs most (the
kernel's send); several events in one write cost a fraction each. Holding a
write pays only when both are true: the process uses a good share of a core,
and its connections get events often enough that waiting ``--max-write-delay``
gathers more than one. While both hold (sampled every `LOAD_SAMPLE`), a
connection written less than the delay ago is held for the delay, and the
events that come meanwhile go in one write with the first. Otherwise every event is
written as soon as it is read: a read from the broker already brings natural
batches. No event waits longer than the delay (plus a millisecond's timer).

>>> should_hold(busy=0.5, fill=1.5, holding=False)
True
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Protocol

log = logging.getLogger("hopcast.http")  # named by layer: module paths are internal

BUSY_ON = 0.35
BUSY_OFF = 0.1
"""Share of a core the gateway uses above which writes are held, and below which they stop.

Holding cuts the gateway's CPU by about 2x at the load where it starts, so the
two must lie further apart than that, or holding flips on and off every sample.
With ``--workers N`` each process counts N times its own share: the workers
take a like share of the connections, and it is the gateway's CPU that is short.
"""
FILL_ON = 1.0
FILL_OFF = 0.75
"""Events a busy connection gets within the delay, on average, for holding to pay.

Below one, a held event mostly waits for a write it would have had alone: it
costs latency and saves nothing. Counted over the connections that got any
event since the last sample, so a few busy connections among many idle ones
still hold. The rate does not depend on holding, so the two marks only keep
noise from flipping it.
"""
LOAD_SAMPLE = 0.25
"""Seconds over which the gateway's CPU share and delivery rate are measured.

A burst must not run a whole second unheld (at 100k deliveries/s that second
alone queues enough to push the p99 latency past 100 ms).
"""
SLOT = 0.001
"""Held connections are released together, by the millisecond their delay ends in:
one timer a millisecond for all, as a timer per connection would cost more than
the writes it saves."""


class Held(Protocol):
    """A connection whose write waits (the listener's connections)."""

    def write_held(self, now: float) -> None:
        """Its delay is over: write what is queued, if the socket takes it."""


def should_hold(busy: float, fill: float, holding: bool) -> bool:
    """Whether to hold writes, for a gateway using ``busy`` of a core whose busy
    connections get ``fill`` events each within the delay; with hysteresis on both.

    >>> should_hold(0.5, 1.5, holding=False), should_hold(0.2, 1.5, holding=False)
    (True, False)
    >>> should_hold(0.2, 0.8, holding=True), should_hold(0.2, 0.5, holding=True)
    (True, False)
    """
    if holding:
        return busy > BUSY_OFF and fill >= FILL_OFF
    return busy >= BUSY_ON and fill >= FILL_ON


class Coalescer:
    """Whether writes are held now, and the connections held, by the millisecond they go."""

    def __init__(self, max_delay: float, workers: int) -> None:
        self.delay = max_delay
        """The longest a held write waits after the connection's last write (seconds)."""
        self._workers = workers
        self.holding = False
        """Writes are held (see `sample`)."""
        self.round = 0
        """Counts the samples; a connection notes the round it was last counted `active` in."""
        self.active = 0
        """Connections that got an event since the last sample."""
        self._slots: dict[int, list[Held]] = {}

    def sample(self, share: float, deliveries: float) -> None:
        """Hold or not, for a process that used ``share`` of a core and made
        ``deliveries`` per second since the last sample.

        The rate that matters is a busy connection's: the deliveries are divided
        among the connections that got any (counted in `active`) since then.
        """
        rate = deliveries / self.active if self.active else 0.0
        self.active = 0
        self.round += 1
        holding = bool(self.delay) and should_hold(
            share * self._workers, rate * self.delay, self.holding
        )
        if holding != self.holding:
            log.info(
                "%s: the gateway used %.0f %% of a core, %.0f events/s per busy connection",
                f"writes held up to {self.delay * 1000:.0f} ms" if holding else "writes go at once",
                share * 100,
                rate,
            )
        self.holding = holding

    def hold(self, conn: Held, until: float, now: float) -> None:
        """Write ``conn`` at ``until`` (monotonic seconds; it is ``now``), with the others of
        that millisecond."""
        slot = math.ceil(until / SLOT)
        held = self._slots.get(slot)
        if held is None:
            held = self._slots[slot] = []
            asyncio.get_running_loop().call_later(slot * SLOT - now, self._release, slot)
        held.append(conn)

    @property
    def held(self) -> int:
        """Connections waiting for their write."""
        return sum(len(conns) for conns in self._slots.values())

    def _release(self, slot: int) -> None:
        now = time.monotonic()
        for conn in self._slots.pop(slot, ()):
            conn.write_held(now)


__all__ = [
    "BUSY_OFF",
    "BUSY_ON",
    "FILL_OFF",
    "FILL_ON",
    "LOAD_SAMPLE",
    "SLOT",
    "Coalescer",
    "Held",
    "should_hold",
]
