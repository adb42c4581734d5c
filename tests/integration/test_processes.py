"""The gateway as its users run it: the CLI, several workers, restarts of the gateway."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest

from tests.support.clients import Listener, metric
from tests.support.net import free_port
from tests.support.processes import child_gateway
from tests.support.rabbitmq import Names, amqp_publish, rabbitmqctl_table
from tests.support.sse import EventStream
from tests.support.waits import wait_ready

# Each test starts gateways (or the CLI) in child processes.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]


def test_a_bad_setting_fails_at_start_naming_it() -> None:
    for args, env, words in [
        (["--port", "70000"], {}, ["--port", "70000"]),
        ([], {"HOPCAST_HEARTBEAT": "soon"}, ["HOPCAST_HEARTBEAT", "soon"]),
        ([], {"HOPCAST_BROKER": "redis://x"}, ["HOPCAST_BROKER", "redis://x"]),
        (["--ring-size", "-5"], {}, ["--ring-size", "-5"]),
        ([], {"HOPCAST_LOG_FORMAT": "xml"}, ["HOPCAST_LOG_FORMAT", "xml"]),
        (["--log-format", "xml"], {}, ["--log-format", "xml"]),
        (["--jwks-refresh", "0"], {}, ["--jwks-refresh", "0"]),
        (["--stream-replicas", "0"], {}, ["--stream-replicas", "0"]),
        ([], {"HOPCAST_STREAM_REPLICAS": "three"}, ["HOPCAST_STREAM_REPLICAS", "three"]),
        (["--broker", "http://x"], {}, ["--broker", "'http://x'", "amqp://"]),
        (["--port", "abc"], {}, ["--port", "'abc'", "integer"]),
        (["--log-level", "loud"], {}, ["--log-level", "'loud'", "debug"]),
        (["--auth", "maybe"], {}, ["--auth", "'maybe'", "jwt"]),
        # judged as the gateway starts, still a bad value: exit status 2 as well
        (["--auth", "jwt", "--jwt-secret", "short"], {}, ["--jwt-secret", "at least 32"]),
        (["--auth", "jwt"], {}, ["--auth jwt needs exactly one of", "--jwt-secret"]),
        ([], {"HOPCAST_AUTH": "jwt", "HOPCAST_JWT_KEY": "/nonexistent"}, ["--jwt-key"]),
        (["--public", "a..b"], {}, ["--public", "'a..b'", "empty word"]),
        ([], {"HOPCAST_QUEUE": "a,b.dead"}, ["--queue", "'b.dead'", "dead"]),
        (["--lease", "0"], {}, ["--lease", "'0'"]),
        (["--max-lease", "3600"], {}, ["--max-lease", "'3600'"]),
        # with workers too: judged before any starts, not by each worker, again and again
        (["--workers", "2", "--jwt-secret", "short"], {"HOPCAST_AUTH": "jwt"}, ["--jwt-secret"]),
        # retired: says what replaced it, rather than run without what was asked for
        (["--coalesce-ms", "20"], {}, ["--coalesce-ms is retired", "--max-write-delay"]),
        ([], {"HOPCAST_COALESCE_MS": "0"}, ["HOPCAST_COALESCE_MS is retired", "max-write-delay"]),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "hopcast", "serve", *args],
            env={**_env(), **env},
            capture_output=True,
            timeout=30,
            check=False,
        )
        assert proc.returncode == 2, (args, env, proc.stderr)
        err = proc.stderr.decode()
        for word in words:
            assert word in err, err
        # one plain line: no usage text, no pydantic prefix, no Python tuple
        (line,) = err.splitlines()
        assert line.startswith("Error: "), line
        assert "Value error" not in line and "('" not in line and "Usage" not in line, line


def test_an_address_in_use_fails_at_start_with_a_message() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        for args in (["--broker", "memory://"], ["--workers", "2"]):
            proc = subprocess.run(
                [sys.executable, "-m", "hopcast", "serve", "--port", port, *args],
                env=_env(),
                capture_output=True,
                timeout=30,
                check=False,
            )
            err = proc.stderr.decode()
            assert proc.returncode == 1, err
            assert f"cannot listen on 127.0.0.1:{port}" in err and "in use" in err, err
            assert "Traceback" not in err, err


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HOPCAST_")}


async def test_serve_declares_the_topology_and_waits_for_the_broker(names: Names) -> None:
    with child_gateway(names.env()) as gw:
        await wait_ready(gw.url)
        async with Listener(f"{gw.url}/events/orders.*") as sub:
            await sub.wait_started()
            await amqp_publish(names, [("orders.42", b'{"order": 42}', "order-paid")])
            (event,) = await sub.wait_for(1)
        assert (event.type, event.data) == ("order-paid", '{"order": 42}')


async def test_clients_resume_across_a_gateway_restart(names: Names) -> None:
    env = names.env()
    with child_gateway(env) as gw:
        await wait_ready(gw.url)
        async with Listener(f"{gw.url}/events/r") as sub:
            await sub.wait_started()
            await amqp_publish(names, [("r", b"%d" % i, None) for i in range(10)])
            await sub.wait_for(10)
        last = sub.last_id
        assert last is not None
    await amqp_publish(names, [("r", b"%d" % i, None) for i in range(10, 20)])  # while it is down
    with child_gateway(env) as gw2:
        await wait_ready(gw2.url)
        await amqp_publish(names, [("r", b"%d" % i, None) for i in range(20, 25)])
        async with Listener(f"{gw2.url}/events/r", {"Last-Event-ID": last}) as back:
            got = await back.wait_for(15)
        assert back.data() == [str(i) for i in range(10, 25)]
        assert len(got) == 15


async def test_workers_share_a_port_and_clients_resume_on_any(names: Names) -> None:
    with child_gateway(names.env(), "--workers", "2") as gw:
        await wait_ready(gw.url)
        got: list[str] = []
        last: str | None = None
        await amqp_publish(names, [("w", b"%d" % i, None) for i in range(5)])
        for round_ in range(10):
            # each reconnect lands on whichever worker accepts it
            headers = {"Last-Event-ID": last} if last else {}
            url = f"{gw.url}/events/w" + ("" if last else "?since=first")
            async with Listener(url, headers) as sub:
                if round_ == 0:
                    await sub.wait_for(5)
                else:
                    await sub.wait_until(lambda s: len(s.raw) > 0)
                await amqp_publish(names, [("w", b"%d" % (5 + round_), None)])
                await sub.wait_for(6 if round_ == 0 else 1)
                got.extend(sub.data())
                last = sub.last_id
        assert got == [str(i) for i in range(15)]
        assert len(gw.workers()) == 2


async def test_json_logs_are_one_object_per_line_from_every_process(names: Names) -> None:
    with child_gateway({**names.env(), "HOPCAST_LOG_FORMAT": "json"}, "--workers", "2") as gw:
        await wait_ready(gw.url)
        err = gw.output()  # stops it: the shutdown logs too
    lines = [json.loads(line) for line in err.splitlines()]  # every line, or this fails
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines), lines
    pids = {line["pid"] for line in lines if "pid" in line}
    assert len(pids) == 2, lines  # the workers say which they are
    assert any(line["message"].startswith("serving on http://") for line in lines), lines
    assert {line["level"] for line in lines} <= {"debug", "info", "warning", "error"}


def _stream_consumers(stream: str) -> int:
    """Consumers that the gateways of ``stream`` hold on RabbitMQ, from rabbitmqctl's lists."""
    marker = f'{{"connection_name","hopcast {stream} '
    ours = {
        name
        for name, props in rabbitmqctl_table("list_connections", "name", "client_properties")
        if marker in props
    }
    return sum(
        int(count)
        for channel, count in rabbitmqctl_table("list_channels", "name", "consumer_count")
        if channel.rsplit(" (", 1)[0] in ours
    )


async def test_a_storm_of_resumes_after_a_restart_shares_stream_readers(names: Names) -> None:
    """1,000 clients resume at once on a fresh gateway: a handful of consumers, not 1,000."""
    total, clients = 3000, 1000
    env = {
        **names.env(),
        "HOPCAST_RING_SIZE": "2000",
        "HOPCAST_MAX_CONNECTIONS_PER_ADDRESS": "2000",
    }
    with child_gateway(env) as before:
        await wait_ready(before.url)
        for i in range(0, total, 500):
            await amqp_publish(names, [("s", b"%d" % n, None) for n in range(i, i + 500)])
    with child_gateway(env) as gw:
        await wait_ready(gw.url)
        offsets = await _all_offsets(gw.url, total)
        # 70 % resume inside the ring, 30 % further back (from the stream)
        starts = [offsets[(i * 7919) % (total - 1)] for i in range(clients)]
        counts: list[int] = []
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                counts.append(await asyncio.to_thread(_stream_consumers, names.stream))

        sampler = asyncio.create_task(sample())
        results = await asyncio.gather(*(_resume_raw(gw.url, n) for n in starts))
        stop.set()
        await sampler
        for start, ids in zip(starts, results, strict=True):
            assert ids == [o for o in offsets if o > start]
        # The gateway's own count of the readers it opened is exact: 2 here on a quiet
        # machine, 334 with sharing turned off (one per resume from the stream); late
        # waves of clients on a loaded machine may start a few more. rabbitmqctl's
        # samples (a second or so each) confirm it from the broker's side.
        async with httpx.AsyncClient(base_url=gw.url) as http:
            started = await metric(http, "hopcast_catchup_readers_started_total")
        assert 1 <= started <= 30, started
        assert counts, "no sample of the broker's consumers was taken"
        assert max(counts) <= 8, counts


async def _all_offsets(url: str, count: int) -> list[int]:
    async with Listener(f"{url}/events/s?since=first") as sub:
        events = await sub.wait_for(count, timeout=60)
    return [int(e.last_event_id) for e in events]


async def _resume_raw(url: str, after: int) -> list[int]:
    """A bare-bones subscriber that reads until the last event and returns the ids it saw."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = f"GET /events/s HTTP/1.1\r\nHost: x\r\nLast-Event-ID: {after}\r\n\r\n"
    writer.write(request.encode())
    stream = EventStream()
    ids: list[int] = []
    try:
        async with asyncio.timeout(120):
            await reader.readuntil(b"\r\n\r\n")  # the response's head
            while piece := await reader.read(65536):
                for event in stream.feed(piece):
                    ids.append(int(event.last_event_id))
                    if event.data == "2999":
                        return ids
    finally:
        writer.close()
    return ids


def test_the_quick_start_demo_shows_events_arriving() -> None:
    env = {**_env(), "HOPCAST_BROKER": "memory://", "HOPCAST_PORT": str(free_port())}
    proc = subprocess.run(
        [sys.executable, "scripts/demo.py", "--once"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("received id=") == 3
    assert "event=order-paid" in proc.stdout


async def test_sigterm_ends_streams_with_a_spread_retry_and_stops(names: Names) -> None:
    env = {**names.env(), "HOPCAST_RETRY": "1000", "HOPCAST_SHUTDOWN_GRACE": "3"}
    with child_gateway(env) as gw:
        await wait_ready(gw.url)
        listeners = [Listener(f"{gw.url}/events/t") for _ in range(5)]
        for sub in listeners:
            await sub.__aenter__()
        for sub in listeners:
            await sub.wait_started()
        gw.proc.send_signal(signal.SIGTERM)
        for sub in listeners:
            await asyncio.wait_for(sub.ended.wait(), 30)
        code = await asyncio.to_thread(gw.proc.wait, 30)
        retries = set()
        for sub in listeners:
            # the preamble's, then the one that ends the stream
            assert len(sub.stream.retries) == 2, sub.raw
            retries.add(sub.stream.retries[-1])
            await sub.close()
        assert all(1000 <= r <= 3000 for r in retries)
        assert len(retries) > 1  # spread, so clients do not all come back at once
        assert code in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once done
