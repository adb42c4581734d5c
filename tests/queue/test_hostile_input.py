"""Hostile input on every queue route: a clear 4xx problem, and nothing settled.

A task is leased before each case and must still be leased (its ack answered
200) after all of them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.gateways import serve_in_loop, settings_for

PROBLEM = "application/problem+json"
Q = "mail"
MAX_BODY = 4096


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for("memory", queue=(Q,), max_event_bytes=MAX_BODY)
    async with serve_in_loop(settings) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        yield client


BAD_NAMES = ["a..b", "x.dead", "a" * 64 + "." + "b" * 64 + "." + "c" * 64 + "." + "d" * 10, "a*"]
ROUTES = ["", "/receive", "/ack", "/nack", "/reject", "/extend", "/dead", "/dead/redrive"]


def _method(route: str) -> str:
    return "GET" if route in ("", "/dead") else "POST"


async def _problem(answer: httpx.Response, status: int) -> str:
    assert answer.status_code == status, (answer.request.url, answer.text)
    assert answer.headers["content-type"] == PROBLEM
    detail: str = answer.json()["detail"]
    assert detail
    return detail


async def test_bad_and_unknown_queue_names(http: httpx.AsyncClient) -> None:
    for route in ROUTES:
        for name in BAD_NAMES:
            answer = await http.request(_method(route), f"/queues/{name}{route}")
            await _problem(answer, 400)
        answer = await http.request(_method(route), f"/queues/elsewhere{route}")
        assert "elsewhere" in await _problem(answer, 404)


QUERIES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "", {"prefetch": "0"}),
    ("GET", "", {"prefetch": "101"}),
    ("GET", "", {"prefetch": "one"}),
    ("GET", "", {"lease": "0"}),
    ("GET", "", {"lease": "-5"}),
    ("GET", "", {"lease": "1e9"}),
    ("GET", "", {"lease": "nan"}),
    ("GET", "", {"prefetch": ["1", "2"]}),
    ("POST", "/receive", {"max": "0"}),
    ("POST", "/receive", {"max": "101"}),
    ("POST", "/receive", {"max": "1.5"}),
    ("POST", "/receive", {"wait": "-1"}),
    ("POST", "/receive", {"wait": "21"}),
    ("POST", "/receive", {"wait": "inf"}),
    ("POST", "/receive", {"lease": "x"}),
    ("GET", "/dead", {"max": "0"}),
    ("GET", "/dead", {"max": "1001"}),
    ("POST", "", {"type": ""}),
    ("POST", "", {"type": "é" * 200}),
    ("POST", "", {"type": "a\tb"}),
]


async def test_bad_query_values(http: httpx.AsyncClient) -> None:
    for method, route, params in QUERIES:
        answer = await http.request(method, f"/queues/{Q}{route}", params=params)
        await _problem(answer, 400)


def _bodies(lease: str) -> list[tuple[str, bytes]]:
    """Bodies that are no settle request (each with a good lease among them where it can)."""

    def j(value: object) -> bytes:
        return json.dumps(value).encode()

    many = [lease] + ["x" * 66] * 100
    return [
        ("/ack", b"not json"),
        ("/ack", b"[1, 2]"),
        ("/ack", j({})),
        ("/ack", j({"leases": []})),
        ("/ack", j({"leases": lease})),
        ("/ack", j({"leases": [lease, 7]})),
        ("/ack", j({"leases": [lease], "more": 1})),
        ("/ack", j({"leases": many})),
        ("/ack", j({"leases": [lease, lease[:-1]]})),
        ("/ack", j({"leases": [lease, "é" * 66]})),
        ("/ack", b"[" * 100_000),
        ("/nack", j({"leases": [lease], "delay": -1})),
        ("/nack", j({"leases": [lease], "delay": "5"})),
        ("/extend", j({"leases": [lease]})),
        ("/extend", j({"leases": [lease], "seconds": 0})),
        ("/extend", j({"leases": [lease], "seconds": 1e400})),
        ("/reject", j({"leases": [None]})),
        ("/dead/redrive", j({"ids": "all"})),
        ("/dead/redrive", j({"ids": ["x" * 256]})),
        ("/dead/redrive", j({"ids": None})),
        ("/dead/redrive", b"{"),
    ]


async def test_bad_settle_bodies_settle_nothing(http: httpx.AsyncClient) -> None:
    assert (await http.post(f"/queues/{Q}", content=b"held")).status_code == 202
    [task] = (await http.post(f"/queues/{Q}/receive", params={"lease": 600})).json()["tasks"]
    for route, body in _bodies(task["lease"]):
        answer = await http.post(f"/queues/{Q}{route}", content=body)
        await _problem(answer, 413 if len(body) > MAX_BODY else 400)
    ack = await http.post(f"/queues/{Q}/ack", json={"leases": [task["lease"]]})
    assert ack.status_code == 200, ack.text


async def test_methods_a_route_does_not_take(http: httpx.AsyncClient) -> None:
    for route in ("/ack", "/receive", "/dead/redrive"):
        answer = await http.get(f"/queues/{Q}{route}")
        await _problem(answer, 405)
    await _problem(await http.delete(f"/queues/{Q}"), 405)
