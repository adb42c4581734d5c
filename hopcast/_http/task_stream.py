"""A task stream: one connection, one competing consumer, each task an SSE event.

>>> encode_task({"lease": "L", "id": "1"})
b'event: task\\nid: L\\ndata: {"lease":"L","id":"1"}\\n\\n'
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import Any

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from hopcast._core.errors import SubscriptionClosed
from hopcast._core.settings import Settings
from hopcast._core.sse import encode_heartbeat, encode_preamble, encode_retry
from hopcast._http.streaming import SEND_TIMEOUT, SSE_HEADERS
from hopcast._queue.stream import TaskStream


def encode_task(task: dict[str, Any]) -> bytes:
    """``event: task``, its lease token as the ``id:``, the task object as one line of JSON."""
    data = json.dumps(task, separators=(",", ":"), ensure_ascii=False).encode()
    lease: str = task["lease"]
    return b"event: task\nid: " + lease.encode() + b"\ndata: " + data + b"\n\n"


class TaskStreamResponse(Response):
    """Streams tasks as they are leased; when the client leaves, what it holds goes back.

    A heartbeat (a comment: a lease token is no resume point) every ``--heartbeat``
    seconds of quiet. One task owns the writes; a second watches for the disconnect.
    """

    def __init__(self, stream: TaskStream, settings: Settings) -> None:
        self.stream = stream
        self.settings = settings
        self.status_code = 200
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = asyncio.current_task()
        if writer is None:  # pragma: no cover - always inside a task under ASGI servers
            raise RuntimeError("no current task")
        watcher = asyncio.create_task(_watch(receive, writer))
        try:
            await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            await _write(send, encode_preamble(self.settings.retry, None))
            while True:
                tasks = await self.stream.next_tasks(self.settings.heartbeat)
                if tasks is None:
                    await _write(send, encode_heartbeat(None))
                else:  # the tasks that came together, in one write
                    await _write(send, b"".join(encode_task(task) for task in tasks))
        except SubscriptionClosed:  # shutting down: come back a little later, spread out
            spread = int(self.settings.retry * random.uniform(1.0, 3.0))
            with contextlib.suppress(OSError, TimeoutError):
                await _write(send, encode_retry(spread))
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (asyncio.CancelledError, OSError, TimeoutError):
            pass  # the client left (or stalled): its unsettled tasks go back below
        finally:
            watcher.cancel()
            closing = asyncio.ensure_future(self.stream.aclose())
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(closing)  # cancelled again: it still closes


async def _write(send: Send, body: bytes) -> None:
    async with asyncio.timeout(SEND_TIMEOUT):
        await send({"type": "http.response.body", "body": body, "more_body": True})


async def _watch(receive: Receive, writer: asyncio.Task[Any]) -> None:
    """Cancel the writer when the client disconnects."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            writer.cancel()
            return
