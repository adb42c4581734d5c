"""The worker side of the ``queues`` scenario: HTTP workers draining a work queue, and
the plain aio-pika consumer they are compared with.

Each drain runs in a process of its own (spawned), so its CPU is its own and
is reported beside the rate: on two cores the client can be what limits the
figure, and the report says so. The HTTP workers speak HTTP/1.1 by hand over
asyncio streams (keep-alive, no client library), ``workers`` of them in the
process:

- stream: each worker holds ``GET /queues/NAME?prefetch=P`` open and takes the
  tasks as SSE events; pull: each worker asks ``POST /queues/NAME/receive?max=P``.
- single acks: each task is acknowledged by a ``POST /queues/NAME/ack`` of its
  own, answered before the worker takes its next task. Batched: a stream
  worker hands its tasks to one acker shared by the process, which posts
  whatever has come since its last answer (up to 100 leases); a pull worker
  acknowledges each received batch in one request.

The aio-pika consumer is ``workers`` consumers on one connection, a channel each
with ``basic.qos`` prefetch P, one ``basic.ack`` per message.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import multiprocessing.connection
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import uvloop

STREAM = "stream"
PULL = "pull"
AIO_PIKA = "aio-pika"
MAX_BATCH = 100
"""Leases one settle request takes (the gateway's limit)."""
READ_SIZE = 1 << 16
PULL_WAIT = 1
"""Seconds a receive waits for a first task."""
LEASE = 120
"""Seconds each lease asks for: none should expire during a drain."""


@dataclass(frozen=True)
class DrainPlan:
    """Who drains ``expected`` tasks from a queue, and how."""

    how: str
    """`STREAM`, `PULL` or `AIO_PIKA`."""
    expected: int
    prefetch: int
    workers: int
    batched: bool = False
    host: str = "127.0.0.1"
    port: int = 0
    queue: str = ""
    """The gateway's name for the queue (HTTP), or the AMQP queue (aio-pika)."""
    amqp_url: str = ""
    limit: float = 300.0


@dataclass
class Drain:
    """What a drain did: tasks settled, in how long, at what CPU of the client."""

    tasks: int = 0
    seconds: float = 0.0
    client_cpu: float = 0.0
    requests: int = 0
    """HTTP requests sent (receives and settles; a stream's opening counts once)."""
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.tasks / self.seconds if self.seconds > 0 else 0.0


class HttpConnection:
    """One keep-alive HTTP/1.1 connection, a request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    def send(self, method: str, path: str, body: bytes = b"") -> None:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)

    async def head(self) -> tuple[int, bool, int]:
        """The response's status, whether its body is chunked, and its length otherwise."""
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").lower().split("\r\n")
        length, chunked = 0, False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding" and "chunked" in value:
                chunked = True
        return int(lines[0].split()[1]), chunked, length

    async def chunk(self) -> bytes:
        """The next chunk of a chunked body (empty at its end)."""
        size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        data = await self.reader.readexactly(size + 2)
        return data[:-2]

    async def call(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        self.send(method, path, body)
        status, chunked, length = await self.head()
        if not chunked:
            return status, await self.reader.readexactly(length)
        parts = []
        while part := await self.chunk():
            parts.append(part)
        return status, b"".join(parts)

    def close(self) -> None:
        self.writer.close()


class _Workers:
    """The HTTP workers of one drain, counting what they settled."""

    def __init__(self, plan: DrainPlan) -> None:
        self.plan = plan
        self.acked = 0
        self.requests = 0
        self.done = asyncio.Event()
        self.errors: list[str] = []
        self._pending: list[str] = []
        self._more = asyncio.Event()

    def _settled(self, status: int, body: bytes, leases: list[str]) -> None:
        if status != 200:
            self.errors.append(f"ack answered {status}: {body[:200]!r}")
        elif len(leases) > 1:
            results = json.loads(body)["results"]
            bad = [r for r in results.values() if r != "ok"]
            if bad:
                self.errors.append(f"ack results {bad[:3]}")
        self.acked += len(leases)
        if self.acked >= self.plan.expected:
            self.done.set()

    async def ack(self, connection: HttpConnection, leases: list[str]) -> None:
        body = json.dumps({"leases": leases}).encode()
        self.requests += 1
        status, answer = await connection.call("POST", f"/queues/{self.plan.queue}/ack", body)
        self._settled(status, answer, leases)

    async def stream(self) -> None:
        plan = self.plan
        events = await HttpConnection.open(plan.host, plan.port)
        acks = await HttpConnection.open(plan.host, plan.port)
        try:
            events.send("GET", f"/queues/{plan.queue}?prefetch={plan.prefetch}&lease={LEASE}")
            self.requests += 1
            status, chunked, _ = await events.head()
            if status != 200:
                raise RuntimeError(f"the task stream answered {status}")
            buffer = b""
            while not self.done.is_set():
                data = await (events.chunk() if chunked else events.reader.read(READ_SIZE))
                if not data:
                    raise RuntimeError("the task stream ended")
                buffer += data
                *blocks, buffer = buffer.split(b"\n\n")
                for block in blocks:
                    if not block.startswith(b"event: task"):
                        continue  # a heartbeat, or the retry hint
                    lease = block.partition(b"\nid: ")[2].partition(b"\n")[0].decode()
                    if plan.batched:
                        self._pending.append(lease)
                        self._more.set()
                    else:
                        await self.ack(acks, [lease])
        finally:
            events.close()
            acks.close()

    async def acker(self) -> None:
        """Posts what the stream workers took since its last answer, until the drain ends."""
        connection = await HttpConnection.open(self.plan.host, self.plan.port)
        try:
            while not self.done.is_set():
                await self._more.wait()
                self._more.clear()
                while self._pending:
                    batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                    await self.ack(connection, batch)
        finally:
            connection.close()

    async def pull(self) -> None:
        plan = self.plan
        connection = await HttpConnection.open(plan.host, plan.port)
        path = f"/queues/{plan.queue}/receive?max={plan.prefetch}&wait={PULL_WAIT}&lease={LEASE}"
        try:
            while not self.done.is_set():
                self.requests += 1
                status, body = await connection.call("POST", path)
                if status != 200:
                    raise RuntimeError(f"receive answered {status}: {body[:200]!r}")
                leases = [task["lease"] for task in json.loads(body)["tasks"]]
                if plan.batched and leases:
                    await self.ack(connection, leases)
                else:
                    for lease in leases:
                        await self.ack(connection, [lease])
        finally:
            connection.close()


async def _drain_http(plan: DrainPlan) -> Drain:
    workers = _Workers(plan)
    began, cpu = time.perf_counter(), time.process_time()
    work = workers.stream if plan.how == STREAM else workers.pull
    tasks = [asyncio.create_task(work()) for _ in range(plan.workers)]
    if plan.how == STREAM and plan.batched:
        tasks.append(asyncio.create_task(workers.acker()))
    out = Drain()
    ending = asyncio.create_task(workers.done.wait())
    finished, _ = await asyncio.wait(
        [ending, *tasks], timeout=plan.limit, return_when=asyncio.FIRST_COMPLETED
    )
    out.seconds = time.perf_counter() - began
    out.client_cpu = time.process_time() - cpu
    if plan.how == PULL:
        # a receive cut short would leave the gateway waiting on the queue for it, taking
        # (and leasing to no one) the tasks of the next row: let each end by itself
        await asyncio.wait(tasks, timeout=PULL_WAIT + 5)
    for task in [ending, *tasks]:
        task.cancel()
    for task in finished:
        if task is not ending and not task.cancelled() and task.exception() is not None:
            out.errors.append(f"a worker failed: {task.exception()!r}")
    if not finished:
        out.errors.append(f"not drained within {plan.limit:.0f} s")
    await asyncio.gather(*tasks, return_exceptions=True)
    out.tasks, out.requests = workers.acked, workers.requests
    out.errors.extend(workers.errors[:3])
    return out


async def _drain_aio_pika(plan: DrainPlan) -> Drain:
    connection = await aio_pika.connect(plan.amqp_url)
    done = asyncio.Event()
    out = Drain()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        await message.ack()
        out.tasks += 1
        if out.tasks >= plan.expected:
            done.set()

    began, cpu = time.perf_counter(), time.process_time()
    try:
        for _ in range(plan.workers):
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=plan.prefetch)
            queue = await channel.get_queue(plan.queue, ensure=False)
            await queue.consume(on_message)
        try:
            async with asyncio.timeout(plan.limit):
                await done.wait()
        except TimeoutError:
            out.errors.append(f"not drained within {plan.limit:.0f} s")
        out.seconds = time.perf_counter() - began
        out.client_cpu = time.process_time() - cpu
    finally:
        await connection.close()
    return out


def _drain_main(plan: DrainPlan, link: multiprocessing.connection.Connection) -> None:
    runner = _drain_aio_pika if plan.how == AIO_PIKA else _drain_http
    try:
        link.send(uvloop.run(runner(plan)))
    except Exception as exc:  # the parent reports it as the step's error
        link.send(Drain(errors=[f"{plan.how} drain failed: {exc!r}"]))


def drain(plan: DrainPlan, on_start: Callable[[], object] | None = None) -> Drain:
    """Drain the queue in a process of its own, as ``plan`` says; ``on_start`` runs once
    that process is started (to read the gateway's usage around the drain)."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_drain_main, args=(plan, child), daemon=True)
    proc.start()
    if on_start is not None:
        on_start()
    try:
        if not parent.poll(plan.limit + 60):
            return Drain(errors=[f"the {plan.how} drain did not answer"])
        answer: Any = parent.recv()
        result: Drain = answer
        return result
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
