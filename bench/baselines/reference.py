"""The physical reference: the least work a Python fan-out server can do, on uvloop.

No broker and no parsing beyond the request line (and a POST's length): ``GET
/events/{topic}`` joins a dict of topic to connections, ``POST /pub/{topic}``
frames its body once (``data: …``) and queues the frame for each of the
topic's connections, and one callback per loop turn writes each connection's
queue in one write. No ids, no heartbeats, no backpressure, no limits: what
this machine's Python can deliver, which no gateway written in it can pass.
With ``--hold-ms N`` the callback runs once every N ms instead, so that each
connection gets one write per window, as a gateway's write coalescing gives it.
Fed by the benchmark's publisher over HTTP, as nchan is. Run:
``python -m bench.baselines.reference --port 8080 [--hold-ms 15]``.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import cast

import uvloop

STREAM = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
CREATED = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
READY = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nready\n"
MISSING = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class Hub:
    """Topic to connections, and the frames queued for each until this turn's flush."""

    def __init__(self, hold: float = 0.0) -> None:
        self.topics: dict[bytes, set[asyncio.Transport]] = {}
        self.queued: dict[asyncio.Transport, list[bytes]] = {}
        self.flushing = False
        self.hold = hold

    def publish(self, topic: bytes, body: bytes) -> None:
        frame = b"data: " + body + b"\n\n"
        for transport in self.topics.get(topic, ()):
            self.queued.setdefault(transport, []).append(frame)
        if not self.flushing:
            self.flushing = True
            loop = asyncio.get_running_loop()
            if self.hold:
                loop.call_later(self.hold, self.flush)
            else:
                loop.call_soon(self.flush)

    def flush(self) -> None:
        self.flushing = False
        for transport, frames in self.queued.items():
            if not transport.is_closing():
                transport.write(b"".join(frames))
        self.queued.clear()


class Connection(asyncio.Protocol):
    """A subscriber (after its request line) or a publisher (pipelined POSTs)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.buffer = b""
        self.topic: bytes | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.topic is not None and self.transport is not None:
            self.hub.topics.get(self.topic, set()).discard(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.topic is not None or self.transport is None:
            return  # a subscriber says nothing more
        buffer, answers = self.buffer + data, []
        while (end := buffer.find(b"\r\n\r\n")) >= 0:
            head = buffer[:end]
            method, _, rest = head.split(b"\r\n", 1)[0].partition(b" ")
            path = rest.split(b" ", 1)[0]
            length = 0
            if method == b"POST":
                start = head.lower().find(b"content-length:")
                length = int(head[start + 15 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
                if len(buffer) < end + 4 + length:
                    break
                self.hub.publish(path.removeprefix(b"/pub/"), buffer[end + 4 : end + 4 + length])
                answers.append(CREATED)
            elif path.startswith(b"/events/"):
                self.topic = path.removeprefix(b"/events/")
                self.hub.topics.setdefault(self.topic, set()).add(self.transport)
                answers.append(STREAM)
            else:
                answers.append(READY if path == b"/readyz" else MISSING)
            buffer = buffer[end + 4 + length :]
        self.buffer = buffer
        self.transport.write(b"".join(answers))


async def serve(port: int, hold: float = 0.0) -> None:
    """Serve on ``port`` until cancelled; ``hold``: seconds between writes (0: every turn)."""
    hub = Hub(hold)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(hub), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--hold-ms", type=float, default=0.0, help="one write per window")
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.hold_ms / 1000))


if __name__ == "__main__":
    main()
