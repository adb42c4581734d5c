"""Hostile requests, byte for byte: garbage on every input gets a 4xx problem, never a 5xx.

- Bytes, control characters, overlong values and bad percent-encoding in the path,
  query, headers and body get a 4xx problem with a reason, and publish nothing.
- Requests that break HTTP itself get a 400; a body cut short is refused quietly.
- Hypothesis writes random garbage requests; none gets a 5xx.

Valid subscriptions get the finite "come back later" answer (see ``hostile_kit``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.hostile_kit import (
    IO_TIMEOUT,
    PROBLEM,
    full_gateway,
    published,
)
from tests.support.gateways import memory_broker, settings_for
from tests.support.net import exchange

# Garbage on every input path, byte for byte


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def problem(self) -> dict[str, Any]:
        assert self.headers.get("content-type") == PROBLEM, self
        detail: dict[str, Any] = json.loads(self.body)
        assert detail["status"] == self.status
        assert detail["title"] and isinstance(detail["detail"], str) and detail["detail"]
        return detail


def raw_request(port: int, request: bytes, timeout: float = IO_TIMEOUT) -> Answer:
    """Send bytes as they are (no client library would), read the answer until the server closes.

    Every request here says ``Connection: close`` or is malformed, so the server ends it.
    """
    data = exchange(port, request, timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    assert lines[0].startswith("HTTP/1.1 "), data[:200]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Answer(int(lines[0].split()[1]), headers, body)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2 :]
    return out


def http_request(
    method: str, target: bytes, headers: Sequence[bytes] = (), body: bytes | None = None
) -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    if body is not None:
        lines.append(b"Content-Length: %d" % len(body))
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n" + (body or b"")


def get(target: bytes, *headers: bytes) -> bytes:
    return http_request("GET", target, headers)


def post_raw(target: bytes, body: bytes, *headers: bytes) -> bytes:
    return http_request("POST", target, headers, body)


# (request, status, what the detail must mention); every one is refused by the app.
REFUSED = [
    (get(b"/events/%ZZ"), 400, "%ZZ"),
    (get(b"/events/%FF%FE"), 400, "pattern"),
    (get(b"/events/a%00b"), 400, "pattern"),
    (get(b"/events/a%1Bb.%7F"), 400, "pattern"),
    (get(b"/events/%E2%80%A8"), 400, "pattern"),
    (get(b"/events/caf%C3%A9"), 400, "pattern"),
    (get(b"/events/" + b"a" * 65), 400, "64"),
    (get(b"/events/" + b"a." * 127 + b"aa"), 400, "255"),
    (get(b"/events/" + b"a." * 16 + b"a"), 400, "words"),
    (get(b"/events/a..b"), 400, "empty word"),
    (get(b"/events/%2E"), 400, "empty word"),
    (get(b"/events/"), 400, "empty"),
    (get(b"/events"), 400, "topic"),
    (get(b"/events?topic="), 400, "empty"),
    (get(b"/events?topic=%ZZ&topic=a"), 400, "%ZZ"),
    (get(b"/events?%%%=&&&topic"), 400, "empty"),
    (get(b"/events?" + b"&".join(b"topic=t%d" % i for i in range(33))), 400, "32"),
    (get(b"/events/a?lastEventId=abc"), 400, "lastEventId"),
    (get(b"/events/a?lastEventId=--5"), 400, "lastEventId"),
    (get(b"/events/a?lastEventId=99999999999999999999"), 400, "lastEventId"),
    (get(b"/events/a?lastEventId=%D9%A3"), 400, "lastEventId"),  # an Arabic-Indic digit
    (get(b"/events/a", b"Last-Event-ID: --5"), 400, "Last-Event-ID"),
    (get(b"/events/a", b"Last-Event-ID: -2"), 400, "Last-Event-ID"),
    (get(b"/events/a", b"Last-Event-ID: 1e3"), 400, "Last-Event-ID"),
    (get(b"/events/a", b"Last-Event-ID: \xff\xfe\x80"), 400, "Last-Event-ID"),
    (get(b"/events/a", b"Last-Event-ID: " + b"9" * 5000), 400, "Last-Event-ID"),
    (get(b"/events/a?since=%00"), 400, "since"),
    (get(b"/events/a?since=yesterday"), 400, "since"),
    (get(b"/events/a?since=2024-13-01"), 400, "since"),
    (get(b"/events/a?since=%FF"), 400, "since"),
    (get(b"/events/a?access_token=x"), 400, "access_token"),
    (get(b"/events/a?access_token=x&access_token=y"), 400, "access_token= once"),
    (get(b"/events/a?lastEventId=1&lastEventId=2"), 400, "lastEventId= once"),
    (get(b"/events/a?since=first&since=first"), 400, "since= once"),
    (get(b"/events/a?lastEventId=1&since=first&lastEventId=1", b"Last-Event-ID: 3"), 400, "once"),
    (post_raw(b"/events/a?event=a&event=b", b"x"), 400, "event= once"),
    (get(b"/events/a", b"Authorization: Bearer"), 400, "Bearer"),
    (get(b"/events/a", b"Authorization: Bearer a b"), 400, "Bearer"),
    (post_raw(b"/events/a", b"\xff\xfe\x00"), 400, "UTF-8"),
    (post_raw(b"/events/a", b"ok \xed\xa0\x80"), 400, "UTF-8"),  # a UTF-8-encoded surrogate
    (post_raw(b"/events/a.*", b"x"), 400, "'*'"),
    (post_raw(b"/events/%23", b"x"), 400, "'#'"),
    (post_raw(b"/events/a%0Db", b"x"), 400, "topic"),
    (post_raw(b"/events/a%0Ab", b"x"), 400, "topic"),  # a routing regex's "." stops at LF
    (get(b"/events/a%0Ab"), 400, "pattern"),
    (get(b"/events/%0A"), 400, "pattern"),
    (get(b"/events/a?topic=a..b"), 400, "pattern"),
    (get(b"/events/a?topic=%FF"), 400, "pattern"),
    (post_raw(b"/events/a?event=hopcast-missed", b"x"), 400, "reserved"),
    (post_raw(b"/events/a?event=", b"x"), 400, "event name"),
    (post_raw(b"/events/a?event=a%0Db", b"x"), 400, "event name"),
    (post_raw(b"/events/a?event=a%00", b"x"), 400, "event name"),
    (post_raw(b"/events/a?event=" + b"e" * 256, b"x"), 400, "event name"),
    (post_raw(b"/events/a", b"x" * 5000), 413, "4096"),
    (get(b"/events/" + b"a" * 5000), 414, "bytes"),
    (get(b"/healthz", b"X-Pad: " + b"p" * 20_000), 431, "bytes"),
    (get(b"/nope"), 404, "/nope"),
    (get(b"/events/a/../../etc/passwd"), 400, "pattern"),
    (http_request("PUT", b"/events/a", body=b"x"), 405, "Method"),
    (http_request("DELETE", b"/healthz"), 405, "Method"),
    (http_request("OPTIONS", b"/events/a"), 405, "Method"),
    (http_request("OPTIONS", b"/events/a%0Ab"), 405, "Method"),
]

# Requests that break HTTP itself: the native listener answers them with a problem;
# uvicorn (the app mounted as plain ASGI) answers 400 text/plain before the app runs.
MALFORMED = [
    b"GET /events/\xff\xfe HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /events/a\x01b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /events?topic=\xff HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /events/a HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 1\x00\r\nConnection: close\r\n\r\n",
    b"GET /events/a HTTP/1.1\r\nHost: x\r\nCookie: \xff=\x00;;;=\r\nConnection: close\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\nConnection: close\r\n\r\n",
    b"POST /events/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
    b"POST /events/a HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST /events/a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
    b"GARBAGE\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)) + b"\r\n\r\n",  # TLS hello
]


@pytest.mark.parametrize("server", ["native", "uvicorn"])
async def test_garbage_gets_a_problem_with_a_reason_and_publishes_nothing(server: str) -> None:
    settings = settings_for("memory", max_connections=1, max_event_bytes=4096, publish_rate=1000.0)
    async with full_gateway(settings, server=server) as gw:
        port = gw.port
        for request, status, reason in REFUSED:
            answer = await asyncio.to_thread(raw_request, port, request)
            assert answer.status == status, (request[:80], answer)
            assert reason.lower() in answer.problem()["detail"].lower(), (request[:80], answer)
        for request in MALFORMED:
            answer = await asyncio.to_thread(raw_request, port, request)
            assert answer.status == 400, (request[:80], answer)
            if server == "native":
                assert answer.problem()["detail"]
        # Still serving, and none of it reached the broker.
        assert (await asyncio.to_thread(raw_request, port, get(b"/healthz"))).status == 200
        assert await published(memory_broker(gw)) == 0


@pytest.mark.parametrize("server", ["native", "uvicorn"])
async def test_a_body_cut_short_is_refused_quietly(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that announces more body than it sends and leaves: no 5xx, no traceback."""
    async with full_gateway(settings_for("memory", max_connections=1), server=server) as gw:
        port = gw.port
        for head in (
            b"POST /events/a HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789",
            b"POST /events/a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nA\r\n01",
        ):
            with caplog.at_level(logging.WARNING):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(head)
                await writer.drain()
                await asyncio.sleep(0.2)
                writer.close()
                await asyncio.sleep(0.3)
        answer = await asyncio.to_thread(raw_request, port, get(b"/healthz"))
        assert answer.status == 200
        assert await published(memory_broker(gw)) == 0
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not crashes, [r.getMessage() for r in crashes]


# Random garbage: Hypothesis writes the requests, byte by byte.

LINE_SAFE = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=300)


def encoded(text: str) -> bytes:
    return quote(text, safe="").encode()


def _resume(name: bytes, value: bytes) -> bytes:
    return get(b"/events/a?" + name + b"=" + value.replace(b" ", b"+"))


GARBAGE_REQUESTS = st.one_of(
    ANY_TEXT.map(lambda text: get(b"/events/" + encoded(text))),  # the path, encoded
    LINE_SAFE.map(lambda raw: get(b"/events/" + raw.replace(b" ", b""))),  # the path, raw
    st.lists(ANY_TEXT, max_size=40).map(
        lambda topics: get(b"/events?" + b"&".join(b"topic=" + encoded(t) for t in topics))
    ),
    st.builds(
        _resume,
        st.sampled_from([b"lastEventId", b"since", b"access_token"]),
        st.one_of(LINE_SAFE, ANY_TEXT.map(encoded)),
    ),
    st.builds(
        lambda name, raw: get(b"/events/a", name + b": " + raw),
        st.sampled_from([b"Last-Event-ID", b"Cookie", b"X-Forwarded-For"]),
        LINE_SAFE,
    ),
    LINE_SAFE.map(lambda raw: get(b"/events/a", b"Authorization: " + raw)),
    st.builds(
        lambda topic, raw: post_raw(b"/events/" + encoded(topic), raw),
        st.one_of(st.just("a"), ANY_TEXT),
        LINE_SAFE,
    ),
    st.builds(
        lambda text, raw: post_raw(b"/events/a?event=" + encoded(text), raw), ANY_TEXT, LINE_SAFE
    ),
)
"""One request with garbage in one place: the path, the query, a header or the body."""


def hammer(port: int, examples: int) -> Counter[int]:
    """Send Hypothesis' garbage; every answer is a problem, a come-back-later or a 202."""
    seen: Counter[int] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(GARBAGE_REQUESTS)
    def send(request: bytes) -> None:
        answer = raw_request(port, request)
        seen[answer.status] += 1
        assert answer.status < 500, (request[:200], answer)
        if answer.status >= 400:
            answer.problem()
        elif answer.status == 200:  # valid after all: told to come back later, and ended
            assert answer.headers["content-type"].startswith("text/event-stream")
            assert answer.body.startswith(b"retry: ")
        else:
            assert answer.status == 202, (request[:200], answer)

    send()
    return seen


@pytest.mark.slow
@pytest.mark.fuzz
async def test_random_garbage_never_gets_a_5xx() -> None:
    settings = settings_for("memory", max_connections=1, publish_rate=100_000.0)
    async with full_gateway(settings) as gw:
        seen = await asyncio.to_thread(hammer, gw.port, 1000)
        assert await published(memory_broker(gw)) == seen[202]
    assert seen[400] > 0 and seen[202] > 0, seen
