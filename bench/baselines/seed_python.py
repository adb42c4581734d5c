"""The seed design in plain Python, as a benchmark baseline (not part of the gateway).

Starlette with sse-starlette, one aio-pika consumer on a queue bound to the
exchange, and an ``asyncio.Queue`` per client: every message is put on the
queues of its id's clients. Run with uvicorn; settings come from the
environment: ``AMQP_URL`` and ``EXCHANGE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import aio_pika
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@localhost:5672/")
EXCHANGE = os.environ.get("EXCHANGE", "events")

clients: dict[str, set[asyncio.Queue[str]]] = {}


async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    queues = clients.get(message.routing_key or "")
    if not queues:
        return
    data = message.body.decode()
    for queue in queues:
        queue.put_nowait(data)


async def events(request: Request) -> Response:
    topic = request.path_params["id"]
    queue: asyncio.Queue[str] = asyncio.Queue()
    clients.setdefault(topic, set()).add(queue)

    async def stream() -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                yield {"data": await queue.get()}
        finally:
            waiting = clients.get(topic)
            if waiting is not None:
                waiting.discard(queue)
                if not waiting:
                    del clients[topic]

    return EventSourceResponse(stream())


async def readyz(request: Request) -> Response:
    return JSONResponse({"ready": True})


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    connection = await aio_pika.connect(AMQP_URL)
    channel = await connection.channel()
    exchange = await channel.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, durable=True)
    queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
    await queue.bind(exchange, "#")
    await queue.consume(on_message, no_ack=True)
    try:
        yield
    finally:
        await connection.close()


app = Starlette(routes=[Route("/events/{id}", events), Route("/readyz", readyz)], lifespan=lifespan)
