"""A task as workers see it: the same JSON object from a stream and from a pull.

The body travels as text when it is UTF-8 and as base64 otherwise, so no task
is ever dropped for its bytes.

>>> body_fields(b"hi")
{'data': 'hi', 'encoding': 'utf-8'}
>>> body_fields(b"\\xff")
{'data': '/w==', 'encoding': 'base64'}
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from hopcast._broker.base import DeadLetter, Delivery


def body_fields(body: bytes) -> dict[str, str]:
    """``data`` and its ``encoding``: the body as text, or base64 when it is not UTF-8."""
    try:
        return {"data": body.decode("utf-8"), "encoding": "utf-8"}
    except UnicodeDecodeError:
        return {"data": base64.b64encode(body).decode("ascii"), "encoding": "base64"}


def timestamp(when: float) -> str:
    """A wall-clock time in ISO 8601, UTC, to the second: ``2026-12-04T17:00:30Z``."""
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def task_object(lease: str, delivery: Delivery, expires: float) -> dict[str, Any]:
    """The task a worker gets, ``expires`` the lease's end (wall-clock seconds)."""
    return {
        "lease": lease,
        "id": delivery.id,
        "type": delivery.type,
        **body_fields(delivery.body),
        "deliveries": delivery.deliveries,
        "redelivered": delivery.redelivered,
        "expires": timestamp(expires),
    }


def dead_letter_object(dead: DeadLetter) -> dict[str, Any]:
    """A dead letter as listed: the task, and why it died (RabbitMQ's ``x-death``)."""
    return {
        "id": dead.id,
        "type": dead.type,
        **body_fields(dead.body),
        "reason": dead.reason,
        "count": dead.count,
        "died": timestamp(dead.died.timestamp()) if dead.died is not None else None,
    }
