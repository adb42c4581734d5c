"""deploy/nginx.conf in front of two gateways: unbuffered streams, resumes across gateways,
HTTP/2 for curl and for Chromium's EventSource, and the client's address passed on."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.deploy.nginx import Nginx, nginx_in_front
from tests.support.browser import chromium, wait_true
from tests.support.clients import Listener, metric
from tests.support.processes import ChildGateway
from tests.support.rabbitmq import Names, amqp_publish
from tests.support.sse import Event, EventStream
from tests.support.waits import until, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]

CURL = shutil.which("curl") or "/usr/bin/curl"


@dataclass
class Front:
    """Two gateways on one stream, and nginx in front of them."""

    gateways: list[ChildGateway]
    nginx: Nginx

    async def subscribers(self) -> list[float]:
        """Each gateway's open subscriptions, asked of it directly."""
        counts = []
        for gw in self.gateways:
            async with httpx.AsyncClient(base_url=gw.url) as http:
                counts.append(await metric(http, "hopcast_subscribers"))
        return counts


@contextlib.contextmanager
def _gateways(names: Names, folder: Path, env: dict[str, str]) -> Iterator[list[ChildGateway]]:
    gateways: list[ChildGateway] = []
    try:
        for label in ("one", "two"):
            gateways.append(
                ChildGateway({**names.env(), **env}, log_dir=folder, label=f"gateway-{label}")
            )
        yield gateways
    finally:
        for gw in gateways:
            gw.close()


@contextlib.asynccontextmanager
async def front(names: Names, folder: Path, **env: str) -> AsyncIterator[Front]:
    """Two child gateways (trusting nginx's X-Forwarded-For) behind the documented nginx."""
    settings = {"HOPCAST_TRUSTED_PROXY": "127.0.0.1/32", "HOPCAST_RETRY": "300", **env}
    with _gateways(names, folder, settings) as gateways:
        for gw in gateways:
            await wait_ready(gw.url)
        with nginx_in_front(folder / "nginx", [gw.port for gw in gateways]) as nginx:
            await _wait_answering(nginx)
            yield Front(gateways, nginx)


async def _wait_answering(nginx: Nginx) -> None:
    async with nginx.client() as http:
        for _ in range(600):
            if nginx.proc.poll() is not None:
                raise AssertionError(f"nginx stopped:\n{nginx.error_log()}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise AssertionError(f"nginx did not answer:\n{nginx.error_log()}")


async def test_each_event_arrives_before_the_next_is_published(
    names: Names, tmp_path: Path
) -> None:
    async with (
        front(names, tmp_path) as f,
        f.nginx.client() as http,
        Listener(f"{f.nginx.url}/events/u.*", transport=f.nginx.transport()) as sub,
    ):
        await sub.wait_started()
        assert sub.response_headers is not None
        assert sub.response_headers["content-type"].startswith("text/event-stream")
        for i in range(5):
            answer = await http.post(f"/events/u.{i}", content=b"%d" % i, params={"event": "n"})
            assert answer.status_code == 202, answer.text  # published through nginx too
            # Buffered, this event would sit in nginx until more bytes came.
            got = await sub.wait_for(i + 1)
            assert [e.data for e in got] == [str(n) for n in range(i + 1)]
        # Prometheus scrapes each gateway itself; through the balancer, any one would answer.
        assert (await http.get("/metrics")).status_code == 403


async def test_a_resume_through_nginx_lands_on_the_other_gateway(
    names: Names, tmp_path: Path
) -> None:
    async with front(names, tmp_path) as f:
        async with Listener(f"{f.nginx.url}/events/r", transport=f.nginx.transport()) as sub:
            await sub.wait_started()
            await amqp_publish(names, [("r", b"%d" % i, None) for i in range(5)])
            before = await sub.wait_for(5)
            on = (await f.subscribers()).index(1)
            f.gateways[on].stop()  # the gateway this client was on goes away
            await asyncio.wait_for(sub.ended.wait(), 60)
        last = before[-1].last_event_id

        await amqp_publish(names, [("r", b"%d" % i, None) for i in range(5, 10)])  # meanwhile
        headers = {"Last-Event-ID": last}
        async with Listener(
            f"{f.nginx.url}/events/r", headers, transport=f.nginx.transport()
        ) as back:
            await back.wait_for(5)
            await amqp_publish(names, [("r", b"%d" % i, None) for i in range(10, 13)])
            after = await back.wait_for(8)
            survivor = f.gateways[1 - on]
            async with httpx.AsyncClient(base_url=survivor.url) as http:
                assert await metric(http, "hopcast_subscribers") == 1

        async with Listener(
            f"{f.nginx.url}/events/r?since=first", transport=f.nginx.transport()
        ) as truth:
            stream = await truth.wait_for(13)
    assert [e.data for e in before + after] == [str(i) for i in range(13)]
    assert [e.last_event_id for e in before + after] == [e.last_event_id for e in stream]


async def test_curl_receives_events_over_http2(names: Names, tmp_path: Path) -> None:
    async with front(names, tmp_path) as f:
        curl = await asyncio.create_subprocess_exec(
            CURL,
            "--http2",
            "--silent",
            "--show-error",
            "--no-buffer",
            "--include",
            "--cacert",
            str(f.nginx.certificate.cert),
            f"{f.nginx.url}/events/h.*",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            head, stream = await _read_head(curl)
            assert head.splitlines()[0].strip() == "HTTP/2 200", head
            assert "content-type: text/event-stream" in head.lower(), head
            assert stream.last_event_id != ""  # its first bytes tell its position
            await amqp_publish(names, [(f"h.{i}", b"%d" % i, "tick") for i in range(3)])
            events = await _read_events(curl, stream, 3)
        finally:
            curl.terminate()
            await curl.wait()
    assert [(e.type, e.data) for e in events] == [("tick", "0"), ("tick", "1"), ("tick", "2")]


async def _read_head(curl: asyncio.subprocess.Process) -> tuple[str, EventStream]:
    """The response's head as curl prints it, and the stream read up to its first id."""
    assert curl.stdout is not None
    received = b""
    async with asyncio.timeout(60):
        while b"\r\n\r\n" not in received:
            received += await curl.stdout.read(65536) or b""
        head, _, rest = received.partition(b"\r\n\r\n")
        stream = EventStream()
        stream.feed(rest)
        while stream.last_event_id == "":
            stream.feed(await curl.stdout.read(65536))
    return head.decode(), stream


async def _read_events(
    curl: asyncio.subprocess.Process, stream: EventStream, count: int
) -> list[Event]:
    assert curl.stdout is not None
    events: list[Event] = []
    async with asyncio.timeout(60):
        while len(events) < count:
            piece = await curl.stdout.read(65536)
            assert piece, "curl's stream ended"
            events += stream.feed(piece)
    return events


SPOOFED = {"X-Forwarded-For": "198.51.100.7"}
"""What a client may claim; the gateways believe only what the proxy added."""

SUBSCRIBE = """
(path) => {
  window.got = []; window.opens = 0;
  const source = new EventSource(path);
  source.onopen = () => { window.opens += 1; };
  source.addEventListener("tick", (e) => window.got.push([e.lastEventId, e.data]));
}
"""


@pytest.mark.browser
async def test_chromium_s_eventsource_receives_events_over_http2(
    names: Names, tmp_path: Path
) -> None:
    async with front(names, tmp_path) as f, chromium() as browser:
        context = await browser.new_context(ignore_https_errors=True)
        page = await context.new_page()
        protocols: dict[str, str] = {}

        def received(event: dict[str, Any]) -> None:
            protocols.setdefault(event["type"], event["response"].get("protocol", ""))

        cdp = await context.new_cdp_session(page)
        cdp.on("Network.responseReceived", received)
        await cdp.send("Network.enable")
        await page.goto(f"{f.nginx.url}/healthz")
        await page.evaluate(SUBSCRIBE, "/events/b.*")
        await wait_true(page, "window.opens === 1", 60)
        await amqp_publish(names, [(f"b.{i}", b"%d" % i, "tick") for i in range(3)])
        got = await wait_true(page, "window.got.length === 3 && window.got", 60)
    assert [data for _, data in got] == ["0", "1", "2"]
    assert protocols.get("EventSource") == "h2", protocols
    assert protocols.get("Document") == "h2", protocols


async def test_the_gateways_see_the_client_s_address_not_nginx_s(
    names: Names, tmp_path: Path
) -> None:
    """One stream per client address on each gateway: 127.0.0.2 fills both; 127.0.0.3 gets in.

    Seen as nginx's own address, or as the address a client claims, every client would be
    one, and 127.0.0.3 would be refused.
    """
    async with front(names, tmp_path, HOPCAST_MAX_CONNECTIONS_PER_ADDRESS="1") as f:
        url = f"{f.nginx.url}/events/a"
        async with contextlib.AsyncExitStack() as stack:
            admitted = []
            for _ in range(6):  # some are refused: one per gateway is the limit
                sub = Listener(url, SPOOFED, transport=f.nginx.transport("127.0.0.2"))
                await stack.enter_async_context(sub)
                await until(partial(_answered, sub), "admitted or refused")
                if not sub.ended.is_set():
                    admitted.append(sub)
            assert len(admitted) == 2
            assert await f.subscribers() == [1, 1]

            other = await stack.enter_async_context(
                Listener(url, SPOOFED, transport=f.nginx.transport("127.0.0.3"))
            )
            await other.wait_started()
            assert sorted(await f.subscribers()) == [1, 2]


def _answered(sub: Listener) -> bool:
    """Admitted (its position came) or refused (a retry hint, then the end)."""
    return sub.last_id is not None or sub.ended.is_set()
