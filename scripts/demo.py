"""Run the gateway and show it working: subscribe, publish, watch the events arrive.

Uses RabbitMQ at localhost:5672 when it answers, else says so and uses the
embedded memory:// broker. Leaves the gateway running until Ctrl-C (``--once``
stops after the demonstration).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

import httpx

from hopcast._client import Client

AMQP = "amqp://guest:guest@localhost:5672/"


def rabbitmq_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError:
        return False
    return True


async def show(url: str) -> None:
    async with httpx.AsyncClient(base_url=url) as http:
        for _ in range(300):
            try:
                if (await http.get("/readyz")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
        else:
            raise SystemExit("the gateway did not become ready; see its log above")

        async def publish(client: Client) -> None:
            # subscribed once the stream's position came (the client has no event for it)
            while client.last_event_id is None:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            for i, (topic, event) in enumerate(
                [("demo.orders", "order-paid"), ("demo.chat", None), ("demo.orders", "shipped")]
            ):
                params = {"event": event} if event else {}
                body = f'{{"n": {i}, "topic": "{topic}"}}'
                resp = await http.post(f"/events/{topic}", content=body, params=params)
                print(f"  POST /events/{topic} -> {resp.status_code}")

        print(f"subscribed: GET {url}/events/demo.*")
        async with Client(url, ["demo.*"]) as client:
            task = asyncio.create_task(publish(client))
            seen = 0
            async for event in client:
                print(f"  received id={event.id} event={event.event} data={event.data}")
                seen += 1
                if seen == 3:
                    break
        await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--once", action="store_true", help="stop after the demonstration")
    args = parser.parse_args()
    port = os.environ.get("HOPCAST_PORT", "8080")
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
    env = {**os.environ, "HOPCAST_BROKER": broker, "HOPCAST_PORT": port}
    server = subprocess.Popen([sys.executable, "-m", "hopcast", "serve"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(show(url))
        print(f"\nhopcast is serving {url}")
        print(f"  subscribe: curl -N '{url}/events/demo.*'")
        print(f"  publish:   curl -X POST '{url}/events/demo.hello?event=greeting' -d 'hi'")
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
