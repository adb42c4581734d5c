"""hopcast: a Server-Sent Events gateway for RabbitMQ streams, with lossless resume.

The public API is what this module exports: the client, the ASGI app factory,
its settings and the errors. Every module under a name that starts with an
underscore is internal and may change in any release.

>>> import hopcast
>>> app = hopcast.create_app(hopcast.Settings.from_env({"HOPCAST_BROKER": "memory://"}))
"""

from hopcast._client import Client, Event, Missed, Published, Subscription, Task, TaskStream
from hopcast._core.errors import (
    BrokerUnavailable,
    CannotStart,
    ConfigError,
    Forbidden,
    HopcastError,
    InvalidEventName,
    InvalidInput,
    InvalidOffset,
    InvalidTopic,
    LeaseLost,
    PublishNotConfirmed,
    PublishRefused,
    QueueRefused,
    Refused,
    SubscriptionClosed,
    SubscriptionRefused,
    Unauthorized,
)
from hopcast._core.settings import Settings
from hopcast._http.app import create_app

__all__ = [
    "BrokerUnavailable",
    "CannotStart",
    "Client",
    "ConfigError",
    "Event",
    "Forbidden",
    "HopcastError",
    "InvalidEventName",
    "InvalidInput",
    "InvalidOffset",
    "InvalidTopic",
    "LeaseLost",
    "Missed",
    "PublishNotConfirmed",
    "PublishRefused",
    "Published",
    "QueueRefused",
    "Refused",
    "Settings",
    "Subscription",
    "SubscriptionClosed",
    "SubscriptionRefused",
    "Task",
    "TaskStream",
    "Unauthorized",
    "create_app",
]
