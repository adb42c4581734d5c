"""Settlement from anywhere: a lease another process holds is settled through that process.

Each process consumes a control queue named after its start (``leases``: the
token's ``instance``); a process that gets a settlement for a lease of another
sends it there with the principal who asked, and the owner settles it as if it
had been asked itself (it judges the principal). No answer in time is a
`BrokerUnavailable` (503, nothing claimed); no such queue means the owner is gone,
and with it its leases (``lost``: their tasks are already back in the queue).

>>> control_queue(bytes(range(8)))
'hopcast.ctl.0001020304050607'
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

from hopcast._broker.base import TaskBroker
from hopcast._core.errors import BrokerUnavailable

Action = Literal["ack", "nack", "reject", "extend"]
Result = Literal["ok", "lost", "forbidden"]

CONTROL_PREFIX = "hopcast.ctl."
ROUTE_TIMEOUT = 5.0
"""Seconds a process waits for the owner of a lease to answer a settlement."""
_RESULTS = frozenset(get_args(Result))
_ACTIONS = frozenset(get_args(Action))


def control_queue(instance: bytes) -> str:
    """The control queue of the process that started as ``instance``."""
    return CONTROL_PREFIX + instance.hex()


@dataclass(frozen=True, slots=True)
class SettleRequest:
    """A settlement routed to the owner of its leases."""

    queue: str
    action: Action
    leases: list[str]
    owner: str | None
    seconds: float

    def encode(self) -> bytes:
        return json.dumps(
            {
                "queue": self.queue,
                "action": self.action,
                "leases": self.leases,
                "owner": self.owner,
                "seconds": self.seconds,
            }
        ).encode()

    @classmethod
    def decode(cls, body: bytes) -> SettleRequest:
        """The request in ``body``; `ValueError` when it is not one."""
        data: Any = json.loads(body)
        ok = (
            isinstance(data, dict)
            and isinstance(data.get("queue"), str)
            and data.get("action") in _ACTIONS
            and isinstance(data.get("leases"), list)
            and all(isinstance(t, str) for t in data["leases"])
            and (data.get("owner") is None or isinstance(data.get("owner"), str))
            and isinstance(data.get("seconds"), int | float)
        )
        if not ok:
            raise ValueError("not a settlement request")
        return cls(data["queue"], data["action"], data["leases"], data["owner"], data["seconds"])


def encode_answer(results: dict[str, Result], expires: dict[str, str]) -> bytes:
    return json.dumps({"results": results, "expires": expires}).encode()


class Router:
    """Sends settlements to the process that holds the leases, over the broker."""

    def __init__(self, tasks: TaskBroker) -> None:
        self._tasks = tasks
        self.reachable = asyncio.Event()
        """Set while this process consumes its control queue: only then may it grant a
        lease, which any process must be able to settle."""

    async def until_reachable(self) -> None:
        """Return once this process consumes its control queue; `BrokerUnavailable` if it
        does not within `ROUTE_TIMEOUT` (after a broker restart, while it is declared again)."""
        try:
            async with asyncio.timeout(ROUTE_TIMEOUT):
                await self.reachable.wait()
        except TimeoutError:
            raise BrokerUnavailable(
                "this process's control queue is not declared yet: no lease is granted until "
                "other processes can settle it"
            ) from None

    async def settle(
        self, instance: bytes, request: SettleRequest
    ) -> tuple[dict[str, Result], dict[str, str]]:
        """Each lease's result (and the new expiry of those extended) as the owner answered."""
        answer = await self._tasks.request(control_queue(instance), request.encode(), ROUTE_TIMEOUT)
        lost: dict[str, Result] = {token: "lost" for token in request.leases}
        if answer is None:
            return lost, {}
        data: Any = json.loads(answer)
        results, expires = data.get("results", {}), data.get("expires", {})
        for token in request.leases:
            if results.get(token) in _RESULTS:
                lost[token] = results[token]
        extended = {t: str(at) for t, at in expires.items() if lost.get(t) == "ok"}
        return lost, extended
