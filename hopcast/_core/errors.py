"""hopcast's exceptions: one tree, every class the package defines.

HopcastError
├── ConfigError(ValueError)          a setting has a bad value (names key and value)
│   └── CannotStart                  good settings the gateway cannot start with here (a port
│                                    in use, keys that cannot be fetched)
├── InvalidInput(ValueError)         a client sent something malformed (→ 400)
│   ├── InvalidTopic                 a topic or pattern breaks design §1
│   ├── InvalidOffset                a Last-Event-ID / lastEventId / since that is not one
│   ├── InvalidEventName             an event name that cannot travel, or is reserved
│   └── InvalidLease                 a lease token that is not one of this gateway's (→ 400)
├── Unauthorized                     no token, or one that does not verify (→ 401; 400 malformed)
├── Forbidden                        a verified token that does not grant the target (→ 403)
├── UnknownQueue                     a work queue this gateway does not serve (→ 404)
├── NotStarted                       the app's lifespan has not run (→ 500)
├── BrokerUnavailable(ConnectionError)  the broker cannot be reached right now (→ 503)
│   └── PublishNotConfirmed          the broker nacked or returned a publish
├── FrameError(ValueError)           bytes from the broker that are not AMQP 0-9-1 as we know it
├── SubscriptionClosed               a subscription was ended by the gateway (slow, shutdown, ...)
└── Refused                          the gateway answered `hopcast.Client` with a problem
    ├── PublishRefused               a publish was not accepted (nothing was published)
    ├── SubscriptionRefused          a subscription was answered with a 4xx
    └── QueueRefused                 a work queue request (take, settle, extend) was refused
        └── LeaseLost                a settle answered 409: the lease expired, was settled or
                                     given back (its task is done, or comes again)

>>> issubclass(Forbidden, HopcastError), issubclass(FrameError, ValueError)
(True, True)
"""

from __future__ import annotations

from typing import Literal

BearerError = Literal["invalid_request", "invalid_token"]
Action = Literal["subscribe", "publish", "enqueue", "consume"]
REALM = "hopcast"


class HopcastError(Exception):
    """Base class of every error hopcast raises on purpose."""


class ConfigError(HopcastError, ValueError):
    """A setting has a value hopcast cannot use; the message names both."""


class CannotStart(ConfigError):
    """Settings that are good, but that the gateway cannot start with here (exit status 1).

    An address in use, keys that cannot be fetched: unlike a bad value (exit
    status 2), the same settings may work elsewhere or later.
    """


def cannot_listen(host: str, port: int, exc: OSError) -> CannotStart:
    """The error for an address the gateway cannot listen on (in use, not this host's)."""
    return CannotStart(f"--host/--port: cannot listen on {host}:{port}: {exc.strerror or exc}")


class InvalidInput(HopcastError, ValueError):
    """Something a client sent is malformed; maps to HTTP 400."""


class InvalidTopic(InvalidInput):
    """A topic or pattern that breaks the rules of design §1."""


class InvalidOffset(InvalidInput):
    """A resume position (Last-Event-ID, lastEventId, since) that is not one."""


class InvalidEventName(InvalidInput):
    """An event name that contains a line break, is too long, or uses the reserved prefix."""


class InvalidLease(InvalidInput):
    """A lease token that this gateway did not sign for this queue: malformed or altered."""


class UnknownQueue(HopcastError):
    """A work queue name that this gateway was not started with (``--queue``)."""


class Unauthorized(HopcastError):
    """No usable token; answer with `status` and a ``WWW-Authenticate: <www_authenticate>`` header.

    >>> Unauthorized("the token has expired").www_authenticate
    'Bearer realm="hopcast", error="invalid_token", error_description="the token has expired"'
    """

    def __init__(self, description: str, error: BearerError | None = "invalid_token") -> None:
        super().__init__(description)
        self.description = description
        self.error = error

    @classmethod
    def missing(cls) -> Unauthorized:
        """The request carried no token (RFC 6750 §3.1: then no error code is given)."""
        return cls("this request needs a bearer token", error=None)

    @property
    def status(self) -> int:
        """401, or 400 for a malformed request as RFC 6750 §3.1 asks."""
        return 400 if self.error == "invalid_request" else 401

    @property
    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` header value (RFC 6750 §3)."""
        return _challenge(self.error, self.description)


class Forbidden(HopcastError):
    """A verified token that does not allow this pattern or topic (403).

    >>> str(Forbidden("subscribe", "orders.#"))
    "the token does not allow subscribe on 'orders.#'"
    """

    status = 403

    def __init__(self, action: Action, target: str) -> None:
        super().__init__(f"the token does not allow {action} on {target!r}")
        self.action = action
        self.target = target

    @property
    def www_authenticate(self) -> str:
        """The ``WWW-Authenticate`` header value (RFC 6750 §3.1, insufficient_scope)."""
        return _challenge("insufficient_scope", str(self))


def _challenge(error: str | None, description: str) -> str:
    if error is None:
        return f'Bearer realm="{REALM}"'
    # RFC 6750 allows only printable ASCII without '"' and '\' in error_description.
    safe = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in description)
    return f'Bearer realm="{REALM}", error="{error}", error_description="{safe[:200]}"'


class NotStarted(HopcastError):
    """The app's lifespan has not run, so it has no hub (a parent app mounted it without it)."""


class BrokerUnavailable(HopcastError, ConnectionError):
    """The broker cannot be reached right now; maps to HTTP 503."""


class PublishNotConfirmed(BrokerUnavailable):
    """The broker nacked a publish, or returned it as unroutable."""


class FrameError(HopcastError, ValueError):
    """Bytes that are not AMQP 0-9-1 as hopcast's codec knows it."""


class SubscriptionClosed(HopcastError):
    """A subscription was closed by the gateway; `reason` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Refused(HopcastError):
    """The gateway answered a `hopcast.Client` request with a problem (RFC 9457).

    >>> str(Refused(403, "Forbidden", "the token does not allow publish on 'a'"))
    "403 Forbidden: the token does not allow publish on 'a'"
    """

    def __init__(self, status: int, title: str, detail: str, body: str = "") -> None:
        super().__init__(f"{status} {title}: {detail}" if detail else f"{status} {title}")
        self.status = status
        self.title = title
        self.detail = detail
        self.body = body
        """The answer's body as it came (the problem's JSON), for logs and ``--json``."""


class PublishRefused(Refused):
    """A publish the gateway did not accept; nothing was published."""


class SubscriptionRefused(Refused):
    """A subscription answered with a 4xx: retrying would not help, so the iteration ends."""


class QueueRefused(Refused):
    """A work queue request (a task stream, a pull, a settle, an extend) the gateway refused."""


class LeaseLost(QueueRefused):
    """A settle answered ``409``: the lease expired, was settled or given back, or its
    connection dropped; its task is done already or comes again, flagged ``redelivered``.

    >>> str(LeaseLost(409, "Lease lost", "the lease is lost"))
    '409 Lease lost: the lease is lost'
    """
