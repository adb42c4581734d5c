"""What the hub tests share: a hub on the memory broker, a subscription read as a client would."""

from __future__ import annotations

from hopcast._broker.memory import MemoryBroker
from hopcast._core.settings import Settings
from hopcast._hub.hub import Hub
from hopcast._hub.subscription import Subscription
from tests.support.sse import Event, EventStream


def memory_hub() -> Hub:
    """A hub on a memory broker of its own, not started (subscriptions and indexes only)."""
    return Hub(MemoryBroker(), Settings.from_env({"HOPCAST_BROKER": "memory://"}))


async def read_until(sub: Subscription, last_id: str) -> list[Event]:
    """What ``sub`` sends, read as a client reads it, up to the event with ``last_id``."""
    reader = EventStream()
    events: list[Event] = []
    while not events or events[-1].last_event_id != last_id:
        chunk = await sub.next_chunk(timeout=60)
        assert chunk is not None, f"the subscription ended; events so far: {events[-3:]}"
        events += reader.feed(chunk)
    return events
