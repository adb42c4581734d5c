"""hopcast: a Server-Sent Events gateway for RabbitMQ streams, with lossless resume."""

from hopcast.app import create_app
from hopcast.client import Client, Event, SubscriptionRefused
from hopcast.config import Settings
from hopcast.errors import (
    BrokerUnavailable,
    ConfigError,
    HopcastError,
    InvalidEventName,
    InvalidInput,
    InvalidOffset,
    InvalidTopic,
    PublishNotConfirmed,
    SubscriptionClosed,
)
from hopcast.hub import Hub
from hopcast.topics import Pattern, parse_topic

__all__ = [
    "BrokerUnavailable",
    "Client",
    "ConfigError",
    "Event",
    "HopcastError",
    "Hub",
    "InvalidEventName",
    "InvalidInput",
    "InvalidOffset",
    "InvalidTopic",
    "Pattern",
    "PublishNotConfirmed",
    "Settings",
    "SubscriptionClosed",
    "SubscriptionRefused",
    "create_app",
    "parse_topic",
]
