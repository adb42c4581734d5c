"""`hopcast publish` and `hopcast listen` as a user runs them, against a running gateway."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping

import httpx
import jwt
import pytest

from tests.support.clients import metric
from tests.support.net import free_port
from tests.support.processes import child_gateway
from tests.support.waits import wait_ready

# Each test starts a gateway and the CLI in child processes.
pytestmark = pytest.mark.slow

MEMORY = {"HOPCAST_BROKER": "memory://", "HOPCAST_LOG_LEVEL": "warning"}


def hopcast(
    *args: str, env: Mapping[str, str] | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hopcast", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


async def test_what_publish_sends_listen_prints() -> None:
    with child_gateway(MEMORY) as gw:
        await wait_ready(gw.url)
        listen = await asyncio.create_subprocess_exec(
            *[sys.executable, "-m", "hopcast", "listen", "orders.*", "--url", gw.url],
            *["--count", "2"],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with httpx.AsyncClient(base_url=gw.url) as http:
                async with asyncio.timeout(60):
                    while await metric(http, "hopcast_subscribers") < 1:
                        await asyncio.sleep(0.1)
            first = await asyncio.to_thread(
                hopcast, "publish", "orders.42", '{"order": 42}', "--event", "paid", "--url", gw.url
            )
            assert first.returncode == 0, first.stderr
            assert first.stdout == "published on orders.42: 13 bytes, event paid\n"
            second = await asyncio.to_thread(
                hopcast, "publish", "orders.7", "two", "--json", "--url", gw.url
            )
            assert second.returncode == 0, second.stderr
            assert json.loads(second.stdout) == {"topic": "orders.7", "event": None, "size": 3}
            async with asyncio.timeout(60):
                out, err = await listen.communicate()
        finally:
            if listen.returncode is None:
                listen.kill()
                await listen.wait()
        assert listen.returncode == 0, err
        assert out.decode().splitlines() == ['0\tpaid\t{"order": 42}', "1\tmessage\ttwo"]


def test_publish_from_stdin_listen_from_the_start_in_json() -> None:
    with child_gateway(MEMORY) as gw:
        asyncio.run(wait_ready(gw.url))
        for data, event in [("skipped", None), ("two\nlines", "paid"), ("é \\n", None)]:
            sent = hopcast(
                "publish",
                "a.b",
                "-",
                *(["--event", event] if event else []),
                "--url",
                gw.url,
                stdin=data,
            )
            assert sent.returncode == 0, sent.stderr
        got = hopcast(
            "listen", "a.*", "--last-event-id", "0", "--count", "2", "--json", "--url", gw.url
        )
        assert got.returncode == 0, got.stderr
        assert [json.loads(line) for line in got.stdout.splitlines()] == [
            {"id": "1", "event": "paid", "data": "two\nlines"},
            {"id": "2", "event": "message", "data": "é \\n"},
        ]
        args = ["--count", "3", "--json", "--url", gw.url]
        history = hopcast("listen", "a.*", "--since", "first", *args)
        assert history.returncode == 0, history.stderr
        assert [json.loads(line)["data"] for line in history.stdout.splitlines()] == [
            "skipped",
            "two\nlines",
            "é \\n",
        ]


def test_garbage_and_no_gateway_get_a_message_not_a_traceback() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with child_gateway(MEMORY) as gw:
        asyncio.run(wait_ready(gw.url))
        bad = "\udcff"  # how Python shows the shell's byte 0xFF, which is not UTF-8
        for args, status, words in [
            (["publish", "orders.*", "x", "--url", gw.url], 1, ["400", "patterns"]),
            (["publish", "orders..1", "x", "--url", gw.url], 1, ["400", "empty word"]),
            (["publish", "a", "x", "--event", "hopcast-x", "--url", gw.url], 1, ["reserved"]),
            (["publish", "a", "x", "--url", nowhere], 1, ["cannot reach the gateway", nowhere]),
            (["publish", "a", bad, "--url", gw.url], 1, ["400", "UTF-8"]),  # the data's bytes
            (["listen", "orders..1", "--url", gw.url], 1, ["400", "empty word"]),
            (["listen", "a", "--last-event-id", "x", "--url", gw.url], 1, ["Last-Event-ID"]),
            (["listen", "a", "--since", "yesterday", "--url", gw.url], 1, ["400", "since"]),
            # refused before anything is sent: exit status 2, as any usage error
            (["publish", bad, "x", "--url", gw.url], 2, ["TOPIC", "UTF-8"]),
            (["publish", "a", "x", "--event", bad, "--url", gw.url], 2, ["--event", "UTF-8"]),
            (["publish", "a", "x", "--token", "a\tb", "--url", gw.url], 2, ["--token", "ASCII"]),
            (["publish", "a", "x", "--url", "nonsense"], 2, ["--url", "http://"]),
            (["listen", bad, "--url", gw.url], 2, ["PATTERNS", "UTF-8"]),
            (["listen", "a", "--last-event-id", "é", "--url", gw.url], 2, ["--last-event-id"]),
            (["listen", "a", "--url", f"http://{bad}"], 2, ["--url", "http://"]),
        ]:
            result = hopcast(*args)
            assert result.returncode == status, (args, result)
            assert "Traceback" not in result.stderr, (args, result.stderr)
            for word in words:
                assert word in result.stderr, (args, result.stderr)
        # the gateway took none of it
        assert "data:" not in asyncio.run(_everything(gw.url))


def test_a_refusal_reads_as_a_sentence_or_as_the_problem_with_json() -> None:
    with child_gateway(MEMORY) as gw:
        asyncio.run(wait_ready(gw.url))
        for command in (["publish", "orders..1", "x"], ["listen", "orders..1"]):
            said = hopcast(*command, "--url", gw.url)
            assert said.returncode == 1, said
            assert said.stderr.startswith("Error: 400 Bad request: "), said.stderr
            assert "{" not in said.stderr and "empty word" in said.stderr, said.stderr
            problem = hopcast(*command, "--json", "--url", gw.url)
            assert problem.returncode == 1, problem
            body = json.loads(problem.stderr)
            assert (body["status"], body["title"]) == (400, "Bad request"), body
            assert "empty word" in body["detail"]
            assert problem.stdout == ""


def test_a_token_from_the_flag_or_the_variable() -> None:
    secret = "a CLI-test secret of more than 32 bytes"

    def token(lifetime: float = 3600, **rights: list[str]) -> str:
        claims = {"exp": int(time.time() + lifetime), "hopcast": rights}
        return jwt.encode(claims, secret, algorithm="HS256")

    writer, reader = token(publish=["orders.#"]), token(subscribe=["orders.*"])
    env = {**MEMORY, "HOPCAST_AUTH": "jwt", "HOPCAST_JWT_SECRET": secret}
    with child_gateway(env) as gw:
        asyncio.run(wait_ready(gw.url))
        url = ["--url", gw.url]
        for args, variable, words in [
            (["publish", "orders.1", "x"], None, ["401", "needs a bearer token"]),
            (["publish", "orders.1", "x", "--token", reader], None, ["403", "publish"]),
            (["publish", "orders.1", "x"], token(-60, publish=["#"]), ["401", "expired"]),
            (["listen", "orders.*"], None, ["401", "needs a bearer token"]),
            (["listen", "orders.*", "--token", "x.y.z"], None, ["401"]),
            (["listen", "orders.*", "--token", writer], None, ["403", "subscribe"]),
        ]:
            result = hopcast(*args, *url, env={"HOPCAST_TOKEN": variable} if variable else None)
            assert result.returncode == 1, (args, result)
            assert "Traceback" not in result.stderr, (args, result.stderr)
            for word in words:
                assert word in result.stderr, (args, result.stderr)
        for n, env in enumerate([{}, {"HOPCAST_TOKEN": writer}]):
            args = ["publish", "orders.1", f"event {n}", *url]
            sent = hopcast(*args, *(["--token", writer] if not env else []), env=env)
            assert sent.returncode == 0, sent.stderr
        got = hopcast(
            "listen",
            "orders.*",
            "--last-event-id",
            "0",
            "--count",
            "1",
            *url,
            env={"HOPCAST_TOKEN": reader},
        )
        assert got.returncode == 0, got.stderr
        assert got.stdout == "1\tmessage\tevent 1\n"


async def test_listen_says_why_it_waits_for_a_gateway_that_does_not_answer() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "hopcast", "listen", "a", "--url", nowhere],
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        async with asyncio.timeout(30):
            line = (await proc.stderr.readline()).decode()
        # as a browser does, it keeps trying; and it says so
        assert nowhere in line and "trying again in 3.0 s" in line, line
        assert proc.returncode is None
    finally:
        proc.kill()
        await proc.wait()


async def _everything(url: str) -> str:
    """What a subscriber to everything from the stream's start gets until it goes quiet."""
    async with httpx.AsyncClient(base_url=url) as http:
        try:
            async with http.stream(
                "GET", "/events?topic=%23&since=first", timeout=httpx.Timeout(5.0, read=1.0)
            ) as response:
                text = ""
                async for chunk in response.aiter_text():
                    text += chunk
        except httpx.ReadTimeout:
            pass
    return text
