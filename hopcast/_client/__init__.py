"""The Python client: `Client` (publish, subscribe) and the values it yields (`values`).

>>> from hopcast._client import Client, Event, Missed
"""

from hopcast._client.client import Client, Subscription, TokenSource
from hopcast._client.values import Event, EventStreamParser, Missed, Published

__all__ = [
    "Client",
    "Event",
    "EventStreamParser",
    "Missed",
    "Published",
    "Subscription",
    "TokenSource",
]
