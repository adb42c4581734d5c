"""One work queue and its leases: tasks handed to workers, settled, or given back in time.

A lease is the gateway's; the delivery stays unacknowledged on the channel that
took it until the lease is settled, expires or its channel closes, so the broker
redelivers whatever a worker (or this gateway) dropped. Why each case ends as
it does is in ``docs/architecture.md`` (Work queues).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hopcast._broker.base import Delivery, Outcome, TaskBroker, TaskChannel
from hopcast._core.errors import BrokerUnavailable
from hopcast._queue.expiry import Expiries
from hopcast._queue.leases import LeaseRef, LeaseSigner
from hopcast._queue.names import amqp_name
from hopcast._queue.routing import Action, Result, Router, SettleRequest
from hopcast._queue.tasks import dead_letter_object, task_object, timestamp

log = logging.getLogger("hopcast.queue")  # named by layer: module paths are internal

_OUTCOMES: dict[Action, Outcome] = {"ack": "ack", "nack": "requeue", "reject": "dead"}
DEPTH_TIMEOUT = 2.0
"""Seconds a scrape waits for a queue's depth."""
_GENERATIONS = itertools.count(1)


@dataclass(frozen=True, slots=True)
class LeaseLimits:
    """How long leases last: ``lease`` by default, never past ``max_lease`` from the grant."""

    lease: float
    max_lease: float
    delivery_limit: int


@dataclass
class QueueStats:
    """A queue's counters since start (plain integers, read at scrape time)."""

    enqueued: int = 0
    leased: int = 0
    redeliveries: int = 0
    lease_expiries: int = 0
    dead_lettered: int = 0
    settled: dict[str, int] = field(default_factory=lambda: {"ack": 0, "nack": 0, "reject": 0})
    settlements_routed: int = 0
    """Leases settled or extended through the process that holds them."""


@dataclass(eq=False, slots=True)
class Lease:
    """A task leased to a worker (``owner``: the principal's subject) until ``expires``.

    It keeps what settling needs and no more (the task's body went to the worker):
    thousands are held at once.
    """

    generation: int
    owner: str | None
    channel: TaskChannel
    tag: int
    deliveries: int
    """The delivery's count (`Delivery.deliveries`), for the delivery limit."""
    cap: float
    expires: float


@dataclass(frozen=True, slots=True)
class Settled:
    """The outcome for each lease of a request; ``expires`` for the ones extended."""

    results: dict[str, Result]
    expires: dict[str, str]


class WorkQueue:
    """A configured work queue: enqueue, lease (stream or pull), settle."""

    def __init__(
        self,
        name: str,
        tasks: TaskBroker,
        signer: LeaseSigner,
        limits: LeaseLimits,
        router: Router,
    ) -> None:
        self.name = name
        self._router = router
        self.amqp = amqp_name(name)
        self.stats = QueueStats()
        self._tasks = tasks
        self._signer = signer
        self._limits = limits
        self._leases: dict[tuple[int, int], Lease] = {}
        self._expiries = Expiries[Lease](self._expire)
        self._pull: TaskChannel | None = None
        self._pull_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self.closing = asyncio.Event()
        """Set when the gateway shuts down: its task streams end."""

    @property
    def leased(self) -> int:
        """Leases held now."""
        return len(self._leases)

    async def depth(self) -> int | None:
        """Tasks ready in the queue now; None when the broker cannot say."""
        try:
            async with asyncio.timeout(DEPTH_TIMEOUT):
                return await self._tasks.depth(self.amqp)
        except (BrokerUnavailable, TimeoutError):
            return None

    # -- enqueue ------------------------------------------------------------------

    async def enqueue(self, body: bytes, type: str | None, id: str) -> None:
        await self._tasks.enqueue(self.amqp, body, type, id)
        self.stats.enqueued += 1

    # -- leasing -----------------------------------------------------------------

    def grant(
        self, channel: TaskChannel, delivery: Delivery, owner: str | None, seconds: float
    ) -> dict[str, Any]:
        """Lease ``delivery`` to ``owner`` for ``seconds`` (at most the cap); the task object."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        cap = now + self._limits.max_lease
        ref = LeaseRef(self._signer.instance, channel.key, delivery.tag, next(_GENERATIONS))
        lease = Lease(
            ref.generation,
            owner,
            channel,
            delivery.tag,
            delivery.deliveries,
            cap,
            min(now + seconds, cap),
        )
        self._leases[(ref.channel, ref.tag)] = lease
        self._expiries.add(lease, lease.expires)
        self.stats.leased += 1
        if delivery.redelivered or delivery.deliveries > 1:
            self.stats.redeliveries += 1
        token = self._signer.sign(self.name, ref)
        return task_object(token, delivery, _wall(lease.expires))

    def _expire(self, lease: Lease) -> None:
        if self._take(lease) is lease:
            self.stats.lease_expiries += 1
            self._give_back_later(lease, 0.0)

    def _held(self, ref: LeaseRef) -> Lease | None:
        """The lease ``ref`` names, if it is still the latest and held (by any principal)."""
        lease = self._leases.get((ref.channel, ref.tag))
        if lease is None or lease.generation != ref.generation:
            return None
        return lease

    def _take(self, lease: Lease) -> Lease | None:
        """Remove ``lease`` and return it, if it is still held."""
        key = (lease.channel.key, lease.tag)
        if self._leases.get(key) is not lease:
            return None
        del self._leases[key]
        self._expiries.discard(lease, lease.expires)
        return lease

    def _give_back_later(self, lease: Lease, delay: float) -> None:
        """Give the task back to the queue after ``delay`` seconds (the delivery held till then)."""

        async def give_back() -> None:
            if delay > 0:
                await asyncio.sleep(delay)
            await self._settle_delivery(lease, "requeue")

        task = asyncio.get_running_loop().create_task(give_back())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _settle_delivery(self, lease: Lease, outcome: Outcome) -> bool:
        """Settle on the broker; False when the channel is gone (the broker redelivers)."""
        if outcome == "dead" or (
            outcome == "requeue" and lease.deliveries > self._limits.delivery_limit
        ):
            self.stats.dead_lettered += 1
        try:
            await lease.channel.settle(lease.tag, outcome)
        except BrokerUnavailable as exc:
            log.info("settling a task of %s failed (%s): it comes again", self.name, exc)
            return False
        return True

    def forget(self, channel: TaskChannel) -> None:
        """``channel`` closed: its deliveries went back to the queue, and their leases are lost."""
        for key, lease in list(self._leases.items()):
            if lease.channel is channel:
                del self._leases[key]
                self._expiries.discard(lease, lease.expires)
                if lease.deliveries > self._limits.delivery_limit:
                    self.stats.dead_lettered += 1

    # -- pull ----------------------------------------------------------------------

    async def receive(
        self, owner: str | None, most: int, wait: float, seconds: float
    ) -> list[dict[str, Any]]:
        """Up to ``most`` tasks, waiting up to ``wait`` seconds for a first one."""
        channel = await self._pull_channel()
        wake = asyncio.Event()
        taking = asyncio.ensure_future(channel.take(most, wait, wake))
        try:
            deliveries = await asyncio.shield(taking)
        except asyncio.CancelledError:
            # the client left: stop waiting, and lease what came anyway, so that it goes back
            wake.set()
            taking.add_done_callback(lambda done: self._orphans(channel, done, owner, seconds))
            raise
        except BrokerUnavailable:
            async with self._pull_lock:
                if self._pull is channel:
                    self.forget(channel)
                    self._pull = None
                    await channel.aclose()
            raise
        return [self.grant(channel, d, owner, seconds) for d in deliveries]

    async def _pull_channel(self) -> TaskChannel:
        """The queue's pulling channel, opened again when it closed (every receive shares it:
        each takes with a consumer of its own)."""
        async with self._pull_lock:
            channel = self._pull
            if channel is None or channel.closed:
                if channel is not None:
                    self.forget(channel)
                await self._router.until_reachable()
                channel = self._pull = await self._tasks.channel(self.amqp, None)
            return channel

    def _orphans(
        self,
        channel: TaskChannel,
        done: asyncio.Future[list[Delivery]],
        owner: str | None,
        seconds: float,
    ) -> None:
        if not done.cancelled() and done.exception() is None:
            for delivery in done.result():
                self.grant(channel, delivery, owner, seconds)

    # -- stream (`hopcast._queue.stream`) ----------------------------------------------

    async def open_channel(self, prefetch: int) -> TaskChannel:
        await self._router.until_reachable()
        return await self._tasks.channel(self.amqp, prefetch)

    def close_orphan(self, opening: asyncio.Future[TaskChannel]) -> None:
        """Close a channel no one waits for any more (what it was sent goes back)."""
        if opening.cancelled() or opening.exception() is not None:
            return
        task = asyncio.get_running_loop().create_task(opening.result().aclose())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- dead letters ----------------------------------------------------------------

    async def dead_letters(self, most: int) -> list[dict[str, Any]]:
        """The first ``most`` dead letters, left where they are."""
        return [dead_letter_object(d) for d in await self._tasks.dead_letters(self.amqp, most)]

    async def redrive(self, ids: frozenset[str] | None) -> int:
        """Move the dead letters with these ids (None: all) back to the queue."""
        return await self._tasks.redrive(self.amqp, ids)

    # -- settling ------------------------------------------------------------------

    async def settle(
        self,
        tokens: Iterable[object],
        action: Action,
        owner: str | None,
        *,
        seconds: float = 0.0,
    ) -> Settled:
        """Settle or extend leases: every token is checked first (`InvalidLease`: none is
        settled), then each is settled that is still held by ``owner``; the leases of
        another process through that process (`BrokerUnavailable` if one does not answer
        in time: then none is settled here).

        ``seconds``: how far to extend, or how long a nack keeps the task first.
        """
        refs = {token: self._signer.read(self.name, token) for token in dict.fromkeys(tokens)}
        elsewhere: dict[bytes, list[str]] = {}
        for token, ref in refs.items():
            if ref.instance != self._signer.instance:
                elsewhere.setdefault(ref.instance, []).append(str(token))
        answers = await asyncio.gather(
            *(
                self._router.settle(
                    instance, SettleRequest(self.name, action, leases, owner, seconds)
                )
                for instance, leases in elsewhere.items()
            )
        )
        results: dict[str, Result] = {}
        expires: dict[str, str] = {}
        for routed, extended in answers:
            results.update(routed)
            expires.update(extended)
            self.stats.settlements_routed += len(routed)
        here = await self.settle_here(
            {t: r for t, r in refs.items() if r.instance == self._signer.instance},
            action,
            owner,
            seconds,
        )
        results.update(here.results)
        expires.update(here.expires)
        order = [str(token) for token in refs]
        return Settled(
            {t: results[t] for t in order}, {t: expires[t] for t in order if t in expires}
        )

    async def settle_here(
        self, refs: dict[object, LeaseRef], action: Action, owner: str | None, seconds: float
    ) -> Settled:
        """Settle or extend leases of this process (a lease of another start is lost)."""
        results: dict[str, Result] = {}
        expires: dict[str, str] = {}
        for token, ref in refs.items():
            lease = self._held(ref)
            mine = ref.instance == self._signer.instance
            if not mine or lease is None or lease.channel.closed:
                results[str(token)] = "lost"
            elif lease.owner != owner:
                results[str(token)] = "forbidden"
            elif action == "extend":
                expires[str(token)] = self._extend(lease, seconds)
                results[str(token)] = "ok"
            else:
                results[str(token)] = await self._finish(lease, action, seconds)
        return Settled(results, expires)

    async def answer(self, request: SettleRequest) -> Settled:
        """Settle what another process was asked (`InvalidLease`: a token not signed here)."""
        refs: dict[object, LeaseRef] = {t: self._signer.read(self.name, t) for t in request.leases}
        return await self.settle_here(refs, request.action, request.owner, request.seconds)

    def _extend(self, lease: Lease, seconds: float) -> str:
        self._expiries.discard(lease, lease.expires)
        lease.expires = min(asyncio.get_running_loop().time() + seconds, lease.cap)
        self._expiries.add(lease, lease.expires)
        return timestamp(_wall(lease.expires))

    async def _finish(self, lease: Lease, action: Action, delay: float) -> Result:
        self._take(lease)
        self.stats.settled[action] += 1
        if action == "nack" and delay > 0:
            left = lease.cap - asyncio.get_running_loop().time()
            self._give_back_later(lease, max(0.0, min(delay, left)))
            return "ok"
        ok = await self._settle_delivery(lease, _OUTCOMES[action])
        return "ok" if ok else "lost"

    async def aclose(self) -> None:
        """Give back what the pull channel holds, and stop the delayed give-backs."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._pull is not None:
            self.forget(self._pull)
            await self._pull.aclose()
            self._pull = None


def _wall(at: float) -> float:
    """A loop time as a wall-clock time."""
    return time.time() + (at - asyncio.get_running_loop().time())
