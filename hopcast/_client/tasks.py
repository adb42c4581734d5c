"""A task leased to this worker (`Task`), as the gateway hands it out, and how it is settled.

>>> task = Task.from_json("mail", {"lease": "L", "id": "7", "type": None, "data": "/w==",
...     "encoding": "base64", "deliveries": 2, "redelivered": True,
...     "expires": "2026-12-04T17:00:30Z"}, settler=None)
>>> task.data, task.body, task.expires.isoformat()
(b'\\xff', b'\\xff', '2026-12-04T17:00:30+00:00')
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

Action = Literal["ack", "nack", "reject"]
Result = Literal["ok", "lost", "forbidden"]


class Settler(Protocol):
    """What settles a task: the `Client` that took it."""

    async def _settle_one(self, task: Task, action: Action, delay: float) -> None: ...


@dataclass(eq=False, slots=True)
class Task:
    """One task leased to this worker: settle it with `ack`, `nack` or `reject`.

    ``data`` is the body as the gateway gave it: ``str`` when it is UTF-8, else
    ``bytes`` (it travelled as base64); ``body`` is always the bytes. ``lease``
    is the lease token, ``expires`` when the lease ends (moved by the automatic
    extension). Settling a lease that is gone raises `LeaseLost`.

    >>> async def handle(task: Task) -> None:
    ...     if task.type == "welcome":
    ...         await task.ack()
    ...     else:
    ...         await task.nack(delay=60)
    """

    queue: str
    lease: str
    id: str
    type: str | None
    data: str | bytes
    deliveries: int
    redelivered: bool
    expires: datetime
    settler: Settler | None = field(default=None, repr=False)
    settled: bool = False
    """Acked, nacked or rejected through this client, the gateway said ``ok``."""

    @classmethod
    def from_json(cls, queue: str, task: Mapping[str, Any], settler: Settler | None) -> Task:
        """The task object of the gateway's answer (`ValueError` if it is not one)."""
        try:
            text = task["data"]
            data: str | bytes = text
            if task.get("encoding") == "base64":
                data = base64.b64decode(text, validate=True)
            return cls(
                queue=queue,
                lease=str(task["lease"]),
                id=str(task["id"]),
                type=task.get("type"),
                data=data,
                deliveries=int(task["deliveries"]),
                redelivered=bool(task["redelivered"]),
                expires=datetime.fromisoformat(task["expires"]),
                settler=settler,
            )
        except (KeyError, TypeError, binascii.Error) as exc:
            raise ValueError(f"not a task: {exc!r}") from None

    @property
    def body(self) -> bytes:
        """The task's body, byte for byte."""
        return self.data.encode() if isinstance(self.data, str) else self.data

    async def ack(self) -> None:
        """Done: the task leaves the queue."""
        await self._settle("ack")

    async def nack(self, *, delay: float = 0.0) -> None:
        """Not done: the task goes back to the queue, after ``delay`` seconds."""
        await self._settle("nack", delay)

    async def reject(self) -> None:
        """Never to be done: the task goes straight to the dead letters."""
        await self._settle("reject")

    async def _settle(self, action: Action, delay: float = 0.0) -> None:
        if self.settler is None:
            raise RuntimeError("this task was not taken by a client")
        await self.settler._settle_one(self, action, delay)
