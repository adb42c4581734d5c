"""Settlement from anywhere, on the real RabbitMQ: a lease settles through any process.

Two gateways with one ``--lease-secret`` answer every row of the status table
for each other's leases; a gateway of ``--workers 2`` settles tasks whichever
worker took them; a lease of an owner killed is lost (409) and its task comes
again; a lease signed with another secret is a 400.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import jwt
import pytest

from hopcast._queue.leases import LeaseRef, LeaseSigner
from hopcast._queue.routing import control_queue
from tests.queue.test_metrics import figures
from tests.support.gateways import Gateway, serve_in_loop, settings_for
from tests.support.processes import ChildGateway, child_gateway
from tests.support.queues import (
    declare_classic,
    delete_queues,
    enqueue,
    fresh_queue_name,
    lease_instance,
    queue_gateway,
    receive,
    settle,
)
from tests.support.rabbitmq import Names, delete, rabbitmq_stopped
from tests.support.waits import wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]

LEASE_SECRET = "a lease secret shared by the gateways of one test"
JWT_SECRET = "a jwt secret of the routing tests, 32 bytes or more"


@pytest.fixture
async def queue() -> AsyncIterator[str]:
    """A work queue of this test's own on RabbitMQ (only there: nothing to route in memory)."""
    name = fresh_queue_name()
    yield name
    await delete_queues([name])


def bearer(sub: str) -> dict[str, str]:
    claims = {
        "sub": sub,
        "exp": int(time.time()) + 3600,
        "hopcast": {"enqueue": ["#"], "consume": ["#"]},
    }
    return {"Authorization": "Bearer " + jwt.encode(claims, JWT_SECRET, algorithm="HS256")}


@contextlib.asynccontextmanager
async def two_gateways(names: Names, queue: str) -> AsyncIterator[tuple[Gateway, Gateway]]:
    settings: dict[str, Any] = {
        "lease_secret": LEASE_SECRET,
        "auth": "jwt",
        "jwt_secret": JWT_SECRET,
    }
    async with (
        queue_gateway("amqp", names, queue, **settings) as a,
        queue_gateway("amqp", names, queue, **settings) as b,
    ):
        yield a, b


async def test_every_row_of_the_status_table_through_another_instance(
    names: Names, queue: str
) -> None:
    ann, bob = bearer("ann"), bearer("bob")
    async with (
        two_gateways(names, queue) as (a, b),
        httpx.AsyncClient(base_url=a.url, headers=ann, timeout=60) as on_a,
        httpx.AsyncClient(base_url=b.url, headers=ann, timeout=60) as on_b,
        httpx.AsyncClient(base_url=b.url, headers=bob, timeout=60) as bob_on_b,
    ):
        ids = [await enqueue(on_a, queue, b"%d" % i) for i in range(6)]
        tasks = await receive(on_a, queue, max=6, wait=20)
        while len(tasks) < 6:
            tasks += await receive(on_a, queue, max=6 - len(tasks), wait=20)
        assert sorted(t["id"] for t in tasks) == sorted(ids)
        leases = [t["lease"] for t in tasks]
        assert {lease_instance(lease) for lease in leases} == {a.app.state.queues.signer.instance}

        acked = await settle(on_b, queue, "ack", leases[0])
        assert (acked.status_code, acked.json()) == (200, {"results": {leases[0]: "ok"}})
        again = await settle(on_b, queue, "ack", leases[0])
        assert again.status_code == 409, again.text

        others = await settle(bob_on_b, queue, "ack", leases[1])
        assert others.status_code == 403, others.text
        head, signature = leases[1].split(".")
        altered = head + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
        bad = await settle(on_b, queue, "ack", altered, leases[2])
        assert bad.status_code == 400, bad.text

        extended = await settle(on_b, queue, "extend", leases[1], seconds=60)
        assert extended.status_code == 200, extended.text
        assert extended.json()["results"] == {leases[1]: "ok"}
        assert extended.json()["expires"][leases[1]].endswith("Z")

        nacked = await settle(on_b, queue, "nack", leases[2])
        assert nacked.json() == {"results": {leases[2]: "ok"}}
        [back] = await receive(on_b, queue, wait=20)
        assert (back["id"], back["redelivered"]) == (tasks[2]["id"], True)
        assert lease_instance(back["lease"]) == b.app.state.queues.signer.instance

        rejected = await settle(on_b, queue, "reject", leases[3])
        assert rejected.json() == {"results": {leases[3]: "ok"}}
        dead = (await on_a.get(f"/queues/{queue}/dead", params={"max": 10})).json()["dead"]
        assert [d["id"] for d in dead] == [tasks[3]["id"]]

        # one request: leases of B (here) and of A (routed), one of them lost, one another's
        mixed = [back["lease"], leases[4], leases[0], leases[5]]
        answer = await settle(on_a, queue, "ack", back["lease"], leases[1])
        assert answer.json() == {"results": {back["lease"]: "ok", leases[1]: "ok"}}
        answer = await settle(bob_on_b, queue, "ack", *mixed[1:])
        assert answer.status_code == 200
        assert answer.json()["results"] == {
            leases[4]: "forbidden",
            leases[0]: "lost",
            leases[5]: "forbidden",
        }
        answer = await settle(on_b, queue, "ack", *mixed)
        assert list(answer.json()["results"].items()) == [
            (back["lease"], "lost"),
            (leases[4], "ok"),
            (leases[0], "lost"),
            (leases[5], "ok"),
        ]
        assert await receive(on_b, queue) == []
        assert b.app.state.queues.get(queue).stats.settlements_routed >= 10
        metrics = (await on_b.get("/metrics")).text
        assert f'hopcast_queue_settlements_routed_total{{queue="{queue}"}}' in metrics


async def test_a_lease_signed_with_another_secret_is_refused(names: Names, queue: str) -> None:
    async with (
        queue_gateway("amqp", names, queue, lease_secret=LEASE_SECRET) as a,
        queue_gateway("amqp", names, queue, lease_secret=LEASE_SECRET[::-1]) as c,
        httpx.AsyncClient(base_url=a.url, timeout=60) as on_a,
        httpx.AsyncClient(base_url=c.url, timeout=60) as on_c,
    ):
        await enqueue(on_c, queue, b"x")
        [task] = await receive(on_c, queue, wait=20)
        refused = await settle(on_a, queue, "ack", task["lease"])
        assert refused.status_code == 400, refused.text
        assert (await settle(on_c, queue, "ack", task["lease"])).status_code == 200


async def test_memory_is_one_process_a_lease_of_another_is_lost(queue: str) -> None:
    async with (
        serve_in_loop(settings_for("memory", queue=queue, lease_secret=LEASE_SECRET)) as a,
        serve_in_loop(settings_for("memory", queue=queue, lease_secret=LEASE_SECRET)) as b,
        httpx.AsyncClient(base_url=a.url, timeout=60) as on_a,
        httpx.AsyncClient(base_url=b.url, timeout=60) as on_b,
    ):
        await enqueue(on_a, queue, b"x")
        [task] = await receive(on_a, queue)
        lost = await settle(on_b, queue, "ack", task["lease"])
        assert lost.status_code == 409, lost.text
        assert (await settle(on_a, queue, "ack", task["lease"])).status_code == 200


async def test_an_owner_that_does_not_answer_is_a_503_and_nothing_is_claimed(
    names: Names, queue: str
) -> None:
    # a control queue no process consumes: the request is routed, and no answer comes
    silent = os.urandom(8)
    await declare_classic(control_queue(silent))
    signer = LeaseSigner(LEASE_SECRET.encode())
    token = signer.sign(queue, LeaseRef(silent, channel=1, tag=1, generation=1))
    try:
        async with (
            queue_gateway("amqp", names, queue, lease_secret=LEASE_SECRET) as b,
            httpx.AsyncClient(base_url=b.url, timeout=60) as on_b,
        ):
            await enqueue(on_b, queue, b"x")
            [task] = await receive(on_b, queue, wait=20)
            answer = await settle(on_b, queue, "ack", task["lease"], token)
            assert answer.status_code == 503, answer.text
            assert answer.headers["retry-after"].isdigit()
            assert answer.headers["content-type"] == "application/problem+json"
            # nothing of the request was settled: its own lease is still held
            held = await settle(on_b, queue, "ack", task["lease"])
            assert held.json() == {"results": {task["lease"]: "ok"}}
    finally:
        await delete([control_queue(silent)])


def _gateway_env(names: Names, queue: str) -> dict[str, str]:
    return {**names.env(), "HOPCAST_QUEUE": queue, "HOPCAST_LOG_LEVEL": "info"}


async def _fresh_call(url: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request on a connection of its own (so that either worker may take it)."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        return await client.post(path, **kwargs)


async def test_workers_settle_the_leases_of_each_other(names: Names, queue: str) -> None:
    with child_gateway(_gateway_env(names, queue), "--workers", "2") as gw:
        await wait_ready(gw.url)
        async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
            ids = {await enqueue(http, queue, b"%d" % i) for i in range(40)}
        tasks: list[dict[str, Any]] = []
        while len(tasks) < len(ids):
            answer = await _fresh_call(gw.url, f"/queues/{queue}/receive", params={"wait": 20})
            assert answer.status_code == 200, answer.text
            tasks += answer.json()["tasks"]
        assert {t["id"] for t in tasks} == ids
        assert len({lease_instance(t["lease"]) for t in tasks}) == 2  # both workers took some
        # any worker's scrape answers for both: the leases held by each, summed
        await _scraped(gw.url, queue, hopcast_queue_enqueued_total=40, hopcast_queue_leased=40)

        head, signature = tasks[0]["lease"].split(".")
        altered = head + "." + ("A" if signature[0] != "A" else "B") + signature[1:]
        bad = await _fresh_call(gw.url, f"/queues/{queue}/ack", json={"leases": [altered]})
        assert bad.status_code == 400, bad.text
        for task in tasks:  # through whichever worker takes the connection: about half routed
            acked = await _fresh_call(
                gw.url, f"/queues/{queue}/ack", json={"leases": [task["lease"]]}
            )
            assert acked.json() == {"results": {task["lease"]: "ok"}}, gw.log_tail()
        for task in tasks:
            again = await _fresh_call(
                gw.url, f"/queues/{queue}/ack", json={"leases": [task["lease"]]}
            )
            assert again.status_code == 409, again.text
        leases = [t["lease"] for t in tasks]
        many = await _fresh_call(gw.url, f"/queues/{queue}/ack", json={"leases": leases})
        assert many.json() == {"results": dict.fromkeys(leases, "lost")}
        left = await _fresh_call(gw.url, f"/queues/{queue}/receive")
        assert left.json() == {"tasks": []}
        got = await _scraped(
            gw.url, queue, hopcast_queue_leased=0, **{"hopcast_queue_settled_total:ack": 40}
        )
        assert 0 < got["hopcast_queue_settlements_routed_total"] < 40 * 3  # 3 rounds of acks


async def _scraped(url: str, queue: str, **expected: float) -> dict[str, float]:
    """``queue``'s figures from scrapes over fresh connections, once a scrape shows
    ``expected`` (a worker's report may be a quarter of a second old)."""
    got: dict[str, float] = {}
    try:
        async with asyncio.timeout(60):
            while any(got.get(name) != value for name, value in expected.items()):
                async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                    got = figures((await client.get("/metrics")).text, queue)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"the scrapes never showed {expected}: {got}") from None
    return got


async def test_the_leases_of_an_instance_killed_are_lost_and_come_again(
    names: Names, queue: str
) -> None:
    env = {**_gateway_env(names, queue), "HOPCAST_LEASE_SECRET": LEASE_SECRET}
    with child_gateway(env, label="a") as a, child_gateway(env, label="b") as b:
        await wait_ready(a.url)
        await wait_ready(b.url)
        async with (
            httpx.AsyncClient(base_url=a.url, timeout=60) as on_a,
            httpx.AsyncClient(base_url=b.url, timeout=60) as on_b,
        ):
            ids = {await enqueue(on_a, queue, b"%d" % i) for i in range(3)}
            held = await receive(on_a, queue, max=3, wait=20)
            while len(held) < 3:
                held += await receive(on_a, queue, max=3 - len(held), wait=20)
            through_b = await settle(on_b, queue, "extend", held[0]["lease"], seconds=60)
            assert through_b.json()["results"] == {held[0]["lease"]: "ok"}
            _kill(a)
            again: list[dict[str, Any]] = []
            while len(again) < 3:
                again += await receive(on_b, queue, max=3, wait=20)
            assert {t["id"] for t in again} == ids
            assert all(t["redelivered"] for t in again)
            for task in held:
                lost = await settle(on_b, queue, "ack", task["lease"])
                assert lost.status_code == 409, lost.text
            done = await settle(on_b, queue, "ack", *(t["lease"] for t in again))
            assert set(done.json()["results"].values()) == {"ok"}


def _kill(gateway: ChildGateway) -> None:
    gateway.proc.kill()
    gateway.proc.wait(30)


@pytest.mark.broker_restart
async def test_after_a_rabbitmq_restart_a_new_lease_settles_through_another_instance(
    names: Names, queue: str
) -> None:
    """Each process's control queue (exclusive: gone with the restart) is declared again
    before it grants a lease, so the first lease after the restart already routes."""
    shared = {"lease_secret": LEASE_SECRET, "amqp_heartbeat": 2}
    async with (
        queue_gateway("amqp", names, queue, **shared) as a,
        queue_gateway("amqp", names, queue, **shared) as b,
        httpx.AsyncClient(base_url=a.url, timeout=60) as on_a,
        httpx.AsyncClient(base_url=b.url, timeout=60) as on_b,
    ):
        async with rabbitmq_stopped():
            pass
        ids: set[str] = set()
        while len(ids) < 3:  # 503 until the gateway is connected again
            answer = await on_a.post(f"/queues/{queue}", content=b"%d" % len(ids))
            if answer.status_code == 202:
                ids.add(answer.json()["id"])
            else:
                assert answer.status_code == 503, answer.text
                await asyncio.sleep(0.1)
        held: list[dict[str, Any]] = []
        while len(held) < 3:
            answer = await on_a.post(f"/queues/{queue}/receive", params={"max": 3, "wait": 1})
            assert answer.status_code in (200, 503), answer.text
            held += answer.json()["tasks"] if answer.status_code == 200 else []
        first = held[0]
        extended = await settle(on_b, queue, "extend", first["lease"], seconds=60)
        assert extended.json()["results"] == {first["lease"]: "ok"}, extended.text
        done = await settle(on_b, queue, "ack", *(t["lease"] for t in held))
        assert done.json()["results"] == dict.fromkeys((t["lease"] for t in held), "ok")
        assert {t["id"] for t in held} == ids
