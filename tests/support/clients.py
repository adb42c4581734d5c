"""HTTP clients of a gateway: a subscriber reading in the background, a publisher, a metric."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping

import httpx

from tests.support.sse import Event, EventStream


class Listener:
    """Reads one SSE response in the background; events and the last id pile up for checks."""

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.transport = transport
        """How to reach the server (TLS, a source address), when not as httpx does by default."""
        self.stream = EventStream()
        self.events: list[Event] = []
        self.last_id: str | None = None
        self.status: int | None = None
        self.response_headers: httpx.Headers | None = None
        self.raw = bytearray()
        self.ended = asyncio.Event()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        try:
            async with (
                httpx.AsyncClient(
                    timeout=httpx.Timeout(10.0, read=None), transport=self.transport
                ) as http,
                http.stream("GET", self.url, headers=self.headers) as response,
            ):
                self.status = response.status_code
                self.response_headers = response.headers
                async for raw in response.aiter_raw():
                    self.raw += raw
                    self.events += self.stream.feed(raw)
                    self.last_id = self.stream.last_event_id or self.last_id
                    self._arrived.set()
        except httpx.HTTPError:
            pass
        finally:
            self.ended.set()
            self._arrived.set()

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[Event]:
        """Wait until ``count`` events arrived (or the stream ended); return them all."""
        async with asyncio.timeout(timeout):
            while len(self.events) < count and not self.ended.is_set():
                self._arrived.clear()
                await self._arrived.wait()
        return self.events

    async def wait_until(self, check: Callable[[Listener], bool], timeout: float = 30.0) -> None:
        """Wait until ``check`` holds; fail if the stream ends first."""
        async with asyncio.timeout(timeout):
            while not check(self):
                if self.ended.is_set():
                    raise AssertionError(f"stream ended; events so far: {self.events[-3:]}")
                self._arrived.clear()
                await self._arrived.wait()

    async def wait_started(self, timeout: float = 30.0) -> None:
        """Wait until the stream told its position (a fresh subscription is live from there)."""
        await self.wait_until(lambda s: s.last_id is not None, timeout)

    def data(self) -> list[str]:
        return [e.data for e in self.events]

    def ids(self) -> list[int]:
        return [int(e.last_event_id) for e in self.events]


async def post(
    url: str,
    topic: str,
    body: bytes,
    event: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Response:
    """Publish through the gateway, as ``POST /events/{topic}``."""
    params = {"event": event} if event is not None else {}
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"{url}/events/{topic}", content=body, params=params, headers=headers
        )


async def metric(http: httpx.AsyncClient, name: str) -> float:
    """One value of the gateway's ``/metrics`` (``http`` is bound to the gateway's URL)."""
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} is not in /metrics")
