"""The command line: ``hopcast serve | publish | listen``.

Only the CLI configures logging. Every ``serve`` flag has a ``HOPCAST_*``
variable; a flag wins over its variable.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sys
from typing import Any, Literal, get_args, get_origin

import click

from hopcast._core.errors import ConfigError
from hopcast._core.logs import configure_logging
from hopcast._core.settings import PREFIX, Settings

log = logging.getLogger("hopcast")


def _serve_flags() -> list[Any]:
    """One click option per `Settings` field, help and default taken from the field."""
    flags = []
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = PREFIX + name.upper()
        if isinstance(field.default, bool):
            help_ = f"{field.description} [env: {env}]"
            flags.append(click.option(flag, is_flag=True, default=None, help=help_))
            continue
        if name == "log_level":
            kind: Any = click.Choice(["debug", "info", "warning", "error"])
        elif get_origin(field.annotation) is Literal:
            kind = click.Choice(list(get_args(field.annotation)))
        else:
            kind = {int: int, float: float}.get(type(field.default), str)
        multiple = isinstance(field.default, tuple)
        default = ",".join(field.default) if multiple else field.default
        shown = "" if default in (None, "") else f" (default {default})"
        flags.append(
            click.option(
                flag,
                type=kind,
                multiple=multiple,
                default=() if multiple else None,
                help=f"{field.description}{shown} [env: {env}]",
            )
        )
    return flags


@click.group()
@click.version_option(package_name="hopcast")
def main() -> None:
    """hopcast: a Server-Sent Events gateway for RabbitMQ."""


def _serve_command(func: Any) -> Any:
    for flag in reversed(_serve_flags()):
        func = flag(func)
    return func


@main.command()
@_serve_command
def serve(**flags: Any) -> None:
    """Run the gateway."""
    for name, value in flags.items():
        if isinstance(value, tuple):
            flags[name] = value or None
    try:
        settings = Settings.from_env(os.environ, **flags)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    configure_logging(settings)
    from hopcast._supervisor import run

    try:
        run(settings)
    except ConfigError as exc:  # found only once the gateway starts: an address in use
        raise click.ClickException(str(exc)) from None


def _text(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """UTF-8 text (the shell passes any bytes), for what goes in the URL."""
    for item in value if isinstance(value, tuple) else [value]:
        if item is None:
            continue
        try:
            item.encode()
        except UnicodeEncodeError:  # bytes that are not UTF-8 come as lone surrogates
            raise click.BadParameter(f"{item!r} is not UTF-8 text") from None
    return value


def _header(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Visible ASCII, for what goes in a header."""
    if value is not None and not (value.isascii() and value.isprintable()):
        raise click.BadParameter(f"{value!r} is not visible ASCII")
    return value


def _gateway_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    import httpx

    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, UnicodeError):
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL")
    return value


url_option = click.option(
    "--url",
    callback=_gateway_url,
    default="http://127.0.0.1:8080",
    show_default=True,
    help="gateway URL",
)
token_option = click.option(
    "--token",
    callback=_header,
    envvar="HOPCAST_TOKEN",
    default=None,
    help="bearer token, for a gateway run with --auth jwt [env: HOPCAST_TOKEN]",
)


@main.command("publish")
@click.argument("topic", callback=_text)
@click.argument("data")
@click.option("--event", callback=_text, default=None, help="event name (the SSE event: field)")
@url_option
@token_option
def publish_command(topic: str, data: str, event: str | None, url: str, token: str | None) -> None:
    """Publish DATA on TOPIC through a running gateway (DATA "-": read it from stdin)."""
    import httpx

    params = {"event": event} if event else {}
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    # the argument's own bytes, as the shell passed them: the gateway judges them
    body = sys.stdin.buffer.read() if data == "-" else os.fsencode(data)
    try:
        response = httpx.post(f"{url}/events/{topic}", content=body, params=params, headers=headers)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the gateway at {url}: {exc}") from None
    if response.status_code != 202:
        raise click.ClickException(f"{response.status_code}: {response.text}")
    click.echo(response.text)


@main.command("listen")
@click.argument("patterns", callback=_text, nargs=-1, required=True)
@url_option
@click.option("--last-event-id", callback=_header, default=None, help="resume after this event id")
@click.option(
    "--since", callback=_text, default=None, help="start at 'first' or an ISO-8601 time, not now"
)
@click.option("--count", type=int, default=None, help="stop after this many events")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per event: id, event, data")
@token_option
def listen_command(
    patterns: tuple[str, ...],
    *,
    url: str,
    last_event_id: str | None,
    since: str | None,
    count: int | None,
    as_json: bool,
    token: str | None,
) -> None:
    """Print the events of PATTERNS as they come (resuming across reconnects)."""
    from hopcast._client import Client
    from hopcast._core.errors import SubscriptionRefused

    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the retries, on stderr

    async def go() -> None:
        seen = 0
        async with Client(
            url, list(patterns), last_event_id=last_event_id, since=since, token=token
        ) as client:
            async for event in client:
                if as_json:
                    click.echo(json.dumps(dataclasses.asdict(event), ensure_ascii=False))
                else:
                    click.echo(f"{event.id}\t{event.event}\t{event.data}")
                seen += 1
                if count is not None and seen >= count:
                    return

    try:
        asyncio.run(go())
    except SubscriptionRefused as exc:
        raise click.ClickException(str(exc)) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
