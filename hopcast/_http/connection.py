"""One client connection of the gateway's own listener: its requests, its stream, its timeouts.

`hopcast._http.server` accepts the connections and sweeps them every tick
(`HttpConnection.tick`); why an event stream skips the ASGI layer is told there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from typing import Any, Protocol, cast

import httptools
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.types import Scope

from hopcast._core.errors import SubscriptionClosed
from hopcast._core.settings import Settings
from hopcast._core.sse import encode_heartbeat, encode_preamble, encode_retry
from hopcast._http.parsing import (
    ParsedRequest,
    admit_stream,
    call_app,
    encode_response,
    stream_app,
    stream_head,
)
from hopcast._http.problems import problem
from hopcast._http.queues import is_long_poll, is_task_stream
from hopcast._http.routes import Admitted
from hopcast._http.streaming import token_expired_frame
from hopcast._http.writes import Coalescer
from hopcast._hub.subscription import Mode, Subscription

log = logging.getLogger("hopcast.http")  # named by layer: module paths are internal

HEAD_TIMEOUT = 10.0
"""Seconds a client has to send a whole request head (slow-header clients are cut off)."""
BODY_TIMEOUT = 30.0
"""Seconds a client has to send a request body."""
DRAIN_TIMEOUT = 5.0
"""Seconds a refused body is read (and dropped) after its 413, so the client sees the answer."""
KEEPALIVE_TIMEOUT = 30.0
"""Seconds an idle keep-alive connection waits for its next request."""
WRITE_HIGH_WATER = 256 * 1024
"""Bytes buffered for a client before its writes pause (then frames queue, bounded)."""
STALL_TIMEOUT = 30.0
"""Seconds a replay or catch-up waits on a client's full socket before cutting it off
(the live path cuts it off when its queue overflows; mounted, `SEND_TIMEOUT` does this)."""


class Listener(Protocol):
    """What a connection needs of the server that accepted it (`hopcast._http.server`)."""

    app: Starlette
    settings: Settings
    coalescer: Coalescer
    connections: set[HttpConnection]

    def forget(self, conn: HttpConnection) -> None:
        """The connection closed: stop counting it."""


class HttpConnection(asyncio.Protocol):
    """One client connection: parses requests, streams events, or hands a request to the app."""

    def __init__(self, server: Listener) -> None:
        self.server = server
        self.settings = server.settings
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.state = "head"
        self.deadline: float | None = time.monotonic() + HEAD_TIMEOUT
        self.request = ParsedRequest()
        self.head = False
        """The request being answered is a HEAD: its answer goes without a body."""
        self.last_request = False
        """No request is read after the one being answered (it offered a protocol upgrade)."""
        self.sub: Subscription | None = None
        self.paused = False
        self.last_write = 0.0
        self.expires_at: float | None = None
        self.release: Any = None
        self.task: asyncio.Task[None] | None = None
        self.disconnected: asyncio.Future[None] | None = None
        self.writable: asyncio.Event | None = None
        self.pipelined: deque[tuple[ParsedRequest, Scope, bool]] = deque()
        """Requests read along with the one being answered, answered in turn after it."""
        self.held = False
        """Its write waits in the coalescer (`hopcast._http.writes`)."""
        self.counted = -1
        """The coalescer's sample round this connection was last counted active in."""

    # -- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport = self.transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.state in ("stream", "closed"):
            return  # an event stream reads nothing more; what a client sends is dropped
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A whole request that also offers another protocol (h2c, websocket) is answered
            # in HTTP/1.1, as if it had not (RFC 9110 §7.8): Java's HttpClient offers h2c on
            # every http:// request. The parser stops there, so the connection ends after.
            if self._answering():
                self.last_request = True
            else:  # CONNECT, or a head cut short: nothing to answer in HTTP/1.1
                self._answer_and_close(400, "Bad request", "protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            self._answer_and_close(400, "Bad request", f"malformed HTTP request: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = "closed"
        self.server.forget(self)
        if self.disconnected is not None and not self.disconnected.done():
            self.disconnected.set_result(None)
        sub, self.sub = self.sub, None
        if sub is not None:
            sub.close("gone")
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.release is not None:
            release, self.release = self.release, None
            release()
        self.transport = None

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self.writable is not None:
            self.writable.set()
        sub = self.sub
        if sub is not None and sub.pending and sub.mode is Mode.LIVE:
            self.flush(sub)

    # -- httptools callbacks ------------------------------------------------------

    def on_message_begin(self) -> None:
        self.request = ParsedRequest()
        if self.state in ("draining", "closed"):
            return  # read from the same bytes as a refused body: dropped
        if not self._answering():
            self.head = False  # until `_answer` knows the method
            self.state = "head"
            self.deadline = time.monotonic() + HEAD_TIMEOUT

    def on_url(self, url: bytes) -> None:
        self.request.add_url(url, self.settings.max_url_bytes)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.request.add_header(name, value, self.settings.max_header_bytes)

    def on_headers_complete(self) -> None:
        if self._answering() or self.state in ("draining", "closed"):
            return  # its limits are checked when its turn comes, in `_answer`
        self.state = "body"
        self.deadline = time.monotonic() + BODY_TIMEOUT
        request = self.request
        if self._refused_head(request) or self.transport is None:
            return
        if request.announces_more_than(self.settings.max_event_bytes):
            self._refuse_body()
        elif (b"expect", b"100-continue") in request.headers:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def _refuse_body(self) -> None:
        """413 at once from ``Content-Length``, not after the body (which may never come).

        What the client still sends is read and dropped, up to a cap and for
        `DRAIN_TIMEOUT` seconds: closing on unread bytes would reset the
        connection, and a client still sending would see the reset, not the 413.
        """
        if self.transport is None:
            return
        refusal = problem(413, "Content too large", self._too_large_detail())
        head = list(refusal.raw_headers)
        self.transport.write(encode_response(413, head, bytes(refusal.body), keep_alive=False))
        self.request.body_over = True
        self.state = "draining"
        self.deadline = time.monotonic() + DRAIN_TIMEOUT

    def on_body(self, body: bytes) -> None:
        too_much = not self.request.add_body(body, self.settings.max_event_bytes)
        if too_much and self.state == "draining" and self.transport is not None:
            self.state = "closed"
            self.transport.close()
        elif too_much and not self._answering():
            self._answer_and_close(413, "Content too large", self._too_large_detail())

    def on_message_complete(self) -> None:
        if self.state == "draining" and self.transport is not None:
            self.state = "closed"  # the body came whole after its 413: nothing more to read
            self.transport.close()
        if self.state in ("closed", "stream") or self.transport is None:
            return  # nothing after an event stream's request is answered
        self.transport.pause_reading()  # one request at a time; pipelined ones wait
        request = self.request
        scope = request.scope(
            self.server.app,
            self.parser.get_method(),
            self.parser.get_http_version(),
            self.transport,
        )
        job = (request, scope, self.parser.should_keep_alive())
        if self._answering():
            self.pipelined.append(job)  # parsed from the same read as the one being answered
        else:
            self._answer(*job)

    def _answering(self) -> bool:
        """Whether a request is being answered (what is parsed now must wait, or is dropped)."""
        return self.state in ("busy", "stream")

    # -- requests -----------------------------------------------------------------

    def _answer(self, request: ParsedRequest, scope: Scope, keep_alive: bool) -> None:
        self.deadline = None
        self.head = scope["method"] == "HEAD"
        if self._refused_head(request):
            return
        if scope["method"] == "GET" and (
            scope["path"] == "/events" or scope["path"].startswith("/events/")
        ):
            self.state = "stream"
            self.pipelined.clear()
            self.task = asyncio.ensure_future(self._serve_stream(scope, request))
        elif is_task_stream(scope["method"], scope["path"]):
            self.state = "stream"
            self.pipelined.clear()
            self.task = asyncio.ensure_future(self._serve_app_stream(scope))
        elif request.body_over:
            self._answer_and_close(413, "Content too large", self._too_large_detail())
        else:
            self.state = "busy"
            self.task = asyncio.ensure_future(
                self._serve_app(scope, bytes(request.body), keep_alive)
            )

    def _refused_head(self, request: ParsedRequest) -> bool:
        """Answer 414 or 431 (and close) for a request head over its limits."""
        if request.too_large == 414:
            limit = self.settings.max_url_bytes
            self._answer_and_close(414, "URI too long", f"at most {limit} bytes")
        elif request.too_large == 431:
            limit = self.settings.max_header_bytes
            self._answer_and_close(431, "Request header fields too large", f"at most {limit} bytes")
        return request.too_large is not None

    def _too_large_detail(self) -> str:
        return f"the body is larger than {self.settings.max_event_bytes} bytes"

    async def _serve_stream(self, scope: Scope, request: ParsedRequest) -> None:
        admitted = await admit_stream(scope)
        if isinstance(admitted, Response):
            self._write_response(admitted, keep_alive=False)
            return
        self._start_stream(admitted, request)
        with contextlib.suppress(SubscriptionClosed):
            await self._drive(admitted.sub)

    def _start_stream(self, admitted: Admitted, request: ParsedRequest) -> None:
        self.release = admitted.release
        if self.transport is None:  # gone while being admitted
            self.release()
            self.release = None
            admitted.sub.close("gone")
            return
        head = stream_head(request.headers, self.settings.cors_origin)
        self._write(head + encode_preamble(self.settings.retry, None))
        sub = self.sub = admitted.sub
        sub.sink = self
        self.transport.resume_reading()  # to notice the client leaving; what it sends is dropped
        if admitted.expires_at is not None:
            self.expires_at = admitted.expires_at.timestamp()

    async def _drive(self, sub: Subscription) -> None:
        """Place the subscription, and feed a replay or catch-up until it goes live."""
        first_id = await sub.start()
        if first_id is not None:
            self._write(encode_heartbeat(first_id))
        heartbeat = self.settings.heartbeat
        while self.sub is sub:
            chunk = await sub.next_chunk(heartbeat)
            if chunk == b"":
                return  # live: from now on the hub pushes into `flush`
            self._write(chunk if chunk is not None else encode_heartbeat(sub.safe_offset))
            if self.paused:  # replay at the pace the client reads
                self.writable = self.writable or asyncio.Event()
                self.writable.clear()
                try:
                    async with asyncio.timeout(STALL_TIMEOUT):
                        await self.writable.wait()
                except TimeoutError:
                    sub.cut_slow()  # no progress at all: it resumes by itself later
                    return

    async def _serve_app(self, scope: Scope, body: bytes, keep_alive: bool) -> None:
        """Run one request through the Starlette app and write its (small) response."""
        self.disconnected = asyncio.get_running_loop().create_future()
        if self.transport is not None and is_long_poll(scope["method"], scope["path"]):
            # to notice the client leaving (and end the wait); a request it pipelines
            # meanwhile pauses the reading again, as any does
            self.transport.resume_reading()
        try:
            status, headers, content = await call_app(
                self.server.app, scope, body, self.disconnected
            )
        except Exception:
            log.exception("request %s %s failed", scope["method"], scope["path"][:200])
            self._write_response(
                problem(500, "Internal error", "the gateway failed on this request"), False
            )
            return
        self._write_head_and_body(status, headers, content, keep_alive)

    async def _serve_app_stream(self, scope: Scope) -> None:
        """Run a request whose answer streams through the app (a task stream), then close."""
        self.disconnected = asyncio.get_running_loop().create_future()
        if self.transport is not None:
            self.transport.resume_reading()  # to notice the client leaving
        try:
            await stream_app(self.server.app, scope, self._write, self.disconnected)
        except Exception:
            log.exception("stream %s failed", scope["path"][:200])
        finally:
            if self.transport is not None:
                self.state = "closed"
                self.transport.close()

    def _write_response(self, response: Response, keep_alive: bool) -> None:
        self._write_head_and_body(
            response.status_code, list(response.raw_headers), bytes(response.body), keep_alive
        )

    def _write_head_and_body(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool
    ) -> None:
        transport = self.transport
        if transport is None:
            return
        keep_alive = keep_alive and not self.last_request
        transport.write(encode_response(status, headers, body, keep_alive, head=self.head))
        if keep_alive and self.state != "closed":
            self.state = "idle"
            if self.pipelined:
                self._answer(*self.pipelined.popleft())
                return
            self.deadline = time.monotonic() + KEEPALIVE_TIMEOUT
            transport.resume_reading()
        else:
            self.state = "closed"
            transport.close()

    def _answer_and_close(self, status: int, title: str, detail: str) -> None:
        if self.transport is None or self.state == "closed":
            return
        self._write_response(problem(status, title, detail), keep_alive=False)

    # -- the sink the hub pushes into ----------------------------------------------------

    def flush(self, sub: Subscription) -> None:
        """Write what is queued now, unless the socket is full or writes are held.

        While the coalescer holds writes (`hopcast._http.writes`), a connection
        written less than the delay ago waits the delay: its first held event
        waits no longer, and every event that comes meanwhile joins its write.
        """
        transport = self.transport
        if self.paused or self.held or transport is None:
            return
        coalescer = self.server.coalescer
        if self.counted != coalescer.round:
            self.counted = coalescer.round
            coalescer.active += 1
        now = time.monotonic()
        if coalescer.holding and now - self.last_write < coalescer.delay:
            self.held = True
            coalescer.hold(self, now + coalescer.delay, now)
            return
        transport.write(sub.take())
        self.last_write = now

    def write_held(self, now: float) -> None:
        """Its delay is over (`hopcast._http.writes`): write what is queued, if the socket
        takes it."""
        self.held = False
        sub, transport = self.sub, self.transport
        if sub is not None and transport is not None and not self.paused:
            chunk = sub.take()
            if chunk:
                transport.write(chunk)
                self.last_write = now

    def closed(self, sub: Subscription, reason: str) -> None:
        """The hub ended this stream: cut a slow client at once, send others on their way."""
        if self.sub is not sub:
            return
        self.sub = None
        transport = self.transport
        if transport is None:
            return
        self.state = "closed"
        if reason == "slow":
            transport.abort()  # its socket is full: waiting to flush would wait for it
            return
        if reason == "shutdown":
            spread = int(self.settings.retry * random.uniform(1.0, 3.0))
            transport.write(encode_retry(spread))
        transport.close()

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
            self.last_write = time.monotonic()

    # -- housekeeping -------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Heartbeats, token expiry and the head, body and keep-alive timeouts."""
        if self.deadline is not None and now > self.deadline:
            if self.state in ("head", "body", "idle"):
                self.abort()
                return
            if self.state == "draining" and self.transport is not None:
                self.state = "closed"
                self.transport.close()  # not abort: the 413 may still be on its way
                return
        sub = self.sub
        if sub is None or self.state != "stream":
            return
        if self.expires_at is not None and time.time() >= self.expires_at:
            if not sub.pending:
                self._write(token_expired_frame())
            sub.close("token-expired")
            return
        quiet = now - self.last_write >= self.settings.heartbeat
        if quiet and sub.mode is Mode.LIVE and not sub.pending and not self.paused:
            self._write(encode_heartbeat(sub.safe_offset))

    def shutdown(self) -> None:
        """Close an idle keep-alive connection; streams are ended by the hub."""
        if self.state in ("idle", "head") and self.transport is not None:
            self.state = "closed"
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
