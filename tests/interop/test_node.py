"""The seed's own Node.js stack against hopcast: ``amqplib`` publishes, ``eventsource`` listens.

The npm packages are pinned in this folder's package.json and package-lock.json;
``scripts/setup`` installs them (``npm ci``). A missing ``node`` or package fails
these tests: they do not skip.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from hopcast import Client, Event, Missed
from tests.support.processes import ChildGateway, child_gateway
from tests.support.rabbitmq import AMQP_URL, Names
from tests.support.waits import wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]

HERE = Path(__file__).resolve().parent
SENT = [
    ("orders.1", '{"order": 1}', "order-paid"),
    ("users.9", "not for orders.*", None),
    ("orders.2", "two\nlines", None),
    ("orders.3", "é ✓ 🐇", "shipped"),
]


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not installed (scripts/setup installs it)")
    if not (HERE / "node_modules" / "eventsource").is_dir():
        pytest.fail("tests/interop/node_modules is missing: run scripts/setup (npm ci)")
    return found


async def node_publish(names: Names, items: list[tuple[str, str, str | None]]) -> None:
    """``amqplib`` publishes ``items`` (topic, data, event) to the test's exchange."""
    proc = await asyncio.create_subprocess_exec(
        node(),
        str(HERE / "publish.mjs"),
        AMQP_URL,
        names.exchange,
        json.dumps(items),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out) == {"published": len(items)}


class NodeListener:
    """``node listen.mjs``: what the npm ``eventsource`` received, line by line."""

    def __init__(self, url: str, count: int, names: list[str]) -> None:
        self.args = [node(), str(HERE / "listen.mjs"), url, str(count), *names]
        self.events: list[dict[str, Any]] = []
        self.opens = 0
        self.errors = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def __aenter__(self) -> NodeListener:
        self._proc = await asyncio.create_subprocess_exec(
            *self.args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()
        if self._reader is not None:
            await self._reader

    async def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        async for raw in self._proc.stdout:
            line = json.loads(raw)
            if "open" in line:
                self.opens = line["open"]
            elif "error" in line:
                self.errors += 1
            else:
                self.events.append(line)
            self._changed.set()
        self._changed.set()

    async def until(self, what: str, check: Any) -> None:
        try:
            async with asyncio.timeout(60):
                while not check(self):
                    if self._reader is not None and self._reader.done():
                        assert self._proc is not None and self._proc.stderr is not None
                        err = (await self._proc.stderr.read()).decode()
                        raise AssertionError(f"node stopped before {what}: {err}")
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"node: not within 60 s: {what}; got {self.events}") from None


async def python_sees(url: str, count: int) -> list[dict[str, str]]:
    async with Client(url) as client:
        got: list[Event | Missed] = []
        async with asyncio.timeout(60):
            async for item in client.subscribe("orders.*", since="first"):
                got.append(item)
                if len(got) == count:
                    break
    assert all(isinstance(e, Event) for e in got), got
    return [{"id": e.id, "event": e.event, "data": e.data} for e in got if isinstance(e, Event)]


async def test_an_amqplib_publish_reaches_eventsource_as_python_sees_it(names: Names) -> None:
    with child_gateway(names.env()) as gw:
        await wait_ready(gw.url)
        async with NodeListener(
            f"{gw.url}/events/orders.*?since=first", 3, ["order-paid", "shipped"]
        ) as listener:
            await listener.until("the stream opened", lambda n: n.opens >= 1)
            await node_publish(names, SENT)
            python = await python_sees(gw.url, 3)
            await listener.until("three events", lambda n: len(n.events) >= 3)
    expected = [(event or "message", data) for topic, data, event in SENT if topic != "users.9"]
    assert [(e["event"], e["data"]) for e in python] == expected
    assert listener.events == python  # the same ids, names and data, from both stacks
    ids = [int(e["id"]) for e in python]
    assert ids == sorted(set(ids))


async def test_eventsource_resumes_with_last_event_id_across_a_gateway_restart(
    names: Names,
) -> None:
    env = {**names.env(), "HOPCAST_RETRY": "300", "HOPCAST_SHUTDOWN_GRACE": "1"}
    gateway = ChildGateway(env)
    try:
        await wait_ready(gateway.url)
        async with NodeListener(f"{gateway.url}/events/orders.*", 9, []) as listener:
            await listener.until("the stream opened", lambda n: n.opens >= 1)
            await node_publish(names, [("orders.1", str(n), None) for n in range(3)])
            await listener.until("three events", lambda n: len(n.events) >= 3)
            gateway.close()  # the stream ends; eventsource keeps trying
            await node_publish(names, [("orders.1", str(n), None) for n in range(3, 6)])
            await listener.until("a failed reconnect", lambda n: n.errors >= 1)
            gateway = ChildGateway(env, port=gateway.port)
            await listener.until("reconnected", lambda n: n.opens >= 2)
            await node_publish(names, [("orders.1", str(n), None) for n in range(6, 9)])
            await listener.until("nine events", lambda n: len(n.events) >= 9)
    finally:
        gateway.close()
    assert [e["data"] for e in listener.events] == [str(n) for n in range(9)]  # none lost
    ids = [int(e["id"]) for e in listener.events]
    assert ids == sorted(set(ids))  # none twice
