"""`hopcast work` as a user runs it, against a gateway with work queues: commands that fail
for some tasks, a SIGTERM in the middle, a grace that runs out, and garbage on the command line."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import jwt
import pytest

from tests.support.gateways import serve_in_loop, settings_for
from tests.support.queues import enqueue, queue_gateway, queue_metric, receive
from tests.support.rabbitmq import Names

pytestmark = pytest.mark.slow

LEDGER = 'printf "%s %s %s %s\\n" "$1" "$HOPCAST_TASK_ID" "$HOPCAST_TASK_DELIVERIES" "$2" >> "$L"'
"""A shell line that notes a step (``$1``), the task and its delivery in the ledger ``$L``."""
RUN = f"""
note() {{ {LEDGER}; }}
body=$(cat)
note start "$body"
case "$body" in slow*) sleep 2;; forever*) sleep 600;; esac
note "end-$HOPCAST_TASK_TYPE" "$body"
case "$body" in fail*) exit 3;; esac
"""
"""The command each test runs: ``sh -c RUN``; a body that starts with ``fail`` fails."""


async def _work(url: str, queue: str, ledger: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "hopcast", "work", queue, "--url", url, *args],
        *["--", "sh", "-c", RUN],
        env={**os.environ, "L": str(ledger)},
        stderr=asyncio.subprocess.PIPE,
    )


async def _hopcast(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "hopcast", *args],
        env={**os.environ, **(env or {})},
        stdin=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def _stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    """SIGTERM, as an operator stops it; its exit status and what it said."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(60):
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode()


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _lines(ledger: Path) -> list[list[str]]:
    return (
        [line.split(" ", 3) for line in ledger.read_text().splitlines()] if ledger.exists() else []
    )


async def _until(what: str, check: object) -> None:
    """Wait for ``check()`` (a coroutine function) to be true; fail after a generous while."""
    give_up = time.monotonic() + 120
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < give_up, f"never: {what}"
        await asyncio.sleep(0.1)


@pytest.fixture
async def gateway(broker_kind: str, names: Names, queue: str) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway serving ``queue`` with deliveries limited to 2; a client of it."""
    async with (
        queue_gateway(broker_kind, names, queue, queue_delivery_limit=2) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=60) as http,
    ):
        yield http


async def test_failing_tasks_end_dead_the_rest_are_acked_once(
    gateway: httpx.AsyncClient, queue: str, tmp_path: Path
) -> None:
    http, ledger = gateway, tmp_path / "ledger"
    good = {await enqueue(http, queue, f"ok {n}".encode(), type="t"): f"ok {n}" for n in range(9)}
    bad = {await enqueue(http, queue, b"fail %d" % n, type="t") for n in range(3)}
    proc = await _work(str(http.base_url), queue, ledger, "--concurrency", "3")
    try:

        async def settled() -> bool:
            dead = (await http.get(f"/queues/{queue}/dead")).json()["dead"]
            acked = await queue_metric(http, "hopcast_queue_settled_total", queue, outcome="ack")
            return len(dead) == len(bad) and acked == len(good)

        await _until("every task acked or dead", settled)
    finally:
        status, said = await _stop(proc)
    assert status == 0, said
    ends = [(task, int(n), body) for step, task, n, body in _lines(ledger) if step == "end-t"]
    assert sorted((task, body) for task, n, body in ends if task in good) == sorted(good.items())
    assert all(n == 1 for task, n, _ in ends if task in good)  # each done once, first time
    # the limit is 2: a third give-back dead-letters the task
    assert Counter(task for task, _, _ in ends if task not in good) == dict.fromkeys(bad, 3)
    dead = (await http.get(f"/queues/{queue}/dead")).json()["dead"]
    assert {(d["id"], d["reason"]) for d in dead} == {(task, "delivery_limit") for task in bad}
    assert await queue_metric(http, "hopcast_queue_settled_total", queue, outcome="ack") == len(
        good
    )
    assert await receive(http, queue) == []
    assert "exited with 3; nacked" in said


async def test_a_body_reaches_the_command_byte_for_byte(
    gateway: httpx.AsyncClient, queue: str, tmp_path: Path
) -> None:
    http, out = gateway, tmp_path / "task.out"
    body = bytes(range(256)) + b"\n\r\n\x00 end"
    task_id = await enqueue(http, queue, body, type="blob")
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "hopcast", "work", queue, "--url", str(http.base_url), "--"],
        *["sh", "-c", 'cat > "$O.out"; echo "$HOPCAST_TASK_ID $HOPCAST_TASK_TYPE" > "$O.env"'],
        env={**os.environ, "O": str(tmp_path / "task")},
        stderr=asyncio.subprocess.PIPE,
    )
    try:

        async def acked() -> bool:
            return (
                await queue_metric(http, "hopcast_queue_settled_total", queue, outcome="ack") == 1
            )

        await _until("the task acked", acked)
    finally:
        status, said = await _stop(proc)
    assert status == 0, said
    assert _read(out) == body
    assert _read(out.with_suffix(".env")) == f"{task_id} blob\n".encode()


async def test_sigterm_lets_running_commands_finish_and_loses_no_task(
    gateway: httpx.AsyncClient, queue: str, tmp_path: Path
) -> None:
    http, ledger = gateway, tmp_path / "ledger"
    sent = {await enqueue(http, queue, b"slow %d" % n, type="t") for n in range(6)}
    proc = await _work(str(http.base_url), queue, ledger, "--concurrency", "2")

    async def two_started() -> bool:
        return len([line for line in _lines(ledger) if line[0] == "start"]) >= 2

    try:
        await _until("two commands started", two_started)
    finally:
        status, said = await _stop(proc)
    assert status == 0, said
    started = {task for step, task, _, _ in _lines(ledger) if step == "start"}
    ended = {task for step, task, _, _ in _lines(ledger) if step == "end-t"}
    assert started == ended and len(ended) >= 2  # the running commands finished
    assert await queue_metric(http, "hopcast_queue_settled_total", queue, outcome="ack") == len(
        ended
    )
    rest: list[dict[str, object]] = []
    while len(rest) < len(sent) - len(ended):
        rest += await receive(http, queue, max=10, wait=20)
    assert {str(t["id"]) for t in rest} == sent - ended  # the others are back in the queue


async def test_past_the_grace_commands_are_killed_and_their_tasks_go_back(
    tmp_path: Path,
) -> None:
    ledger = tmp_path / "ledger"
    async with (
        serve_in_loop(settings_for("memory", queue=("jobs",))) as gw,
        httpx.AsyncClient(base_url=gw.url, timeout=60) as http,
    ):
        task_id = await enqueue(http, "jobs", b"forever")
        proc = await _work(gw.url, "jobs", ledger, "--grace", "0.5")

        async def started() -> bool:
            return bool(_lines(ledger))

        try:
            await _until("the command started", started)
        finally:
            status, said = await _stop(proc)
        assert status == 0, said
        assert "killed past the grace" in said
        [back] = await receive(http, "jobs", wait=20)
        assert (back["id"], back["redelivered"]) == (task_id, True)
        assert [line[0] for line in _lines(ledger)] == ["start"]  # it never ended on its own


async def test_garbage_arguments_get_a_message_and_a_status(tmp_path: Path) -> None:
    secret = "a work-test secret of more than 32 bytes"
    reader = jwt.encode(
        {"exp": int(time.time() + 3600), "hopcast": {"subscribe": ["#"], "enqueue": ["jobs"]}},
        secret,
        algorithm="HS256",
    )
    jwt_settings = settings_for("memory", queue=("jobs",), auth="jwt", jwt_secret=secret)
    async with (
        serve_in_loop(settings_for("memory", queue=("jobs",))) as gw,
        serve_in_loop(jwt_settings) as guarded,
    ):
        url = ["--url", gw.url]
        bad = "\udcff"  # how Python shows the shell's byte 0xFF, which is not UTF-8
        for args, status, words in [
            (["work", "jobs", *url], 2, ["COMMAND"]),
            (["work", "jobs", *url, "--", "no-such-command-here"], 2, ["no such command"]),
            (["work", "jobs", *url, "--concurrency", "0", "--", "true"], 2, ["--concurrency"]),
            (["work", "jobs", *url, "--concurrency", "101", "--", "true"], 2, ["--concurrency"]),
            (["work", "jobs", *url, "--concurrency", "x", "--", "true"], 2, ["--concurrency"]),
            (["work", "jobs", *url, "--lease", "0", "--", "true"], 2, ["--lease"]),
            (["work", "jobs", *url, "--grace", "-1", "--", "true"], 2, ["--grace"]),
            (["work", "jobs", "--url", "nonsense", "--", "true"], 2, ["--url", "http://"]),
            (["work", bad, *url, "--", "true"], 2, ["QUEUE", "UTF-8"]),
            (["work", "jobs", *url, "--token", "a\tb", "--", "true"], 2, ["--token", "ASCII"]),
            (["work", "nothere", *url, "--", "true"], 1, ["404", "nothere"]),
            (["work", "bad..name", *url, "--", "true"], 1, ["400", "empty word"]),
            (["work", "jobs", "--url", guarded.url, "--", "true"], 1, ["401"]),
            (["work", "jobs", "--url", guarded.url, "--token", reader, "--", "true"], 1, ["403"]),
        ]:
            code, said = await _hopcast(*args)
            assert code == status, (args, said)
            assert "Traceback" not in said, (args, said)
            for word in words:
                assert word in said, (args, said)
