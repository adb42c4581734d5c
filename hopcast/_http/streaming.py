"""What a subscription is answered with when the app runs under an ASGI server.

`EventStreamResponse` streams it (`hopcast serve` writes streams itself, in
`hopcast._http.server`); `ComeBackLater` is the finite answer that sends an
EventSource away for a while without making it give up.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from hopcast._core.errors import SubscriptionClosed
from hopcast._core.settings import Settings
from hopcast._core.sse import (
    TOKEN_EXPIRED,
    encode_gateway_event,
    encode_heartbeat,
    encode_preamble,
    encode_retry,
)
from hopcast._hub.hub import Hub
from hopcast._hub.subscription import Subscription

SEND_TIMEOUT = 30.0
"""Seconds one write may wait on a client's full socket before the client is cut off."""
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


class StreamHead(Response):
    """The answer to ``HEAD`` on a subscription: a GET's status and headers, and no body.

    No ``content-length`` either (a stream has none), so the head says what a GET
    would, and a client that keeps the connection reads nothing more into it.
    """

    def __init__(self) -> None:
        super().__init__(status_code=200)
        self.raw_headers = list(SSE_HEADERS)


class EventStreamResponse(Response):
    """Streams a subscription as text/event-stream; one task owns all the writes."""

    def __init__(
        self,
        hub: Hub,
        sub: Subscription,
        settings: Settings,
        *,
        expires_at: datetime | None = None,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        self.hub = hub
        self.sub = sub
        self.settings = settings
        self.expires_at = expires_at.timestamp() if expires_at is not None else None
        self.on_done = on_done
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self.sub
        writer = asyncio.current_task()
        if writer is None:  # pragma: no cover - always inside a task under ASGI servers
            raise RuntimeError("no current task")
        watcher = asyncio.create_task(self._watch(receive, writer))
        sub.on_cut = writer.cancel
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await self._write(send, encode_preamble(self.settings.retry, None))
            first_id = await sub.start()
            if first_id is not None:
                await self._write(send, encode_heartbeat(first_id))
            await self._stream(send)
        except SubscriptionClosed as closed:
            await self._finish(send, closed.reason)
        except TimeoutError:  # a send waited SEND_TIMEOUT: it resumes with Last-Event-ID
            sub.on_cut = None  # this writer is ending already
            sub.cut_slow()
        except (asyncio.CancelledError, OSError):
            pass  # the client left, or was cut off: it resumes with Last-Event-ID
        finally:
            watcher.cancel()
            sub.close("done")
            if self.on_done is not None:
                self.on_done()

    async def _stream(self, send: Send) -> None:
        sub = self.sub
        heartbeat = self.settings.heartbeat
        expires_at = self.expires_at
        while True:
            wait = heartbeat
            if expires_at is not None:
                left = expires_at - time.time()
                if left <= 0:
                    await self._write(send, token_expired_frame())
                    raise SubscriptionClosed("token-expired")
                wait = min(wait, left)
            chunk = await sub.next_chunk(wait)
            if chunk is None:
                if expires_at is not None and expires_at - time.time() <= 0:
                    continue
                chunk = encode_heartbeat(sub.safe_offset)
            await self._write(send, chunk)

    @staticmethod
    async def _write(send: Send, body: bytes) -> None:
        async with asyncio.timeout(SEND_TIMEOUT):
            await send({"type": "http.response.body", "body": body, "more_body": True})

    async def _finish(self, send: Send, reason: str) -> None:
        """End the response; ask a client sent away by shutdown to come back a bit later."""
        tail = b""
        if reason == "shutdown":
            spread = self.settings.retry * random.uniform(1.0, 3.0)
            tail = encode_retry(int(spread))
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(1.0):
                await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _watch(self, receive: Receive, writer: asyncio.Task[Any]) -> None:
        """Cancel the writer when the client disconnects or the subscription is cut off."""
        while True:
            message: Message = await receive()
            if message["type"] == "http.disconnect":
                if self.sub.closed is None:
                    writer.cancel()
                return


def token_expired_frame() -> bytes:
    # No id: the client's resume point stays at the last event it really got.
    frame = encode_gateway_event(0, TOKEN_EXPIRED, {"reason": "token-expired"})
    return frame.split(b"\n", 1)[1]


class ComeBackLater(Response):
    """200 with a spread-out ``retry:`` hint, then the end: an EventSource retries after it.

    A non-200 answer would make a browser give up for good (WHATWG: "fail the
    connection"), so "over capacity" and "shutting down" are said this way.
    """

    media_type = "text/event-stream"

    def __init__(self, retry_ms: int, reason: str) -> None:
        spread = int(retry_ms * random.uniform(1.0, 3.0))
        body = encode_retry(spread) + f": {reason}\n\n".encode()
        super().__init__(body, 200, headers={"Cache-Control": "no-cache"})


__all__ = ["ComeBackLater", "EventStreamResponse", "StreamHead", "token_expired_frame"]
