"""The gateway's refusals (RFC 9457 problem details) as `Refused` errors, and its ``Retry-After``.

>>> str(refusal(Refused, 404, '{"title": "Not found", "detail": "no such queue"}'))
'404 Not found: no such queue'
"""

from __future__ import annotations

import contextlib
import json
from typing import TypeVar

import httpx

from hopcast._core.errors import Refused

_R = TypeVar("_R", bound=Refused)

RECONNECT_ERRORS = (httpx.TransportError, httpx.RemoteProtocolError)
"""What ends a connection that a reconnect may mend."""


def refusal(kind: type[_R], status: int, body: str) -> _R:
    """A `Refused` of ``kind`` from a problem-details body (or whatever the body was)."""
    title, detail = "", body.strip()[:500]
    with contextlib.suppress(ValueError, AttributeError):
        problem = json.loads(body)
        title, detail = str(problem.get("title", "")), str(problem.get("detail", ""))
    return kind(status, title or httpx.codes.get_reason_phrase(status) or "Error", detail, body)


def retry_after(value: str | None, default: float) -> float:
    """Seconds from a ``Retry-After`` header (seconds only; the gateway sends no dates)."""
    try:
        return min(60.0, max(0.0, float(value))) if value else default
    except ValueError:
        return default
