"""Hostile input against a live gateway: schemathesis, garbage on every input, abusive clients.

- A schemathesis run checks every answer against the gateway's own ``/openapi.json``.
- Garbage (bytes, control characters, overlong values, bad percent-encoding) on every
  input gets a 4xx problem with a reason, never a 5xx, and publishes nothing.
- Slow-header clients, clients that never read and thousands of connects do not
  starve a normal subscriber, and the gateway's memory stays flat across rounds.

Subscriptions that pass validation would stream forever; each gateway here runs
with ``max_connections=1`` and one held stream, so every further valid
subscription gets the finite "come back later" answer (200, ``retry:``, end).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from hopcast.broker.memory import MemoryBroker
from hopcast.config import Settings
from hopcast.openapi import document
from tests.support import (
    ChildGateway,
    Gateway,
    Listener,
    child_gateway,
    serve_in_loop,
    settings_for,
    wait_ready,
)

SECRET = "hostile-input-secret-" * 2
PROBLEM = "application/problem+json"
ORIGIN = "https://app.example"
IO_TIMEOUT = 30.0
"""Generous: these tests check that the gateway answers, never how fast."""


def token(subscribe: list[str], publish: list[str], exp: float | None = None) -> str:
    claims = {
        "sub": "mallory",
        "exp": int(exp if exp is not None else time.time() + 3600),
        "hopcast": {"subscribe": subscribe, "publish": publish},
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def jwt_settings(**overrides: Any) -> Settings:
    return settings_for(
        "memory", auth="jwt", jwt_secret=SECRET, public=("news.#",), max_connections=1, **overrides
    )


async def published(broker: MemoryBroker) -> int:
    """How many events the broker holds: offsets grow from 0 and nothing is trimmed here."""
    tail = await broker.tail()
    return 0 if tail is None else tail + 1


@contextlib.asynccontextmanager
async def full_gateway(settings: Settings, *, server: str = "native") -> AsyncIterator[Gateway]:
    """A gateway at its one-stream limit: valid subscriptions get 200, ``retry:`` and the end."""
    assert settings.max_connections == 1
    async with (
        serve_in_loop(settings, MemoryBroker(), server=server) as gw,
        Listener(f"{gw.url}/events/news.held") as held,
    ):
        await held.wait_until(lambda s: b"retry:" in s.raw, IO_TIMEOUT)
        assert held.status == 200
        yield gw
        assert not held.ended.is_set(), "the held stream was dropped"


def broker_of(gw: Gateway) -> MemoryBroker:
    broker = gw.hub.broker
    assert isinstance(broker, MemoryBroker)
    return broker


# The OpenAPI document and schemathesis


def rejects_invalid_input(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """``negative_data_rejection``, minus the one place the contract makes input irrelevant.

    A non-blank ``Last-Event-ID`` header wins over ``?lastEventId`` and ``?since``
    (design §3), so a malformed query value next to it is ignored, by design.
    """
    header = next((v for k, v in (case.headers or {}).items() if k.lower() == "last-event-id"), "")
    if str(header).strip() and "lastEventId" in (case.query or {}):
        return None
    return negative_data_rejection(ctx, response, case)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    rejects_invalid_input,
]


def fuzz(url: str, credentials: Sequence[Mapping[str, str]], examples: int) -> Counter[str]:
    """Run schemathesis (positive and negative cases) against ``url``; count answers by status.

    Blocking (schemathesis and Hypothesis are synchronous): run it in a thread
    while the gateway serves in the test's event loop.
    """
    config = schemathesis.Config.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": ["4XX"]}}}
    )
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config, timeout=30)
    operations = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            raise result.err()  # the document has an operation schemathesis cannot read
        operations.append(result.ok())
    strategy = st.one_of(
        [op.as_strategy(generation_mode=mode) for op in operations for mode in GenerationMode]
    )
    seen: Counter[str] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.generate, Phase.shrink],
    )
    @given(case=strategy, headers=st.sampled_from(list(credentials)))
    def run(case: schemathesis.Case[Any], headers: Mapping[str, str]) -> None:
        response = case.call(base_url=url, headers=dict(headers), timeout=IO_TIMEOUT)
        seen[f"{case.method} {case.operation.path} {response.status_code}"] += 1
        case.validate_response(response, checks=CHECKS, headers=dict(headers))

    run()
    return seen


def statuses(seen: Counter[str]) -> set[int]:
    return {int(key.rsplit(" ", 1)[1]) for key in seen}


async def test_openapi_document_is_served_and_names_every_route() -> None:
    settings = settings_for("memory")
    async with serve_in_loop(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        served = await http.get("/openapi.json")
        assert served.status_code == 200
        assert served.headers["content-type"] == "application/json"
        doc = served.json()
        assert doc == json.loads(json.dumps(document(settings)))
    assert set(doc["paths"]) == {
        "/events",
        "/events/{topic}",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if (path, status) == ("/readyz", "503"):
                    continue  # not a refusal: the readiness report, as JSON
                if int(status) >= 400:  # every refusal is documented as a problem
                    name = response["$ref"].rsplit("/", 1)[1]
                    content = doc["components"]["responses"][name]["content"]
                    assert list(content) == [PROBLEM], (path, method, status)
    assert "securitySchemes" not in doc["components"]
    assert "options" not in doc["paths"]["/events"]
    assert "options" in document(settings_for("memory", cors_origin=(ORIGIN,)))["paths"]["/events"]
    with_auth = document(jwt_settings())
    assert {"bearer", "cookie"} <= set(with_auth["components"]["securitySchemes"])
    assert "401" in with_auth["paths"]["/events/{topic}"]["post"]["responses"]


@pytest.mark.slow
@pytest.mark.parametrize("server", ["native", "uvicorn"])
async def test_schemathesis_finds_no_error_and_no_answer_outside_the_schema(server: str) -> None:
    credentials: list[dict[str, str]] = [{}]
    if server == "native":  # what `hopcast serve` runs
        settings, examples = settings_for("memory", max_connections=1), 500
    else:  # the app mounted in an ASGI server, here with CORS (its preflight is documented too)
        settings = settings_for("memory", max_connections=1, cors_origin=(ORIGIN,))
        credentials.append({"Origin": ORIGIN})
        examples = 300
    async with full_gateway(settings, server=server) as gw:
        seen = await asyncio.to_thread(fuzz, gw.url, credentials, examples)
        assert await published(broker_of(gw)) == sum(
            n for key, n in seen.items() if key.endswith(" 202")
        ), "a refused publish reached the broker"
    # The run got past validation too: come-back-later streams and confirmed publishes.
    assert {200, 202, 400} <= statuses(seen), seen


@pytest.mark.slow
async def test_schemathesis_with_jwt_auth() -> None:
    everything = token(["#"], ["#"])
    credentials = [
        {},
        {"Authorization": f"Bearer {everything}"},
        {"Cookie": f"hopcast_token={everything}"},
        {"Authorization": f"Bearer {token(['orders.*'], ['orders.*'])}"},
        {"Authorization": f"Bearer {token(['#'], ['#'], exp=time.time() - 60)}"},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Bearer"},
    ]
    async with full_gateway(jwt_settings()) as gw:
        seen = await asyncio.to_thread(fuzz, gw.url, credentials, 500)
        assert await published(broker_of(gw)) == sum(
            n for key, n in seen.items() if key.endswith(" 202")
        ), "a refused publish reached the broker"
    assert {200, 202, 400, 401, 403} <= statuses(seen), seen


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
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
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


def port_of(gw: Gateway) -> int:
    return int(gw.url.rsplit(":", 1)[1])


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
    (get(b"/events/a", b"Authorization: Bearer"), 400, "Bearer"),
    (get(b"/events/a", b"Authorization: Bearer a b"), 400, "Bearer"),
    (post_raw(b"/events/a", b"\xff\xfe\x00"), 400, "UTF-8"),
    (post_raw(b"/events/a", b"ok \xed\xa0\x80"), 400, "UTF-8"),  # a UTF-8-encoded surrogate
    (post_raw(b"/events/a.*", b"x"), 400, "'*'"),
    (post_raw(b"/events/%23", b"x"), 400, "'#'"),
    (post_raw(b"/events/a%0Db", b"x"), 400, "topic"),
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
        port = port_of(gw)
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
        assert await published(broker_of(gw)) == 0


@pytest.mark.parametrize("server", ["native", "uvicorn"])
async def test_a_body_cut_short_is_refused_quietly(
    server: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that announces more body than it sends and leaves: no 5xx, no traceback."""
    async with full_gateway(settings_for("memory", max_connections=1), server=server) as gw:
        port = port_of(gw)
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
        assert await published(broker_of(gw)) == 0
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not crashes, [r.getMessage() for r in crashes]


# Random garbage: Hypothesis writes the requests, byte by byte.

LINE_SAFE = st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
ANY_TEXT = st.text(st.characters(codec="utf-8"), max_size=300)


def encoded(text: str) -> bytes:
    return quote(text, safe="").encode()


@st.composite
def garbage_requests(draw: st.DrawFn) -> bytes:
    """One request with garbage in one place (or several): path, query, headers or body."""
    where = draw(
        st.sampled_from(
            ["path", "raw-path", "query-topic", "resume", "header", "auth", "publish", "event"]
        )
    )
    text = draw(ANY_TEXT)
    raw = draw(LINE_SAFE)
    if where == "path":
        return get(b"/events/" + encoded(text))
    if where == "raw-path":
        return get(b"/events/" + raw.replace(b" ", b""))
    if where == "query-topic":
        topics = draw(st.lists(ANY_TEXT, max_size=40))
        return get(b"/events?" + b"&".join(b"topic=" + encoded(t) for t in topics))
    if where == "resume":
        name = draw(st.sampled_from([b"lastEventId", b"since", b"access_token"]))
        value = raw if draw(st.booleans()) else encoded(text)
        return get(b"/events/a?" + name + b"=" + value.replace(b" ", b"+"))
    if where == "header":
        name = draw(st.sampled_from([b"Last-Event-ID", b"Cookie", b"X-Forwarded-For"]))
        return get(b"/events/a", name + b": " + raw)
    if where == "auth":
        return get(b"/events/a", b"Authorization: " + raw)
    if where == "publish":
        topic = draw(st.one_of(st.just("a"), ANY_TEXT))
        return post_raw(b"/events/" + encoded(topic), raw)
    return post_raw(b"/events/a?event=" + encoded(text), raw)


def hammer(port: int, examples: int) -> Counter[int]:
    """Send Hypothesis' garbage; every answer is a problem, a come-back-later or a 202."""
    seen: Counter[int] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(garbage_requests())
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
async def test_random_garbage_never_gets_a_5xx() -> None:
    settings = settings_for("memory", max_connections=1, publish_rate=100_000.0)
    async with full_gateway(settings) as gw:
        seen = await asyncio.to_thread(hammer, port_of(gw), 1000)
        assert await published(broker_of(gw)) == seen[202]
    assert seen[400] > 0 and seen[202] > 0, seen


# Abusive clients against a gateway in its own process, memory measured from outside


def rss(pid: int) -> int:
    """Resident memory of process ``pid``, bytes (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@dataclass
class Tally:
    """What the abusive clients saw; the gateway's answers to them are not checked."""

    slow_closed_by_server: int = 0
    connects: int = 0
    refused_connects: int = 0


async def slowloris(port: int, until: float, tally: Tally, interval: float = 0.05) -> None:
    """Dribble a request head one byte at a time until ``until``, then leave."""
    head = b"GET /events/flood HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"s" * 100_000
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        tally.refused_connects += 1
        return
    try:
        for i in range(len(head)):
            if time.monotonic() >= until:
                break
            writer.write(head[i : i + 1])
            await writer.drain()
            await asyncio.sleep(interval)
    except OSError:
        tally.slow_closed_by_server += 1
    finally:
        writer.transport.abort()


def never_reader(port: int) -> socket.socket:
    """Subscribe to the flooded topic with a tiny receive window, and never read a byte."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /events/flood HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock


async def churn(port: int, count: int, tally: Tally, parallel: int = 50) -> None:
    """``count`` connects and disconnects of four kinds, ``parallel`` at a time."""
    kinds = [
        b"",  # connect and leave
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",  # ask and leave without reading
        b"GET /events/flood HTTP/1.1\r\nHost: x\r\n\r\n",  # subscribe and leave
        b"POST /events/flood HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\nhal",  # half a body
    ]
    gate = asyncio.Semaphore(parallel)

    async def one(i: int) -> None:
        async with gate:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                tally.refused_connects += 1
                return
            tally.connects += 1
            with contextlib.suppress(OSError):
                if kinds[i % 4]:
                    writer.write(kinds[i % 4])
                    await writer.drain()
                    await asyncio.sleep(0.01)
            if i % 3:
                writer.close()
            else:
                writer.transport.abort()  # a reset instead of a FIN

    await asyncio.gather(*(one(i) for i in range(count)))


async def flood(
    http: httpx.AsyncClient, sent: list[str], label: str, count: int, size: int
) -> None:
    """Publish ``count`` events of ``size`` bytes on the flooded topic, in order."""
    for i in range(count):
        data = f"{label}-{i} ".ljust(size, "x")
        answer = await http.post("/events/flood", content=data)
        assert answer.status_code == 202, answer.text
        sent.append(data)


async def abuse_round(
    child: ChildGateway, subscriber: Listener, sent: list[str], *, round_no: int, tally: Tally
) -> None:
    """One round: slow heads, clients that never read, churn and events, all at once."""
    until = time.monotonic() + 2.5
    readers = [await asyncio.to_thread(never_reader, child.port) for _ in range(2)]
    slow = [asyncio.create_task(slowloris(child.port, until, tally)) for _ in range(150)]
    async with httpx.AsyncClient(base_url=child.url, timeout=IO_TIMEOUT) as http:
        await asyncio.gather(
            flood(http, sent, f"r{round_no}", 150, 1000), churn(child.port, 600, tally)
        )
        # Meanwhile everyone else is served: health answers, the subscriber has every event.
        assert (await http.get("/healthz")).status_code == 200
    await subscriber.wait_until(lambda s: len(s.events) >= len(sent), IO_TIMEOUT)
    assert subscriber.data() == sent
    await asyncio.gather(*slow)
    for sock in readers:
        sock.close()


async def slow_disconnects(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    return float(re.findall(r"^hopcast_slow_disconnects_total (\S+)$", text, re.M)[0])


@pytest.mark.slow
async def test_abusive_clients_do_not_starve_others_or_grow_memory() -> None:
    env = {
        "HOPCAST_BROKER": "memory://",
        "HOPCAST_QUEUE_SIZE": "64",
        "HOPCAST_PUBLISH_RATE": "1000000",
        "HOPCAST_PUBLISH_BURST": "1000000",
        "HOPCAST_LOG_LEVEL": "error",
    }
    rounds = 6
    with child_gateway(env) as child:
        await wait_ready(child.url)
        tally = Tally()
        sent: list[str] = []
        memory = []
        async with Listener(f"{child.url}/events/flood") as subscriber:
            await subscriber.wait_until(lambda s: b"retry:" in s.raw, IO_TIMEOUT)
            for round_no in range(rounds):
                await abuse_round(child, subscriber, sent, round_no=round_no, tally=tally)
                await asyncio.sleep(0.5)  # let the server notice the departures
                memory.append(rss(child.proc.pid))
            # The rounds stay below what kernel buffers absorb (about 4 MB per socket here:
            # a memory:// broker keeps every event, so flooding that much each round would
            # measure retention). Once, push clients that never read past it: they are cut.
            readers = [await asyncio.to_thread(never_reader, child.port) for _ in range(2)]
            async with httpx.AsyncClient(base_url=child.url, timeout=IO_TIMEOUT) as http:
                await flood(http, sent, "big", 400, 16_000)
                async with asyncio.timeout(IO_TIMEOUT):
                    while await slow_disconnects(http) < len(readers):
                        await asyncio.sleep(0.1)
                await subscriber.wait_until(lambda s: len(s.events) >= len(sent), IO_TIMEOUT)
                assert subscriber.data() == sent
                assert (await http.get("/healthz")).status_code == 200
            for sock in readers:
                sock.close()
            assert not subscriber.ended.is_set()
        assert child.proc.poll() is None, "the gateway died"
    growth = max(memory[1:]) - memory[0]
    report = ", ".join(f"{m / 2**20:.1f}" for m in memory)
    print(f"gateway RSS after each round (MiB): {report}; {tally}")
    assert growth < 20 * 2**20, f"memory grew {growth / 2**20:.1f} MiB after warm-up: {report}"
    assert tally.connects == rounds * 600


async def endless_head(port: int, megabytes: int) -> bytes:
    """Send ``megabytes`` of header lines as fast as the server takes them; return its answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    line = b"X-Pad: " + b"p" * 1015 + b"\r\n"
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(megabytes * 1024):
            writer.write(line)
            await writer.drain()
        writer.write(b"\r\n")
        await writer.drain()
        return await reader.read(100)
    except OSError:  # answered and closed before the end: as good
        return await reader.read(100)
    finally:
        writer.transport.abort()


@pytest.mark.slow
async def test_slow_silent_and_endless_request_heads_hold_nothing_for_long() -> None:
    """Clients that never finish a request head are cut off; one that never stops is bounded."""
    with child_gateway({"HOPCAST_BROKER": "memory://"}) as child:
        await wait_ready(child.url)
        silent = [await asyncio.open_connection("127.0.0.1", child.port) for _ in range(30)]
        for _, writer in silent[:20]:  # half a head; the other ten send nothing at all
            writer.write(b"GET /events/a HTTP/1.1\r\nHost")
        tally = Tally()
        dribbling = [
            asyncio.create_task(slowloris(child.port, time.monotonic() + 60, tally, interval=0.5))
            for _ in range(20)
        ]
        before = rss(child.proc.pid)
        answers = await asyncio.gather(*(endless_head(child.port, 16) for _ in range(4)))
        grown = rss(child.proc.pid) - before
        assert all(a.startswith(b"HTTP/1.1 431 ") for a in answers), answers
        assert grown < 20 * 2**20, f"64 MB of headers grew the gateway by {grown / 2**20:.0f} MiB"
        async with asyncio.timeout(60):  # generous: the point is that it happens at all
            for reader, _ in silent:
                await reader.read()  # an answer or none, then the server closes
            await asyncio.gather(*dribbling)
        assert tally.slow_closed_by_server == 20
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{child.url}/healthz")).status_code == 200
        for _, writer in silent:
            writer.close()
