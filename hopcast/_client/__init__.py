"""The Python client: `Client` (publish, subscribe, take tasks) and the values it yields.

>>> from hopcast._client import Client, Event, Missed, Task
"""

from hopcast._client.client import Client, TokenSource
from hopcast._client.subscription import Subscription
from hopcast._client.task_stream import TaskStream
from hopcast._client.tasks import Task
from hopcast._client.values import Event, EventStreamParser, Missed, Published

__all__ = [
    "Client",
    "Event",
    "EventStreamParser",
    "Missed",
    "Published",
    "Subscription",
    "Task",
    "TaskStream",
    "TokenSource",
]
