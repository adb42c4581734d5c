"""A bare AMQP 0-9-1 connection for the benchmark's own clients: pamqp frames the
handshake, and the publisher (`bench.publisher`) and the bare stream consumer
(`bench.stream`) frame what they send and read by hand."""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any, Self

from pamqp import commands as spec
from pamqp import frame, header


class AmqpLink:
    """A connection with one channel open (`CHANNEL`), through `connect`."""

    CHANNEL = 1
    PRODUCT = "hopcast-bench"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, url: str) -> Self:
        """Open a connection and its channel."""
        parts = urllib.parse.urlsplit(url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 5672)
        self = cls(reader, writer)
        writer.write(frame.marshal(header.ProtocolHeader(), 0))
        await self._expect(spec.Connection.Start)
        user = urllib.parse.unquote(parts.username or "guest")
        password = urllib.parse.unquote(parts.password or "guest")
        vhost = urllib.parse.unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        self._send(
            spec.Connection.StartOk(
                client_properties={"product": cls.PRODUCT},
                response=f"\0{user}\0{password}",
            ),
            0,
        )
        tune = await self._expect(spec.Connection.Tune)
        self._send(spec.Connection.TuneOk(tune.channel_max, tune.frame_max, heartbeat=0), 0)
        self._send(spec.Connection.Open(virtual_host=vhost), 0)
        await self._expect(spec.Connection.OpenOk)
        self._send(spec.Channel.Open(), self.CHANNEL)
        await self._expect(spec.Channel.OpenOk)
        return self

    def _send(self, value: Any, channel: int) -> None:
        self._writer.write(frame.marshal(value, channel))

    async def _expect(self, kind: type[Any]) -> Any:
        head = await self._reader.readexactly(7)
        rest = await self._reader.readexactly(int.from_bytes(head[3:7], "big") + 1)
        _, _, value = frame.unmarshal(head + rest)
        if isinstance(value, spec.Connection.Close | spec.Channel.Close):
            raise ConnectionError(f"the broker closed: {value.reply_code} {value.reply_text}")
        if not isinstance(value, kind):
            raise ConnectionError(f"expected {kind.__name__}, the broker sent {value!r}")
        return value

    async def close(self) -> None:
        if self._writer.is_closing():  # the broker closed it first
            return
        try:
            self._send(spec.Connection.Close(200, "done", 0, 0), 0)
            await asyncio.wait_for(self._expect(spec.Connection.CloseOk), 5)
        except (OSError, asyncio.IncompleteReadError):  # TimeoutError is an OSError
            pass
        finally:
            self._writer.close()
