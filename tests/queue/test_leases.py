"""Leases over HTTP, on the memory broker and on the real RabbitMQ: take, settle, give back.

Every row of the settle status table, extend, the lease cap, a nack's delay,
expiry, dead letters and their redrive, and a body that is not UTF-8.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.gateways import serve_in_loop, settings_for
from tests.support.queues import (
    TaskReader,
    dead_letters,
    declare_classic,
    delete_queues,
    enqueue,
    fresh_queue_name,
    queue_gateway,
    receive,
    settle,
    task_stream,
)
from tests.support.rabbitmq import Names

pytestmark = pytest.mark.slow


@pytest.fixture
async def http(broker_kind: str, names: Names, queue: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client of a gateway serving ``queue`` (deliveries limited to 3)."""
    async with (
        queue_gateway(broker_kind, names, queue, queue_delivery_limit=3) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=60) as client,
    ):
        yield client


async def test_a_task_goes_to_one_worker_and_is_acknowledged_once(
    http: httpx.AsyncClient, queue: str
) -> None:
    task_id = await enqueue(http, queue, b'{"to": "ann"}', type="email")
    [task] = await receive(http, queue, wait=20)
    assert task["id"] == task_id
    assert (task["type"], task["data"], task["encoding"]) == ("email", '{"to": "ann"}', "utf-8")
    assert (task["deliveries"], task["redelivered"]) == (1, False)
    assert task["expires"].endswith("Z")
    assert await receive(http, queue) == []  # leased: no one else gets it

    acked = await settle(http, queue, "ack", task["lease"])
    assert acked.status_code == 200
    assert acked.json() == {"results": {task["lease"]: "ok"}}
    again = await settle(http, queue, "ack", task["lease"])
    assert again.status_code == 409
    assert again.headers["content-type"] == "application/problem+json"


async def test_several_leases_answer_one_result_each(http: httpx.AsyncClient, queue: str) -> None:
    for n in range(3):
        await enqueue(http, queue, b"%d" % n)
    tasks = await receive(http, queue, max=3, wait=20)
    while len(tasks) < 3:
        tasks += await receive(http, queue, max=3 - len(tasks), wait=20)
    first, second, third = (t["lease"] for t in tasks)
    assert (await settle(http, queue, "ack", first)).status_code == 200

    answer = await settle(http, queue, "ack", first, second)
    assert answer.status_code == 200
    assert answer.json() == {"results": {first: "lost", second: "ok"}}

    # one lease that is not ours: 400, and nothing of the request is settled
    altered = third[:-2] + ("AA" if not third.endswith("AA") else "BB")
    refused = await settle(http, queue, "ack", third, altered)
    assert refused.status_code == 400
    assert "lease" in refused.json()["detail"]
    assert (await settle(http, queue, "ack", third)).status_code == 200


async def test_a_nack_gives_the_task_back_counted(http: httpx.AsyncClient, queue: str) -> None:
    await enqueue(http, queue, b"again")
    [task] = await receive(http, queue, wait=20)
    assert (await settle(http, queue, "nack", task["lease"])).status_code == 200
    [back] = await receive(http, queue, wait=20)
    assert back["id"] == task["id"]
    assert (back["deliveries"], back["redelivered"]) == (2, True)
    assert back["lease"] != task["lease"]
    assert (await settle(http, queue, "ack", task["lease"])).status_code == 409  # the older lease
    assert (await settle(http, queue, "ack", back["lease"])).status_code == 200


async def test_a_nack_with_a_delay_keeps_the_task_that_long(
    http: httpx.AsyncClient, queue: str
) -> None:
    await enqueue(http, queue, b"later")
    [task] = await receive(http, queue, wait=20)
    assert (await settle(http, queue, "nack", task["lease"], delay=1.5)).status_code == 200
    assert await receive(http, queue) == []  # held for the delay
    assert (await settle(http, queue, "ack", task["lease"])).status_code == 409  # given back
    [back] = await receive(http, queue, wait=20)
    assert (back["id"], back["deliveries"]) == (task["id"], 2)


async def test_an_expired_lease_is_lost_and_its_task_comes_again(
    http: httpx.AsyncClient, queue: str
) -> None:
    await enqueue(http, queue, b"slow")
    [task] = await receive(http, queue, wait=20, lease=1)
    [back] = await receive(http, queue, wait=20)
    assert (back["id"], back["deliveries"], back["redelivered"]) == (task["id"], 2, True)
    assert (await settle(http, queue, "ack", task["lease"])).status_code == 409
    metrics = (await http.get("/metrics")).text
    assert f'hopcast_queue_lease_expiries_total{{queue="{queue}"}} 1.0' in metrics


async def test_extend_pushes_the_expiry_up_to_the_cap(
    broker_kind: str, names: Names, queue: str
) -> None:
    async with (
        queue_gateway(broker_kind, names, queue, lease=1, max_lease=3) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=60) as http,
    ):
        await enqueue(http, queue, b"long")
        [task] = await receive(http, queue, wait=20)
        extended = await settle(http, queue, "extend", task["lease"], seconds=600)
        assert extended.status_code == 200
        expires = extended.json()["expires"][task["lease"]]
        assert task["expires"] <= expires
        # past the cap the task goes back, extended or not
        [back] = await receive(http, queue, wait=20, lease=3)
        assert (back["id"], back["deliveries"]) == (task["id"], 2)
        assert (await settle(http, queue, "extend", task["lease"], seconds=5)).status_code == 409
        assert (await settle(http, queue, "ack", back["lease"])).status_code == 200


async def test_rejected_and_poison_tasks_are_dead_letters_until_redriven(
    http: httpx.AsyncClient, queue: str
) -> None:
    rejected = await enqueue(http, queue, b"bad")
    [task] = await receive(http, queue, wait=20)
    assert (await settle(http, queue, "reject", task["lease"])).status_code == 200

    poison = await enqueue(http, queue, b"poison")
    for delivery in range(1, 5):  # the limit is 3: the fourth give-back kills it
        [task] = await receive(http, queue, wait=20)
        assert (task["id"], task["deliveries"]) == (poison, delivery)
        await settle(http, queue, "nack", task["lease"])
    dead = await dead_letters(http, queue, 2)
    assert [(d["id"], d["reason"]) for d in dead] == [
        (rejected, "rejected"),
        (poison, "delivery_limit"),
    ]
    assert dead[1]["data"] == "poison"
    assert await dead_letters(http, queue, 2) == dead  # listing takes nothing and keeps the order

    redriven = await http.post(f"/queues/{queue}/dead/redrive", json={"ids": [poison]})
    assert redriven.json() == {"redriven": 1}
    [back] = await receive(http, queue, wait=20)
    assert (back["id"], back["deliveries"], back["data"]) == (poison, 1, "poison")
    assert [d["id"] for d in (await http.get(f"/queues/{queue}/dead")).json()["dead"]] == [rejected]
    assert (await http.post(f"/queues/{queue}/dead/redrive")).json() == {"redriven": 1}
    assert (await http.get(f"/queues/{queue}/dead")).json() == {"dead": []}


async def test_a_body_that_is_not_utf8_travels_as_base64(
    http: httpx.AsyncClient, queue: str
) -> None:
    body = bytes(range(256))
    await enqueue(http, queue, body)
    async with task_stream(http, queue) as stream:
        task = await stream.next()
    assert task["encoding"] == "base64"
    assert base64.b64decode(task["data"]) == body


async def test_a_stream_that_drops_gives_its_tasks_back_at_once(
    http: httpx.AsyncClient, queue: str
) -> None:
    ids = {await enqueue(http, queue, b"%d" % n) for n in range(3)}
    async with task_stream(http, queue, prefetch=3, lease=600) as stream:
        held = [await stream.next() for _ in range(3)]
    assert {t["id"] for t in held} == ids
    back = await receive(http, queue, max=3, wait=20)
    while len(back) < 3:
        back += await receive(http, queue, max=3, wait=20)
    assert {t["id"] for t in back} == ids
    assert all(t["redelivered"] and t["deliveries"] == 2 for t in back)
    for lease in (t["lease"] for t in held):
        assert (await settle(http, queue, "ack", lease)).status_code == 409


async def test_a_full_queue_refuses_with_503(broker_kind: str, names: Names, queue: str) -> None:
    """A quorum queue's limit is soft (RabbitMQ takes the message that reaches it, then
    refuses): enqueue until refused, and every task accepted is there."""
    async with (
        queue_gateway(broker_kind, names, queue, queue_max_length=1) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=60) as http,
    ):
        answers = [await http.post(f"/queues/{queue}", content=b"%d" % n) for n in range(4)]
        statuses = [a.status_code for a in answers]
        assert statuses[0] == 202
        assert 503 in statuses, statuses
        refused = answers[statuses.index(503)]
        assert refused.headers["retry-after"]
        assert refused.headers["content-type"] == "application/problem+json"
        accepted = {a.json()["id"] for a in answers if a.status_code == 202}
        taken = await receive(http, queue, max=5, wait=1)
        assert {t["id"] for t in taken} == accepted


@pytest.mark.parametrize("server", ["native", "uvicorn"])
async def test_a_task_stream_ends_at_shutdown_and_gives_its_tasks_back(server: str) -> None:
    """On the gateway's own listener and mounted in an ASGI server alike."""
    settings = settings_for("memory", queue=("mail",))
    async with (
        serve_in_loop(settings, server=server) as gateway,
        httpx.AsyncClient(base_url=gateway.url, timeout=60) as http,
    ):
        task_id = await enqueue(http, "mail", b"x")
        async with http.stream("GET", "/queues/mail", params={"lease": 600}) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            reader = TaskReader(response)
            assert (await reader.next())["id"] == task_id
            gateway.app.state.queues.begin_shutdown()
            assert (await reader.rest()).startswith(b"retry: ")
        [back] = await receive(http, "mail")
        assert (back["id"], back["redelivered"]) == (task_id, True)


@pytest.mark.usefixtures("rabbitmq")
async def test_a_queue_that_exists_with_other_arguments_is_used_as_it_is(
    names: Names, caplog: pytest.LogCaptureFixture
) -> None:
    queue = fresh_queue_name()
    try:
        await declare_classic(f"hopcast.q.{queue}")
        async with (
            queue_gateway("amqp", names, queue) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=60) as http,
        ):
            assert f"queue 'hopcast.q.{queue}' exists with other arguments" in caplog.text
            task_id = await enqueue(http, queue, b"x")
            [task] = await receive(http, queue, wait=20)
            assert task["id"] == task_id
            assert (await settle(http, queue, "ack", task["lease"])).status_code == 200
    finally:
        await delete_queues([queue])
