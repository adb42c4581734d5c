"""The command line: ``hopcast serve | publish | listen``.

Only the CLI configures logging. Every ``serve`` flag has a ``HOPCAST_*``
variable; a flag wins over its variable.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import Any

import click

from hopcast.config import Settings
from hopcast.errors import ConfigError

log = logging.getLogger("hopcast")


def _flag(name: str, type_: Any, help_: str, *, multiple: bool = False) -> Any:
    env = "HOPCAST_" + name.replace("-", "_").upper()
    return click.option(
        f"--{name}",
        type=type_,
        multiple=multiple,
        default=None if not multiple else (),
        help=f"{help_} [env: {env}]",
        show_default=False,
    )


_SERVE_FLAGS = [
    _flag(
        "broker",
        str,
        "broker URL; repeat for failover; memory:// for the embedded one",
        multiple=True,
    ),
    _flag("host", str, "address to listen on (default 127.0.0.1)"),
    _flag("port", int, "port (default 8080)"),
    _flag("workers", int, "processes sharing the port (default 1)"),
    _flag("exchange", str, "topic exchange (default hopcast)"),
    _flag("stream", str, "stream queue (default hopcast.events)"),
    _flag("stream-max-age", int, "stream retention, seconds (default 86400)"),
    _flag("stream-max-bytes", int, "stream retention, bytes (default 1000000000)"),
    _flag("stream-segment-bytes", int, "stream segment size, bytes (default 50000000)"),
    _flag("heartbeat", float, "heartbeat on quiet streams, seconds (default 15)"),
    _flag("retry", int, "reconnection delay sent to clients, milliseconds (default 3000)"),
    _flag("queue-size", int, "events queued per subscriber before it is cut off (default 1000)"),
    _flag("ring-size", int, "latest events kept in memory for resumes (default 10000)"),
    _flag("max-event-bytes", int, "largest event body, bytes (default 1048576)"),
    _flag("prefetch", int, "stream consumer prefetch (default 1000)"),
    _flag("amqp-heartbeat", int, "AMQP heartbeat, seconds (default 10)"),
    _flag("shutdown-grace", float, "seconds open streams get on shutdown (default 5)"),
    _flag("memory-max-events", int, "retention of memory://, events (default 1000000)"),
    _flag("log-level", str, "debug, info, warning or error (default info)"),
]


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@click.group()
@click.version_option(package_name="hopcast")
def main() -> None:
    """hopcast: a Server-Sent Events gateway for RabbitMQ."""


def _serve_command(func: Any) -> Any:
    for flag in reversed(_SERVE_FLAGS):
        func = flag(func)
    return func


@main.command()
@_serve_command
def serve(**flags: Any) -> None:
    """Run the gateway."""
    flags["broker"] = tuple(flags["broker"]) or None
    try:
        settings = Settings.from_env(os.environ, **flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    _configure_logging(settings.log_level)
    from hopcast.server import run

    run(settings)


@main.command("publish")
@click.argument("topic")
@click.argument("data")
@click.option("--event", default=None, help="event name (the SSE event: field)")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="gateway URL")
def publish_command(topic: str, data: str, event: str | None, url: str) -> None:
    """Publish DATA on TOPIC through a running gateway."""
    import httpx

    params = {"event": event} if event else {}
    response = httpx.post(f"{url}/events/{topic}", content=data.encode(), params=params)
    if response.status_code != 202:
        raise click.ClickException(f"{response.status_code}: {response.text}")
    click.echo(response.text)


@main.command("listen")
@click.argument("patterns", nargs=-1, required=True)
@click.option("--url", default="http://127.0.0.1:8080", show_default=True, help="gateway URL")
@click.option("--last-event-id", default=None, help="resume after this event id")
@click.option("--count", type=int, default=None, help="stop after this many events")
def listen_command(
    patterns: tuple[str, ...], url: str, last_event_id: str | None, count: int | None
) -> None:
    """Print the events of PATTERNS as they come (resuming across reconnects)."""
    from hopcast.client import Client

    async def go() -> None:
        seen = 0
        async with Client(url, list(patterns), last_event_id=last_event_id) as client:
            async for event in client:
                click.echo(f"{event.id}\t{event.event}\t{event.data}")
                seen += 1
                if count is not None and seen >= count:
                    return

    asyncio.run(go())
