"""Rights on work queues: the ``enqueue`` and ``consume`` claims, and leases kept to their
principal (403 for one lease of another's, ``forbidden`` among several)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from hopcast._core.errors import Forbidden, Unauthorized
from hopcast._rights.principals import Principal
from hopcast._rights.tokens import Authorizer, AuthSettings
from tests.support.gateways import serve_in_loop, settings_for

SECRET = "a work queue secret of more than 32 bytes"


def bearer(sub: str, enqueue: list[str], consume: list[str]) -> dict[str, str]:
    claims = {
        "sub": sub,
        "exp": int(time.time()) + 3600,
        "hopcast": {"enqueue": enqueue, "consume": consume},
    }
    return {"Authorization": "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")}


ANN = bearer("ann", ["mail.*"], ["mail.*"])
BOB = bearer("bob", [], ["mail.#"])
EVE = bearer("eve", ["other"], ["other"])


def test_claims_grant_queues_by_pattern() -> None:
    principal = Principal.from_claims({"hopcast": {"enqueue": ["mail.*"], "consume": ["#"]}})
    assert principal.may_use_queue("enqueue", "mail.out")
    assert not principal.may_use_queue("enqueue", "mail.out.x")
    assert principal.may_use_queue("consume", "anything.at.all")
    auth = Authorizer.from_settings(AuthSettings(mode="jwt", secret=SECRET))
    with pytest.raises(Unauthorized):
        auth.authorize_queue(None, "consume", "mail.out")
    with pytest.raises(Forbidden):
        auth.authorize_queue(EVE["Authorization"][7:], "consume", "mail.out")


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    settings = settings_for(
        "memory", queue=("mail.out",), auth="jwt", jwt_secret=SECRET, public=("#",)
    )
    async with serve_in_loop(settings) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        yield client


async def test_enqueue_and_consume_need_their_claims(http: httpx.AsyncClient) -> None:
    assert (await http.post("/queues/mail.out", content=b"x")).status_code == 401  # public: events
    assert (await http.post("/queues/mail.out", content=b"x", headers=BOB)).status_code == 403
    assert (await http.post("/queues/mail.out", content=b"x", headers=ANN)).status_code == 202
    assert (await http.post("/queues/mail.out/receive", headers=EVE)).status_code == 403
    assert (await http.get("/queues/mail.out/dead", headers=EVE)).status_code == 403
    assert (await http.get("/queues/mail.out/dead", headers=BOB)).status_code == 200
    assert (await http.post("/queues/mail.out/dead/redrive", headers=BOB)).status_code == 403
    assert (await http.post("/queues/mail.out/dead/redrive", headers=ANN)).status_code == 200


async def test_a_lease_is_settled_only_by_its_principal(http: httpx.AsyncClient) -> None:
    for body in (b"1", b"2"):
        await http.post("/queues/mail.out", content=body, headers=ANN)
    leases = []
    for who in (ANN, BOB):
        answer = await http.post("/queues/mail.out/receive", params={"wait": 5}, headers=who)
        leases.append(answer.json()["tasks"][0]["lease"])
    anns, bobs = leases

    one = await http.post("/queues/mail.out/ack", json={"leases": [bobs]}, headers=ANN)
    assert one.status_code == 403
    assert one.headers["content-type"] == "application/problem+json"
    both = await http.post("/queues/mail.out/ack", json={"leases": [anns, bobs]}, headers=ANN)
    assert both.json() == {"results": {anns: "ok", bobs: "forbidden"}}
    mine = await http.post("/queues/mail.out/ack", json={"leases": [bobs]}, headers=BOB)
    assert mine.status_code == 200
