"""Run the gateway and show it working: subscribe, publish, watch the events arrive; then a
work queue: enqueue tasks, take them, acknowledge them.

Uses RabbitMQ at localhost:5672 when it answers, else says so and uses the
embedded memory:// broker. Listens on --port, else HOPCAST_PORT, else 8080, and
stops at once, saying so, when that port is taken. Leaves the gateway running
until Ctrl-C (``--once`` stops after the demonstration).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hopcast import Client, Event

AMQP = "amqp://guest:guest@localhost:5672/"
HOST = "127.0.0.1"
QUEUE = "demo.tasks"


def rabbitmq_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        return False
    return True


def port_taken(port: int) -> str | None:
    """Why the demo cannot listen on ``port`` (something else does), or None."""
    with socket.socket() as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def hopcast_command() -> str:
    """The ``hopcast`` beside this Python, as a path that works from the current folder."""
    path = Path(sys.executable).parent / "hopcast"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


async def wait_ready(url: str, server: subprocess.Popen[bytes]) -> None:
    """Until the gateway says it is ready; at once a failure when its process has ended."""
    async with httpx.AsyncClient(base_url=url, timeout=2.0) as http:
        while server.poll() is None:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit(f"the gateway stopped (exit status {server.returncode}); see its log above")


async def show(url: str) -> None:
    async with Client(url) as client:
        events = client.subscribe("demo.*")
        print(f"subscribed: GET {url}/events/demo.*")

        async def publish() -> None:
            # subscribed once the stream's position came (the client has no event for it)
            while events.last_event_id is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            for i, (topic, event) in enumerate(
                [("demo.orders", "order-paid"), ("demo.chat", None), ("demo.orders", "shipped")]
            ):
                await client.publish(topic, f'{{"n": {i}, "topic": "{topic}"}}', event=event)
                print(f"  published on {topic}")

        task = asyncio.create_task(publish())
        seen = 0
        async for item in events:
            if isinstance(item, Event):
                print(f"  received id={item.id} event={item.event} data={item.data}")
            seen += 1
            if seen == 3:
                break
        await task


async def show_queue(url: str) -> None:
    """A work queue's round trip over plain HTTP: enqueue, take (leased), acknowledge."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        print(f"work queue {QUEUE}:")
        for name in ("ann", "bob"):
            await http.post(f"/queues/{QUEUE}", params={"type": "email"}, json={"to": name})
            print(f"  enqueued: POST {url}/queues/{QUEUE}?type=email")
        answer = await http.post(f"/queues/{QUEUE}/receive", params={"max": 10, "wait": 5})
        tasks = answer.json()["tasks"]
        for task in tasks:
            print(f"  leased task {task['id'][:8]} type={task['type']} data={task['data']}")
        leases = [task["lease"] for task in tasks]
        settled = await http.post(f"/queues/{QUEUE}/ack", json={"leases": leases})
        print(f"  acknowledged {len(settled.json()['results'])} task(s)")


def tour(url: str, port: int) -> None:
    cli = hopcast_command()
    url_flag = "" if port == 8080 else f" --url {url}"
    print(f"\nhopcast is serving {url}  (a live page: {url}/)")
    print("Try, in another terminal (the CLI lives in the project's .venv):")
    print(f"  {cli} listen 'demo.*'{url_flag}")
    print(f"  {cli} publish demo.hello hi --event greeting{url_flag}")
    print(f"  curl -N '{url}/events/demo.*'")
    print(f"  curl -X POST '{url}/events/demo.hello?event=greeting' -d 'hi'")
    print(f"  curl -X POST '{url}/queues/{QUEUE}' -d 'a task'")
    print(f"  curl -X POST '{url}/queues/{QUEUE}/receive?wait=20'")
    print(f"(or `source {shlex.quote(str(Path(cli).parent))}/activate` to type just `hopcast`)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="stop after the demonstration")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("HOPCAST_PORT", "8080")),
        help="port to serve on (default: HOPCAST_PORT, else 8080)",
    )
    args = parser.parse_args()
    port: int = args.port
    taken = port_taken(port)
    if taken is not None:
        raise SystemExit(
            f"cannot serve the demo on {HOST}:{port}: {taken} (another program listens there).\n"
            f"Choose another port: HOPCAST_PORT=8081 make demo"
            f" (or {sys.argv[0]} --port 8081)"
        )
    broker = os.environ.get("HOPCAST_BROKER")
    if broker is None:
        if rabbitmq_answers():
            broker = AMQP
            print(f"RabbitMQ answers at localhost:5672: using it ({broker})")
        else:
            broker = "memory://"
            print(
                "RabbitMQ is not reachable at localhost:5672: using the embedded broker (memory://)"
            )
    env = {**os.environ, "HOPCAST_BROKER": broker, "HOPCAST_HOST": HOST, "HOPCAST_PORT": str(port)}
    env.setdefault("HOPCAST_QUEUE", QUEUE)
    server = subprocess.Popen([sys.executable, "-m", "hopcast", "serve"], env=env)
    url = f"http://{HOST}:{port}"
    try:
        asyncio.run(wait_ready(url, server))
        asyncio.run(show(url))
        if QUEUE in env["HOPCAST_QUEUE"].split(","):
            asyncio.run(show_queue(url))
        tour(url, port)
        if args.once:
            return
        print("Ctrl-C stops it.")
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
        time.sleep(0.1)


if __name__ == "__main__":
    main()
