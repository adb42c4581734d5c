"""Limits that keep one client from taking the gateway: connections, publish rate, request size.

>>> admission = Admission(max_total=2, max_per_address=1)
>>> admission.admit("10.0.0.1"), admission.admit("10.0.0.1")
(True, False)
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_TRACKED_KEYS = 100_000
"""Rate-limit buckets kept at once; the least recently used go first."""


class Admission:
    """Counts open streams per process and per client address; refuses past either bound."""

    def __init__(self, *, max_total: int, max_per_address: int) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        self._per_address: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        """Count one more stream for ``address``, or say no (nothing is counted then)."""
        count = self._per_address.get(address, 0)
        if self.total >= self.max_total or count >= self.max_per_address:
            return False
        self.total += 1
        self._per_address[address] = count + 1
        return True

    def release(self, address: str) -> None:
        """Forget one stream of ``address``."""
        self.total -= 1
        count = self._per_address.get(address, 0) - 1
        if count > 0:
            self._per_address[address] = count
        else:
            self._per_address.pop(address, None)


class RateLimiter:
    """A token bucket per key (a token's subject, or a client address).

    >>> limiter = RateLimiter(rate=1.0, burst=1)
    >>> limiter.check("k", now=0.0), limiter.check("k", now=0.0) > 0
    (0.0, True)
    """

    def __init__(self, *, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def check(self, key: str, now: float | None = None) -> float:
        """Take one token for ``key``: 0.0 when allowed, else the seconds until one is due."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > MAX_TRACKED_KEYS:
            self._buckets.popitem(last=False)
        return wait


def parse_networks(cidrs: Sequence[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def client_address(scope: Scope, trusted: Sequence[IPNetwork]) -> str:
    """The client's address: the peer, or behind trusted proxies the last untrusted hop.

    ``X-Forwarded-For`` is read right to left and only while each hop is a
    trusted proxy; otherwise anyone could claim any address.
    """
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if not trusted or not _in(peer, trusted):
        return peer
    forwarded = [
        value.decode("latin-1")
        for name, value in scope.get("headers", [])
        if name == b"x-forwarded-for"
    ]
    hops = [h.strip() for line in forwarded for h in line.split(",") if h.strip()]
    address = peer
    for hop in reversed(hops):
        address = hop
        if not _in(hop, trusted):
            break
    return address


def _in(address: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))


class RequestSizeLimit:
    """Answers 414 / 431 problem details for oversized request targets or headers."""

    def __init__(self, app: ASGIApp, *, max_url_bytes: int, max_header_bytes: int) -> None:
        self.app = app
        self.max_url_bytes = max_url_bytes
        self.max_header_bytes = max_header_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            target = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            headers = sum(len(k) + len(v) + 4 for k, v in scope.get("headers", []))
            if target > self.max_url_bytes:
                await _problem(send, 414, "URI too long", f"at most {self.max_url_bytes} bytes")
                return
            if headers > self.max_header_bytes:
                await _problem(
                    send,
                    431,
                    "Request header fields too large",
                    f"at most {self.max_header_bytes} bytes of headers",
                )
                return
        await self.app(scope, receive, send)


async def _problem(send: Send, status: int, title: str, detail: str) -> None:
    import json

    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()
    headers = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
