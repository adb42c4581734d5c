"""A request as the listener reads it, what the app answers, and that answer in HTTP/1.1 bytes.

A `ParsedRequest` holds the URL, headers and body that httptools hands over,
within the size limits, and gives the request's ASGI scope. The app's own checks
admit an event stream (`admit_stream`); from there `hopcast._http.server` writes the
stream itself, `stream_head` first. Every other request (publish, health,
metrics, errors) runs through the Starlette app with its whole body at once
(`call_app`) and gets one HTTP/1.1 message back (`encode_response`: the app's
responses are small, so each is one write).

>>> encode_response(204, [], b"", keep_alive=False)
b'HTTP/1.1 204 No Content\\r\\ncontent-length: 0\\r\\nconnection: close\\r\\n\\r\\n'
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from http import HTTPStatus
from urllib.parse import unquote

import httptools
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Scope

from hopcast._core.errors import HopcastError
from hopcast._http.problems import error_response
from hopcast._http.routes import Admitted, open_subscription
from hopcast._http.streaming import SSE_HEADERS

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    + b"".join(name + b": " + value + b"\r\n" for name, value in SSE_HEADERS)
    + b"connection: close\r\n"
)
"""An event stream's response head, as the app's `EventStreamResponse` sends it."""


class ParsedRequest:
    """One request's URL, headers and body as they arrive, held to the gateway's size limits."""

    __slots__ = ("body", "body_over", "body_seen", "head_bytes", "headers", "too_large", "url")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_bytes = 0
        self.too_large: int | None = None  # status to answer once the head is in: 414, 431
        self.body = bytearray()
        self.body_over = False
        self.body_seen = 0

    def add_url(self, url: bytes, limit: int) -> None:
        self.url += url
        if len(self.url) > limit:
            self.too_large = self.too_large or 414
            self.url = self.url[: limit + 1]

    def add_header(self, name: bytes, value: bytes, limit: int) -> None:
        self.head_bytes += len(name) + len(value) + 4
        if self.head_bytes > limit:
            self.too_large = self.too_large or 431
            return
        self.headers.append((name.lower(), value))

    def add_body(self, body: bytes, limit: int) -> bool:
        """Keep the body while it fits ``limit``; False once the client sent far more than that."""
        self.body_seen += len(body)
        if self.body_over:
            return self.body_seen <= limit * 4 + 1_048_576
        if len(self.body) + len(body) > limit:
            self.body_over = True
            self.body = bytearray()
            return True
        self.body += body
        return True

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    def announces_more_than(self, limit: int) -> bool:
        """Whether the ``content-length`` header promises a body of more than ``limit`` bytes."""
        length = self.header(b"content-length")
        return length is not None and length.isdigit() and int(length) > limit

    def scope(
        self, app: ASGIApp, method: bytes, http_version: str, transport: asyncio.Transport | None
    ) -> Scope:
        """The request's ASGI scope; an unparsable URL gets a path that no route matches."""
        try:
            parsed = httptools.parse_url(self.url)
            raw_path = parsed.path or b"/"
            query = parsed.query or b""
        except httptools.HttpParserInvalidURLError:
            raw_path, query = b"/\x00invalid", b""
        path = unquote(raw_path.decode("latin-1"))
        peer = transport.get_extra_info("peername") if transport is not None else None
        local = transport.get_extra_info("sockname") if transport is not None else None
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": http_version,
            "method": method.decode("ascii", "replace"),
            "scheme": "http",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": self.headers,
            "client": (peer[0], peer[1]) if isinstance(peer, tuple) else None,
            "server": (local[0], local[1]) if isinstance(local, tuple) else None,
            "app": app,
            "hopcast.fragment": b"#" in self.url,  # a raw client sent a '#' (see params.patterns)
        }
        if path.startswith("/events/"):
            scope["path_params"] = {"topic": path[len("/events/") :]}
        else:
            scope["path_params"] = {}
        return scope


async def admit_stream(scope: Scope) -> Admitted | Response:
    """The app's answer to an event stream request: the subscription it opened, or why not."""
    request = Request(scope)
    try:
        return open_subscription(request)
    except (HopcastError, HTTPException) as exc:
        return await error_response(request, exc)


def stream_head(headers: list[tuple[bytes, bytes]], cors_origins: Sequence[str]) -> bytes:
    """An event stream's response head, with CORS headers when the ``origin`` is allowed."""
    origin: bytes | None = next((v for k, v in headers if k == b"origin"), None)
    if not cors_origins or origin is None or origin.decode("latin-1") not in cors_origins:
        return STREAM_HEAD + b"\r\n"
    cors = (
        b"access-control-allow-origin: " + origin + b"\r\n"
        b"access-control-allow-credentials: true\r\n"
        b"vary: Origin\r\n"
    )
    return STREAM_HEAD + cors + b"\r\n"


async def call_app(
    app: ASGIApp, scope: Scope, body: bytes, disconnected: asyncio.Future[None]
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """Run one request through ``app``; its response's status, headers and joined body."""
    sent_body = False
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await disconnected
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, headers, b"".join(chunks)


async def stream_app(
    app: ASGIApp,
    scope: Scope,
    write: Callable[[bytes], None],
    disconnected: asyncio.Future[None],
) -> None:
    """Run one request whose answer streams (a task stream): its head and each part are
    written as they come, and the connection closes after it (no length, no keep-alive)."""

    async def receive() -> Message:
        if not sent_body:
            sent_body.append(True)
            return {"type": "http.request", "body": b"", "more_body": False}
        await disconnected
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            write(encode_head(message["status"], list(message.get("headers", []))))
        elif message["type"] == "http.response.body":
            write(message.get("body", b""))

    sent_body: list[bool] = []
    await app(scope, receive, send)


def encode_head(status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The head of a response that ends when the connection closes.

    >>> encode_head(200, [(b"content-type", b"text/event-stream")])
    b'HTTP/1.1 200 OK\\r\\ncontent-type: text/event-stream\\r\\nconnection: close\\r\\n\\r\\n'
    """
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
    lines += [name + b": " + value + b"\r\n" for name, value in headers]
    return b"".join(lines) + b"connection: close\r\n\r\n"


def encode_response(
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    keep_alive: bool,
    *,
    head: bool = False,
) -> bytes:
    """A whole HTTP/1.1 response, its ``content-length`` set from ``body``.

    ``head``: the answer to a HEAD request: the headers as a GET would get them
    (``content-length`` as the app gave it, if it did), and no body.
    """
    try:
        reason = HTTPStatus(status).phrase.encode()
    except ValueError:
        reason = b""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    has_length = head
    for name, value in headers:
        if name.lower() == b"content-length" and not head:
            has_length = True
            lines.append(b"content-length: %d\r\n" % len(body))
        else:
            lines.append(name + b": " + value + b"\r\n")
    if not has_length:
        lines.append(b"content-length: %d\r\n" % len(body))
    lines.append(b"connection: keep-alive\r\n" if keep_alive else b"connection: close\r\n")
    return b"".join(lines) + b"\r\n" + (b"" if head else body)


__all__ = [
    "ParsedRequest",
    "admit_stream",
    "call_app",
    "encode_head",
    "encode_response",
    "stream_app",
    "stream_head",
]
