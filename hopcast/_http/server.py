"""The gateway's own HTTP/1.1 listener: event streams go straight to sockets.

An event stream is the hot path, so it skips the ASGI layer: the hub pushes
each dispatched batch into the connection, which joins what is queued and
writes it with one ``transport.write`` (no task, no ``send`` call, per
connection). Every other request (publish, health, metrics, errors) is handed
to the Starlette app, which stays the single place where routes, validation and
problem details live, and which can still be mounted inside another ASGI app.
Here live the socket, the accepted connections and the sweep that sends their
heartbeats and enforces their timeouts; each connection's state and its
stream's writes are in `hopcast._http.connection`, and reading a request
within the limits, its ASGI scope, the app's answer and its bytes in
`hopcast._http.parsing`.

>>> server = StreamServer(create_app(Settings.from_env({"HOPCAST_BROKER": "memory://"})))
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

from starlette.applications import Starlette

from hopcast._core.errors import cannot_listen
from hopcast._core.settings import Settings
from hopcast._http.app import create_app
from hopcast._http.connection import HttpConnection
from hopcast._http.writes import LOAD_SAMPLE, Coalescer
from hopcast._hub.hub import Hub

TICK = 1.0
"""Seconds between the sweeps that send heartbeats and enforce the connections' timeouts."""
BACKLOG = 2048
"""Pending connections the kernel keeps for accept (also for a worker's inherited socket)."""


class StreamServer:
    """Serves one gateway app on a socket; owns its connections and their heartbeats."""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        self.settings: Settings = app.state.settings
        self.connections: set[HttpConnection] = set()
        self._servers: list[asyncio.AbstractServer] = []
        self._ticker: asyncio.Task[None] | None = None
        self.address: tuple[str, int] | None = None
        self._emptied = asyncio.Event()
        self.coalescer = Coalescer(self.settings.max_write_delay, self.settings.workers)

    @property
    def hub(self) -> Hub:
        hub: Hub = self.app.state.hub
        return hub

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on ``sock`` (a worker's inherited socket) or on the settings' host and port."""
        loop = asyncio.get_running_loop()
        if sock is not None:
            server = await loop.create_server(
                lambda: HttpConnection(self), sock=sock, backlog=BACKLOG
            )
        else:
            host, port = self.settings.host, self.settings.port
            try:
                server = await loop.create_server(
                    lambda: HttpConnection(self), host, port, backlog=BACKLOG, reuse_address=True
                )
            except OSError as exc:
                raise cannot_listen(host, port, exc) from exc
        self._servers.append(server)
        bound = server.sockets[0].getsockname()
        self.address = (bound[0], bound[1])
        self._ticker = asyncio.create_task(self._tick(), name="hopcast-listener-tick")

    async def _tick(self) -> None:
        period = min(TICK, self.settings.heartbeat / 2)
        stats = self.hub.stats
        cpu, wall, delivered = time.process_time(), time.monotonic(), stats.deliveries
        swept = wall
        while True:
            await asyncio.sleep(min(period, LOAD_SAMPLE))
            cpu_now, wall_now, delivered_now = (
                time.process_time(),
                time.monotonic(),
                stats.deliveries,
            )
            elapsed = max(wall_now - wall, 1e-6)
            self.coalescer.sample((cpu_now - cpu) / elapsed, (delivered_now - delivered) / elapsed)
            cpu, wall, delivered = cpu_now, wall_now, delivered_now
            if wall_now - swept >= period * 0.9:  # timers may fire a hair early
                swept = wall_now
                for conn in list(self.connections):
                    conn.tick(wall_now)

    def begin_shutdown(self) -> None:
        """Stop accepting; end every stream with a spread-out retry hint; close idle connections."""
        for server in self._servers:
            server.close()
        self.hub.begin_shutdown()
        for conn in list(self.connections):
            conn.shutdown()

    def forget(self, conn: HttpConnection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._emptied.set()

    async def wait_closed(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for connections to finish, then drop the rest."""
        if self.connections:
            self._emptied.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._emptied.wait()
        for conn in list(self.connections):
            conn.abort()
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker


__all__ = ["HttpConnection", "StreamServer", "create_app"]
