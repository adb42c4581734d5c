"""The rough edges a newcomer hits first: an unescaped ``#``, a body too large, the demo's
port, the logs while RabbitMQ is away."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.gateways import serve_in_loop, settings_for
from tests.support.net import exchange, free_port
from tests.support.processes import child_gateway
from tests.support.waits import until, wait_ready

ROOT = Path(__file__).resolve().parents[2]
HINT = "write it as %23"


@pytest.mark.parametrize("server", ["native", "uvicorn"])
async def test_an_unescaped_hash_gets_a_400_that_says_to_send_it_as_23(server: str) -> None:
    async with (
        serve_in_loop(settings_for("memory"), server=server) as gw,
        httpx.AsyncClient(base_url=gw.url) as http,
    ):
        # what curl and httpx send for '.../orders.#': the fragment stays behind
        for url in ["/events/orders.#", "/events?topic=orders.#", "/events/#"]:
            response = await http.get(url)
            assert response.status_code == 400, url
            assert HINT in response.json()["detail"], (url, response.text)
        assert "%23" not in (await http.get("/events/orders..x")).json()["detail"]
        if server == "native":  # a raw client sends the '#' itself
            request = b"GET /events/orders.#x HTTP/1.1\r\nHost: x\r\n\r\n"
            raw = await asyncio.to_thread(exchange, gw.port, request)
            assert raw.startswith(b"HTTP/1.1 400") and HINT.encode() in raw, raw
        # escaped, it is the pattern it means
        async with http.stream("GET", "/events/orders.%23") as response:
            assert response.status_code == 200


@pytest.mark.parametrize("server", ["native", "uvicorn"])
async def test_a_body_announced_over_the_limit_gets_413_before_it_is_sent(server: str) -> None:
    """Only the head is sent: the 413 comes from Content-Length, not after a body never sent."""
    settings = settings_for("memory", max_event_bytes=1000)
    async with serve_in_loop(settings, server=server) as gw:
        head = (
            b"POST /events/a.b HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: text/plain\r\nContent-Length: 1001\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", gw.port), timeout=20) as sock:
            sock.sendall(head)
            answer = await asyncio.to_thread(sock.recv, 65536)  # the body is never sent
        assert answer.startswith(b"HTTP/1.1 413"), answer
        assert b"larger than 1000 bytes" in answer
        # a client that sends its too-large body straight after the head, and will have the
        # connection closed, still reads the 413 (mounted, it comes once the body is read)
        body = b"x" * 200_000
        whole = head.replace(b"1001", str(len(body)).encode()).replace(
            b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"
        )
        whole += body
        raw = await asyncio.to_thread(exchange, gw.port, whole)
        assert raw.startswith(b"HTTP/1.1 413"), raw[:200]
        async with httpx.AsyncClient(base_url=gw.url) as http:
            assert (await http.post("/events/a.b", content=b"y" * 1000)).status_code == 202
            too_big = await http.post("/events/a.b", content=b"y" * 5000)
            assert too_big.status_code == 413


@pytest.mark.slow
def test_make_demo_on_a_taken_port_fails_at_once_saying_how_to_choose_another() -> None:
    """A port whose owner accepts and never answers: the demo says so instead of waiting on it."""
    with socket.socket() as owner:
        owner.bind(("127.0.0.1", 0))
        owner.listen()  # connections complete in the kernel; nothing ever answers them
        port = owner.getsockname()[1]
        for how in ({"HOPCAST_PORT": str(port)}, {"args": f"--port {port}"}):
            env = {k: v for k, v in os.environ.items() if not k.startswith("HOPCAST_")}
            args = how.pop("args", "").split()
            demo = subprocess.run(
                [sys.executable, "scripts/demo.py", "--once", *args],
                cwd=ROOT,
                env={**env, **how, "HOPCAST_BROKER": "memory://"},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert demo.returncode == 1, demo
            assert f"127.0.0.1:{port}" in demo.stderr and "in use" in demo.stderr, demo.stderr
            assert "HOPCAST_PORT=8081 make demo" in demo.stderr and "--port" in demo.stderr
            assert "serving" not in demo.stdout + demo.stderr  # no gateway was started


@pytest.mark.slow
def test_make_demo_prints_commands_that_work_as_printed() -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOPCAST_")}
    demo = subprocess.run(
        [sys.executable, "scripts/demo.py", "--once", "--port", str(port)],
        cwd=ROOT,
        env={**env, "HOPCAST_BROKER": "memory://", "HOPCAST_LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert demo.returncode == 0, demo
    assert demo.stdout.count("received id=") == 3, demo.stdout
    assert "acknowledged 2 task(s)" in demo.stdout, demo.stdout  # the work queue's round trip
    listen = next(line for line in demo.stdout.splitlines() if " listen 'demo.*'" in line)
    command = listen.split()[0]
    assert command.endswith("hopcast") and "/" in command, listen  # a path: not on the PATH
    assert f"--url http://127.0.0.1:{port}" in listen
    version = subprocess.run(
        [command, "--version"], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert version.returncode == 0 and "version" in version.stdout, version


@pytest.mark.slow
async def test_while_rabbitmq_is_away_each_retry_and_refusal_is_one_line_of_hopcast() -> None:
    env = {"HOPCAST_BROKER": f"amqp://guest:guest@127.0.0.1:{free_port()}/", "HOPCAST_RETRY": "100"}
    with child_gateway(env) as gw:
        await wait_ready(gw.url, ready=False)
        await until(lambda: gw.log_tail().count("waiting for RabbitMQ") >= 3, "three retries")
        async with httpx.AsyncClient() as http:
            response = await http.post(f"{gw.url}/events/a.b", content=b"x")
        assert response.status_code == 503
        log = gw.output()
    lines = log.splitlines()
    assert not [line for line in lines if "aiormq" in line], log
    retries = [line for line in lines if "waiting for RabbitMQ" in line]
    assert len(retries) >= 3 and all("Connection refused" in line for line in retries), log
    assert all(" WARNING hopcast.broker: " in line for line in retries), retries
    refused = [line for line in lines if "a.b" in line]
    assert len(refused) == 1 and " INFO hopcast.http: publish to a.b answered 503" in refused[0]
    assert "Error" not in log and "<" not in log, log
