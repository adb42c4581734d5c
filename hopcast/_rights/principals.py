"""Principals: whom a verified token speaks for, and the grants its ``hopcast`` claim holds.

The claim is ``{"subscribe": [pattern, ...], "publish": [pattern, ...]}``, with
``enqueue`` and ``consume`` beside them for work queues (over queue names); a
claim of the wrong shape, or an ``exp`` that is not a number, is refused
(`Unauthorized`) as a token that does not verify is.

>>> UNRESTRICTED.may_publish("orders.42")
True
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from hopcast._core.errors import InvalidTopic, Unauthorized
from hopcast._core.topics import Pattern

CLAIM = "hopcast"
GRANTS = ("subscribe", "publish", "enqueue", "consume")
QueueAction = Literal["enqueue", "consume"]
MAX_GRANTS = 256
"""Patterns per list in the claim; each request is checked against every one."""
_MAX_TIMESTAMP = datetime(9999, 12, 31, tzinfo=UTC).timestamp()


@dataclass(frozen=True, slots=True)
class Principal:
    """Whom a verified token speaks for, what it grants, and when it stops.

    >>> Principal.from_claims({"hopcast": {"subscribe": ["orders.*"]}}).subscribe[0].text
    'orders.*'
    """

    subject: str | None = None
    subscribe: tuple[Pattern, ...] = ()
    publish: tuple[Pattern, ...] = ()
    enqueue: tuple[Pattern, ...] = ()
    consume: tuple[Pattern, ...] = ()
    expires_at: datetime | None = None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        """Read verified claims; a ``hopcast`` claim of the wrong shape raises `Unauthorized`."""
        grants = claims.get(CLAIM, {})
        if not isinstance(grants, dict):
            raise Unauthorized(f"the {CLAIM} claim must be an object")
        unknown = sorted(k for k in grants if k not in GRANTS)
        if unknown:
            raise Unauthorized(f"the {CLAIM} claim has an unknown key {unknown[0][:40]!r}")
        subject = claims.get("sub")
        return cls(
            subject=subject if isinstance(subject, str) else None,
            subscribe=_read_patterns(grants, "subscribe"),
            publish=_read_patterns(grants, "publish"),
            enqueue=_read_patterns(grants, "enqueue"),
            consume=_read_patterns(grants, "consume"),
            expires_at=_read_exp(claims.get("exp")),
        )

    def may_subscribe(self, pattern: Pattern) -> bool:
        """Whether some subscribe grant contains ``pattern``."""
        return any(grant.contains(pattern) for grant in self.subscribe)

    def may_publish(self, topic: str) -> bool:
        """Whether some publish grant matches ``topic``."""
        return any(grant.matches(topic) for grant in self.publish)

    def may_use_queue(self, action: QueueAction, name: str) -> bool:
        """Whether some ``enqueue`` or ``consume`` grant matches the queue ``name``."""
        grants = self.enqueue if action == "enqueue" else self.consume
        return any(grant.matches(name) for grant in grants)

    def seconds_left(self, now: float | None = None) -> float | None:
        """Seconds until the token expires (negative once it has), None if it never does."""
        if self.expires_at is None:
            return None
        return self.expires_at.timestamp() - (time.time() if now is None else now)


_ALL = (Pattern.parse("#"),)
UNRESTRICTED = Principal(subscribe=_ALL, publish=_ALL, enqueue=_ALL, consume=_ALL)
"""The principal of every request when auth is off."""


def _read_patterns(grants: Mapping[str, Any], key: str) -> tuple[Pattern, ...]:
    where = f"{CLAIM}.{key}"
    texts = grants.get(key, [])
    if not isinstance(texts, list):
        raise Unauthorized(f"{where} must be a list of patterns")
    if len(texts) > MAX_GRANTS:
        raise Unauthorized(f"{where} has more than {MAX_GRANTS} patterns")
    patterns: dict[Pattern, None] = {}
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise Unauthorized(f"{where}[{i}] must be a string")
        try:
            patterns[Pattern.parse(text)] = None
        except InvalidTopic as exc:
            raise Unauthorized(f"{where}[{i}] is not a pattern: {exc}") from None
    return tuple(patterns)


def _read_exp(exp: object) -> datetime | None:
    if exp is None:
        return None
    # PyJWT also takes numeric strings; RFC 7519 §2 says a NumericDate is a number.
    if (
        isinstance(exp, bool)
        or not isinstance(exp, int | float)
        or (isinstance(exp, float) and math.isnan(exp))
    ):
        raise Unauthorized("exp must be a number")
    # Compared, never converted: a huge JSON integer does not fit a float.
    return datetime.fromtimestamp(min(max(exp, 0), _MAX_TIMESTAMP), UTC)
