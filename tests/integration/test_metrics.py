"""/metrics as Prometheus scrapes it: names promtool accepts, one answer for every worker."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.clients import Listener
from tests.support.processes import ChildGateway, child_gateway, client_ports
from tests.support.rabbitmq import Names, amqp_publish
from tests.support.waits import until, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]

PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool_check(text: str) -> None:
    """``promtool check metrics`` on an exposition: it must find nothing to say."""
    proc = subprocess.run(
        [PROMTOOL, "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stdout + proc.stderr) == (0, ""), proc.stdout + proc.stderr


def values(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def scrape_on_a_worker(gw: ChildGateway) -> tuple[int, str]:
    """GET /metrics on a new connection; the worker that accepted it, and the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        local = writer.get_extra_info("sockname")[1]
        worker = 0

        def accepted() -> bool:
            nonlocal worker
            for pid in gw.workers():
                if local in client_ports(pid, gw.port):
                    worker = pid
                    return True
            return False

        await until(accepted, "a worker accepted the scrape's connection")
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(30):
            answer = await reader.read()
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return worker, body.decode()


async def test_promtool_accepts_the_metrics_of_a_running_gateway(names: Names) -> None:
    with child_gateway(names.env()) as gw:
        await wait_ready(gw.url)
        async with Listener(f"{gw.url}/events/p") as sub:
            await sub.wait_started()
            await amqp_publish(names, [("p", b"x", None)])
            await sub.wait_for(1)
            async with httpx.AsyncClient(base_url=gw.url) as http:
                text = (await http.get("/metrics")).text
    promtool_check(text)
    assert values(text)["hopcast_deliveries_total"] == 1


async def test_every_worker_answers_for_the_whole_gateway(names: Names) -> None:
    events = 5
    with child_gateway(names.env(), "--workers", "2") as gw:
        await wait_ready(gw.url)
        await until(lambda: len(gw.workers()) == 2, "two workers")
        async with contextlib.AsyncExitStack() as stack:
            subs = await _subscribers_on_both_workers(stack, gw)
            await amqp_publish(names, [("m", b"%d" % i, None) for i in range(events)])
            for sub in subs:
                await sub.wait_for(events)
            whole = {
                "hopcast_subscribers": len(subs),
                "hopcast_deliveries_total": len(subs) * events,
                "hopcast_events_total": 2 * events,  # each worker reads every event
                "hopcast_workers": 2,
                "hopcast_ready": 1,
            }

            # Another worker's report may be a quarter of a second old: wait for the
            # first full answer; from then on every scrape gives it, whoever answers.
            answered: dict[int, int] = {}
            got: dict[str, float] = {}
            for _ in range(400):
                got = _figures((await scrape_on_a_worker(gw))[1], whole)
                if got == whole:
                    break
            assert got == whole, "no scrape answered for the whole gateway"
            while len(answered) < 2 or min(answered.values()) < 3:
                worker, text = await scrape_on_a_worker(gw)
                assert _figures(text, whole) == whole, (worker, text)
                promtool_check(text)
                answered[worker] = answered.get(worker, 0) + 1
                assert sum(answered.values()) < 100, answered  # both workers answer scrapes


async def test_a_restarted_worker_s_counts_stay_in_the_total(names: Names) -> None:
    events = 4
    with child_gateway(names.env(), "--workers", "2") as gw:
        await wait_ready(gw.url)
        await until(lambda: len(gw.workers()) == 2, "two workers")
        async with contextlib.AsyncExitStack() as stack:
            subs = await _subscribers_on_both_workers(stack, gw)
            await amqp_publish(names, [("m", b"%d" % i, None) for i in range(events)])
            for sub in subs:
                await sub.wait_for(events)
            delivered = len(subs) * events
            await until_figure(gw, "hopcast_deliveries_total", delivered)

            victim, survivor = gw.workers()
            staying = len(client_ports(survivor, gw.port))  # its subscribers' connections
            os.kill(victim, signal.SIGKILL)
            # Through the death and the restart, the counter never goes back.
            seen: list[float] = []
            figures: dict[str, float] = {}
            for _ in range(2000):
                figures = values((await scrape_on_a_worker(gw))[1])
                seen.append(figures["hopcast_deliveries_total"])
                if figures["hopcast_worker_restarts_total"] == 1 and figures["hopcast_ready"]:
                    break
            assert figures["hopcast_worker_restarts_total"] == 1, figures
            assert figures["hopcast_ready"] == 1, "the new worker never got ready"
            assert seen == sorted(seen) and seen[0] >= delivered, seen
            assert victim not in gw.workers() and len(gw.workers()) == 2
            assert figures["hopcast_workers"] == 2
            assert figures["hopcast_subscribers"] == staying


def _figures(text: str, wanted: dict[str, int]) -> dict[str, float]:
    got = values(text)
    return {name: got.get(name, -1) for name in wanted}


async def until_figure(gw: ChildGateway, name: str, value: float) -> None:
    async with httpx.AsyncClient(base_url=gw.url) as http:
        for _ in range(600):
            if values((await http.get("/metrics")).text).get(name) == value:
                return
            await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never reached {value}")


async def _subscribers_on_both_workers(
    stack: contextlib.AsyncExitStack, gw: ChildGateway
) -> list[Listener]:
    """Subscribers to ``m``, opened until each worker holds at least one."""
    subs: list[Listener] = []
    workers = gw.workers()

    def held(pid: int) -> int:
        return len(client_ports(pid, gw.port))

    while min(held(pid) for pid in workers) == 0:
        assert len(subs) < 40, [held(pid) for pid in workers]
        sub = await stack.enter_async_context(Listener(f"{gw.url}/events/m"))
        await sub.wait_started()
        subs.append(sub)
    return subs
