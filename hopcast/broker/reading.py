"""What both stream consumers share: a socket read into batches, heartbeats, failure.

`hopcast.broker.consumer.StreamConsumer` (AMQP 0-9-1) and
`hopcast.broker.native.NativeConsumer` (RabbitMQ's stream protocol) parse
their protocol into ``_messages``; this base hands those to the hub as
batches, returns credit through ``_grant`` before it waits, keeps the
heartbeat and turns any failure into `BrokerUnavailable` for the reader.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Hashable, Sequence
from typing import cast

from hopcast.broker import Message
from hopcast.errors import BrokerUnavailable


class ConsumerProtocol(asyncio.Protocol):
    """One consumer's connection; iterate it for batches of messages in offset order."""

    HEARTBEAT = b""
    """The protocol's heartbeat frame."""

    def __init__(self, name: str, heartbeat: int) -> None:
        self._name = name
        self._heartbeat = heartbeat
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._rest = b""
        self._replies: dict[Hashable, asyncio.Future[bytes]] = {}
        self._messages: list[Message] = []
        self._waiter: asyncio.Future[None] | None = None
        self._error: BrokerUnavailable | None = None
        self._last_heard = self._loop.time()
        self._ticker: asyncio.TimerHandle | None = None
        self.skipped = 0
        """Messages stepped over because they could not be decoded."""

    # -- what each protocol says -------------------------------------------------

    def _grant(self) -> None:
        """Give the broker credit for what the hub has taken (called before each wait)."""

    def _goodbye(self) -> asyncio.Future[bytes]:
        """Ask the broker to close the connection; the future is its answer."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------

    def _tick(self) -> None:
        """Send a heartbeat every quarter interval; give up after a whole one of silence."""
        now = self._loop.time()
        if now - self._last_heard > self._heartbeat:
            self._fail(f"no heartbeat from the broker for {self._heartbeat} s")
            self._abort()
            return
        self._send(self.HEARTBEAT)
        self._ticker = self._loop.call_later(self._heartbeat / 4, self._tick)

    def _send(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def _fail(self, reason: str) -> None:
        if self._error is None:
            self._error = BrokerUnavailable(reason)
        for future in self._replies.values():
            if not future.done():
                future.set_exception(self._error)
        self._replies.clear()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _abort(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        if self._transport is not None:
            self._transport.abort()

    async def aclose(self) -> None:
        """Say goodbye to the broker (briefly) and close the socket."""
        self._fail("the consumer was closed")
        transport = self._transport
        if transport is None or transport.is_closing():
            self._abort()
            return
        closed = self._goodbye()
        try:
            async with asyncio.timeout(1.0):
                await closed
        except (TimeoutError, BrokerUnavailable):
            pass
        finally:
            self._abort()  # also when the close itself is cancelled (shutdown)

    async def __aiter__(self) -> AsyncIterator[Sequence[Message]]:
        while True:
            self._grant()
            if not self._messages:
                if self._error is not None:
                    raise self._error
                self._waiter = self._loop.create_future()
                await self._waiter
                continue
            batch, self._messages = self._messages, []
            yield batch

    # -- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self._fail(f"the connection was lost: {exc!r}" if exc else "the connection was closed")
