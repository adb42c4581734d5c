"""A TCP proxy that can turn into a black hole: bytes stop flowing, no socket is closed.

That is a cable pulled or a firewall dropping packets: neither side learns of
it from TCP, only from a heartbeat that stops arriving. (``rabbitmqctl
close_all_connections`` is a clean close, a different case.)
"""

from __future__ import annotations

import asyncio
import contextlib


class _Link:
    """One proxied connection: two sockets and the pumps between them."""

    def __init__(self, downstream: asyncio.StreamWriter, lost: bool) -> None:
        self.downstream = downstream
        self.upstream: asyncio.StreamWriter | None = None
        self.lost = lost
        """Black-holed: nothing is forwarded any more, and no close is passed on."""
        self.pumps: list[asyncio.Task[None]] = []

    def abort(self) -> None:
        for pump in self.pumps:
            pump.cancel()
        for writer in (self.downstream, self.upstream):
            if writer is not None:
                writer.transport.abort()


class BlackHoleProxy:
    """Forwards 127.0.0.1:``port`` to a target until `black_hole`; `heal` lets new links through.

    A link black-holed once stays silent until the proxy closes (both of its ends
    have given up on it by the time the network heals); a link opened during the
    black hole is accepted and never answered, as a connect into a dropped route
    hangs.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.holed = False
        self.port = 0
        self.links: list[_Link] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> BlackHoleProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def black_hole(self) -> None:
        """From now on nothing flows, on open links and on new ones."""
        self.holed = True
        for link in self.links:
            link.lost = True

    def heal(self) -> None:
        """New links are forwarded again; links lost in the black hole stay silent."""
        self.holed = False

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        links, self.links = self.links, []
        for link in links:
            link.abort()
        pumps = [p for link in links for p in link.pumps]
        await asyncio.gather(*pumps, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer, lost=self.holed)
        self.links.append(link)
        if link.lost:
            link.pumps.append(asyncio.create_task(self._pump(link, reader, None)))
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link.upstream = up_writer
        link.pumps += [
            asyncio.create_task(self._pump(link, reader, up_writer)),
            asyncio.create_task(self._pump(link, up_reader, writer)),
        ]

    @staticmethod
    async def _pump(
        link: _Link, source: asyncio.StreamReader, sink: asyncio.StreamWriter | None
    ) -> None:
        """Copy until EOF; in the black hole, read and drop (the packets vanish)."""
        with contextlib.suppress(OSError):
            while True:
                data = await source.read(65536)
                if not data:
                    break
                if link.lost or sink is None:
                    continue
                sink.write(data)
                await sink.drain()
            if not link.lost and sink is not None:
                sink.close()  # a clean close is passed on, outside the black hole
