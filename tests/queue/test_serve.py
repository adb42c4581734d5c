"""``hopcast serve --queue`` stopped by SIGTERM: its task streams end with a ``retry:`` hint,
and the tasks they held come again from the next gateway."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.support.processes import child_gateway
from tests.support.queues import (
    delete_queues,
    enqueue,
    fresh_queue_name,
    queue_gateway,
    receive,
    task_stream,
)
from tests.support.rabbitmq import AMQP_URL, Names
from tests.support.waits import wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]


async def test_sigterm_ends_task_streams_and_their_tasks_come_again(names: Names) -> None:
    queue = fresh_queue_name()
    env = {"HOPCAST_BROKER": AMQP_URL, "HOPCAST_QUEUE": queue, **names.env()}
    try:
        with child_gateway(env, "--shutdown-grace", "60") as child:
            await wait_ready(child.url)
            async with httpx.AsyncClient(base_url=child.url, timeout=60) as http:
                task_id = await enqueue(http, queue, b"held")
                async with task_stream(http, queue, lease=600) as stream:
                    assert (await stream.next())["id"] == task_id
                    stopping = asyncio.to_thread(child.stop)
                    rest, code = await asyncio.gather(stream.rest(), stopping)
            assert rest.startswith(b"retry: "), rest
            assert code == 0, child.log_tail()
        async with (
            queue_gateway("amqp", names, queue) as gateway,
            httpx.AsyncClient(base_url=gateway.url, timeout=60) as http,
        ):
            [again] = await receive(http, queue, wait=20)
            assert (again["id"], again["redelivered"], again["deliveries"]) == (task_id, True, 2)
    finally:
        await delete_queues([queue])
