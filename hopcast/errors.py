"""hopcast's exceptions.

HopcastError
├── ConfigError(ValueError)          a setting has a bad value (names key and value)
├── InvalidInput(ValueError)         a client sent something malformed (→ 400)
│   ├── InvalidTopic                 a topic or pattern breaks design §1
│   ├── InvalidOffset                a Last-Event-ID / lastEventId / since that is not one
│   └── InvalidEventName             an event name that cannot travel, or is reserved
├── BrokerUnavailable(ConnectionError)  the broker cannot be reached right now (→ 503)
│   └── PublishNotConfirmed          the broker nacked or returned a publish
└── SubscriptionClosed               a subscription ended (slow client, shutdown, ...)
"""

from __future__ import annotations


class HopcastError(Exception):
    """Base class of every error hopcast raises on purpose."""


class ConfigError(HopcastError, ValueError):
    """A setting has a value hopcast cannot use; the message names both."""


def cannot_listen(host: str, port: int, exc: OSError) -> ConfigError:
    """The error for an address the gateway cannot listen on (in use, not this host's)."""
    return ConfigError(f"--host/--port: cannot listen on {host}:{port}: {exc.strerror or exc}")


class InvalidInput(HopcastError, ValueError):
    """Something a client sent is malformed; maps to HTTP 400."""


class InvalidTopic(InvalidInput):
    """A topic or pattern that breaks the rules of design §1."""


class InvalidOffset(InvalidInput):
    """A resume position (Last-Event-ID, lastEventId, since) that is not one."""


class InvalidEventName(InvalidInput):
    """An event name that contains a line break, is too long, or uses the reserved prefix."""


class BrokerUnavailable(HopcastError, ConnectionError):
    """The broker cannot be reached right now; maps to HTTP 503."""


class PublishNotConfirmed(BrokerUnavailable):
    """The broker nacked a publish, or returned it as unroutable."""


class SubscriptionClosed(HopcastError):
    """A subscription was closed by the gateway; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
