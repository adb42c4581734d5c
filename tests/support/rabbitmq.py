"""The real RabbitMQ the tests talk to: reaching it, names of a test's own, publishing, rabbitmqctl.

A test that needs RabbitMQ skips without it on a laptop and fails in CI
(``HOPCAST_REQUIRE_RABBITMQ=1``), where a missing broker is a broken run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiormq
import pika
import pytest
from pamqp import commands as spec

AMQP_URL = os.environ.get("HOPCAST_TEST_AMQP_URL", "amqp://guest:guest@localhost:5672/")
REQUIRE_RABBITMQ = os.environ.get("HOPCAST_REQUIRE_RABBITMQ", "") not in ("", "0") or bool(
    os.environ.get("CI")
)


def rabbitmq_reachable(url: str = AMQP_URL) -> bool:
    async def probe() -> bool:
        try:
            conn = await asyncio.wait_for(aiormq.connect(url), 15)  # a loaded machine is slow
        except (OSError, TimeoutError, aiormq.exceptions.AMQPError):
            return False
        await conn.close()
        return True

    return asyncio.run(probe())


def need_rabbitmq() -> None:
    """Skip without RabbitMQ on a laptop; fail in CI (a missing broker is a broken run)."""
    if rabbitmq_reachable():
        return
    message = f"RabbitMQ is not reachable at {AMQP_URL}"
    if REQUIRE_RABBITMQ:
        pytest.fail(message + " (CI requires it)")
    pytest.skip(message)


def amqp_host_port(url: str = AMQP_URL) -> tuple[str, int]:
    """Where RabbitMQ listens, as a TCP proxy in front of it needs it."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    return ("127.0.0.1" if host == "localhost" else host), parts.port or 5672


@dataclass(frozen=True)
class Names:
    """An exchange and a stream that belong to one test."""

    exchange: str
    stream: str
    used: list[bool]

    @classmethod
    def fresh(cls) -> Names:
        tag = uuid.uuid4().hex[:12]
        return cls(f"hopcast-test.{tag}", f"hopcast-test.{tag}.events", [])

    def env(self) -> dict[str, str]:
        self.used.append(True)
        return {"HOPCAST_EXCHANGE": self.exchange, "HOPCAST_STREAM": self.stream}


async def delete_topology(names: Names, url: str = AMQP_URL) -> None:
    """Delete a test's exchange and stream, waiting for RabbitMQ if a test restarted it."""
    if names.used:
        await delete([names.stream], [names.exchange], url)


async def delete(queues: Sequence[str], exchanges: Sequence[str] = (), url: str = AMQP_URL) -> None:
    """Delete queues and exchanges, waiting for RabbitMQ if a test restarted it."""
    for _ in range(60):
        try:
            conn = await aiormq.connect(url)
        except (OSError, aiormq.exceptions.AMQPError):
            await asyncio.sleep(1)
            continue
        try:
            channel = await conn.channel()
            for queue in queues:
                await channel.queue_delete(queue)
            for exchange in exchanges:
                await channel.exchange_delete(exchange)
        finally:
            await conn.close()
        return


async def amqp_publish(
    names: Names,
    items: Sequence[tuple[str, bytes, str | None]],
    url: str = AMQP_URL,
) -> None:
    """Publish straight to RabbitMQ as any AMQP client would, with confirms."""
    conn = await aiormq.connect(url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        for topic, body, event in items:
            await channel.basic_publish(
                body,
                exchange=names.exchange,
                routing_key=topic,
                properties=spec.Basic.Properties(message_type=event),
                mandatory=True,
            )
    finally:
        await conn.close()


def publish_with_pika(
    names: Names, items: Sequence[tuple[bytes, pika.BasicProperties]], topic: str = "t.x"
) -> None:
    """Publish as another client library would, with its own encoding of properties."""
    conn = pika.BlockingConnection()
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        for body, props in items:
            channel.basic_publish(names.exchange, topic, body, props)
    finally:
        conn.close()


def counted_messages(names: Names) -> int:
    """RabbitMQ's own count of the messages in a test's stream (it lags the writes)."""
    conn = pika.BlockingConnection()
    try:
        declared = conn.channel().queue_declare(names.stream, passive=True)
        return int(declared.method.message_count)
    finally:
        conn.close()


async def until_counted(names: Names) -> None:
    """Wait until RabbitMQ counts messages in the stream (its count lags the writes)."""
    async with asyncio.timeout(60):
        while not await asyncio.to_thread(counted_messages, names):
            await asyncio.sleep(0.2)


CTL = "rabbitmqctl"
"""The machine's own node's tool (on the PATH, it runs as RabbitMQ's user, with its cookie)."""


def rabbitmqctl(
    *args: str,
    node: str | None = None,
    ctl: str = CTL,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
) -> str:
    """``rabbitmqctl -q [-n node] …``; its output, or a RuntimeError with its stderr."""
    command = [ctl, "-q", *(["-n", node] if node else []), *args]
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {proc.stderr.strip()[-800:]}")
    return proc.stdout


def rabbitmqctl_table(
    *args: str,
    node: str | None = None,
    ctl: str = CTL,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> list[list[str]]:
    """The rows of a ``rabbitmqctl list_…`` command, each a list of its columns."""
    out = rabbitmqctl("--no-table-headers", *args, node=node, ctl=ctl, env=env, timeout=timeout)
    return [line.split("\t") for line in out.splitlines() if line.strip()]


@contextlib.asynccontextmanager
async def rabbitmq_stopped() -> AsyncIterator[None]:
    """RabbitMQ stopped (``stop_app``) for the block, and running again after it, come what may."""
    try:
        await asyncio.to_thread(rabbitmqctl, "stop_app")
        yield
    finally:
        await asyncio.to_thread(rabbitmqctl, "start_app")
        await asyncio.to_thread(rabbitmqctl, "await_startup")
