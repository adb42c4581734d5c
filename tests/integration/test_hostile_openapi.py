"""Hostile input from the gateway's own contract: schemathesis against ``/openapi.json``.

- The document is served, names every route and documents every refusal as a problem.
- A schemathesis run (positive and negative cases, with and without JWT auth)
  checks every answer against the document, and no refused publish reaches the broker.

Valid subscriptions get the finite "come back later" answer (see ``hostile_kit``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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

from hopcast._core.settings import Settings
from hopcast._http.openapi import document
from tests.integration.hostile_kit import (
    IO_TIMEOUT,
    PROBLEM,
    full_gateway,
    published,
)
from tests.support.gateways import memory_broker, serve_in_loop, settings_for

SECRET = "hostile-input-secret-" * 2
ORIGIN = "https://app.example"


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


def fuzz(
    url: str,
    credentials: Sequence[Mapping[str, str]],
    examples: int,
    paths: Callable[[str, str], bool] = lambda method, path: True,
) -> Counter[str]:
    """Run schemathesis (positive and negative cases) against ``url``; count answers by status.

    ``paths``: which operations (method, path) to run. Blocking (schemathesis and
    Hypothesis are synchronous): run it in a thread while the gateway serves in the
    test's event loop.
    """
    config = schemathesis.Config.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": ["4XX"]}}}
    )
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", config=config, timeout=30)
    operations = []
    for result in schema.get_all_operations():
        if not isinstance(result, Ok):
            raise result.err()  # the document has an operation schemathesis cannot read
        if paths(result.ok().method.upper(), result.ok().path):
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
        "/",  # the live page, on by default with --auth none
        "/page.js",
        "/page.css",
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
    assert "/" not in with_auth["paths"]  # off with --auth jwt unless --page on
    assert "/" in document(jwt_settings(page="on"))["paths"]
    assert {"bearer", "cookie"} <= set(with_auth["components"]["securitySchemes"])
    assert "401" in with_auth["paths"]["/events/{topic}"]["post"]["responses"]


@pytest.mark.slow
@pytest.mark.parametrize("server", ["native", "uvicorn"])
@pytest.mark.fuzz
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
        assert await published(memory_broker(gw)) == sum(
            n for key, n in seen.items() if key.endswith(" 202")
        ), "a refused publish reached the broker"
    # The run got past validation too: come-back-later streams and confirmed publishes.
    assert {200, 202, 400} <= statuses(seen), seen


@pytest.mark.slow
@pytest.mark.fuzz
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
        assert await published(memory_broker(gw)) == sum(
            n for key, n in seen.items() if key.endswith(" 202")
        ), "a refused publish reached the broker"
    assert {200, 202, 400, 401, 403} <= statuses(seen), seen


def queue_token(enqueue: list[str], consume: list[str], sub: str = "mallory") -> str:
    claims = {
        "sub": sub,
        "exp": int(time.time() + 3600),
        "hopcast": {"enqueue": enqueue, "consume": consume},
    }
    return jwt.encode(claims, SECRET, algorithm="HS256")


def queue_operations(method: str, path: str) -> bool:
    """The work queue operations but the task stream (which never ends: tested on its own)."""
    return path.startswith("/queues/") and (method, path) != ("GET", "/queues/{name}")


@pytest.mark.slow
@pytest.mark.fuzz
@pytest.mark.parametrize("auth", ["none", "jwt"])
async def test_schemathesis_over_the_work_queues(auth: str) -> None:
    """Hostile input on every queue route gets a documented 4xx problem and settles nothing;
    a task leased before the run is still leased after it."""
    credentials: list[dict[str, str]] = [{}]
    settings = settings_for("memory", queue=("mail", "jobs.x"))
    if auth == "jwt":
        settings = jwt_settings(queue=("mail", "jobs.x"))
        credentials += [
            {"Authorization": f"Bearer {queue_token(['#'], ['#'])}"},
            {"Authorization": f"Bearer {queue_token(['jobs.*'], [])}"},
            {"Authorization": f"Bearer {queue_token([], ['mail'], sub='eve')}"},
        ]
    owner = {"Authorization": f"Bearer {queue_token(['#'], ['#'], sub='owner')}"}
    async with serve_in_loop(settings) as gw, httpx.AsyncClient(base_url=gw.url) as http:
        assert (await http.post("/queues/mail", content=b"held", headers=owner)).status_code == 202
        held = await http.post("/queues/mail/receive?lease=600", headers=owner)
        [task] = held.json()["tasks"]
        # 600: a few hundred random examples held no enqueue or no unknown queue now and then
        seen = await asyncio.to_thread(fuzz, gw.url, credentials, 600, queue_operations)
        queue = gw.app.state.queues.get("mail")
        settled = queue.stats.settled
        assert settled == {"ack": 0, "nack": 0, "reject": 0}, settled
        still = await http.post("/queues/mail/ack", json={"leases": [task["lease"]]}, headers=owner)
        assert still.status_code == 200, still.text
    assert {200, 202, 400, 404} <= statuses(seen), seen
