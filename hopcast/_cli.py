"""The command line: ``hopcast serve | publish | listen | work``.

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
from typing import Any

import click

from hopcast._core.errors import CannotStart, ConfigError, Refused
from hopcast._core.logs import configure_logging
from hopcast._core.settings import PREFIX, RETIRED, Settings

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
        multiple = isinstance(field.default, tuple)
        default = ",".join(field.default) if multiple else field.default
        shown = "" if default in (None, "") else f" (default {default})"
        flags.append(
            click.option(
                flag,
                type=str,  # parsed by Settings, as the variable is: one path, one message
                multiple=multiple,
                default=() if multiple else None,
                help=f"{field.description}{shown} [env: {env}]",
            )
        )
    for name in RETIRED:  # accepted, to be refused with what replaced it (`Settings.from_env`)
        flags.append(click.option("--" + name.replace("_", "-"), type=str, hidden=True))
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
        raise _BadSetting(str(exc)) from None
    _check_queues(settings)
    configure_logging(settings)
    if settings.workers > 1:
        _check_rights(settings)
    from hopcast._supervisor import run

    try:
        run(settings)
    except CannotStart as exc:  # good settings, but not here or not now: an address in use
        raise click.ClickException(str(exc)) from None
    except ConfigError as exc:  # a value judged as the gateway starts (keys, patterns)
        raise _BadSetting(str(exc)) from None


def _check_queues(settings: Settings) -> None:
    """Judge the queue names before anything starts or logs."""
    from hopcast._queue.queues import queue_names

    try:
        queue_names(settings)
    except ConfigError as exc:
        raise _BadSetting(str(exc)) from None


def _check_rights(settings: Settings) -> None:
    """Judge the auth settings here, before any worker starts: a worker that found them bad
    would only exit and be started again, over and over."""
    from hopcast._rights.tokens import Authorizer

    logging.disable(logging.WARNING)  # each worker says what it checks; this is a dry run
    try:
        Authorizer.from_settings(settings)
    except ConfigError as exc:
        raise _BadSetting(str(exc)) from None
    finally:
        logging.disable(logging.NOTSET)


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


json_option = click.option(
    "--json", "as_json", is_flag=True, help="JSON output, and a refusal as its problem JSON"
)


class _Said(click.ClickException):
    """A failure whose message is shown as it is, without click's ``Error:`` prefix."""

    def show(self, file: Any = None) -> None:
        click.echo(self.message, err=True)


class _BadSetting(click.ClickException):
    """A setting with a bad value: one line naming it and the value, exit status 2."""

    exit_code = 2


def _refused(exc: Refused, as_json: bool) -> click.ClickException:
    """A refusal for a person (status, title and detail), or its problem JSON with ``--json``."""
    if as_json:
        return _Said(exc.body.strip() or json.dumps({"status": exc.status, "title": exc.title}))
    return click.ClickException(str(exc))


@main.command("publish")
@click.argument("topic", callback=_text)
@click.argument("data")
@click.option("--event", callback=_text, default=None, help="event name (the SSE event: field)")
@url_option
@token_option
@json_option
def publish_command(
    topic: str, data: str, *, event: str | None, url: str, token: str | None, as_json: bool
) -> None:
    """Publish DATA on TOPIC through a running gateway (DATA "-": read it from stdin)."""
    import httpx

    from hopcast._client import Client

    # the argument's own bytes, as the shell passed them: the gateway judges them
    body = sys.stdin.buffer.read() if data == "-" else os.fsencode(data)

    async def go() -> None:
        async with Client(url, token=token, publish_retries=0) as client:
            published = await client.publish(topic, body, event=event)
        if as_json:
            click.echo(json.dumps(dataclasses.asdict(published), ensure_ascii=False))
        else:
            name = f", event {published.event}" if published.event else ""
            click.echo(f"published on {published.topic}: {published.size} bytes{name}")

    try:
        asyncio.run(go())
    except Refused as exc:
        raise _refused(exc, as_json) from None
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the gateway at {url}: {exc}") from None


@main.command("listen")
@click.argument("patterns", callback=_text, nargs=-1, required=True)
@url_option
@click.option("--last-event-id", callback=_header, default=None, help="resume after this event id")
@click.option(
    "--since", callback=_text, default=None, help="start at 'first' or an ISO-8601 time, not now"
)
@click.option("--count", type=int, default=None, help="stop after this many events")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="one JSON object per event (id, event, data; missed events too), a refusal as JSON",
)
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
    from hopcast._client import Client, Event

    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # the retries, on stderr

    async def go() -> None:
        seen = 0
        async with Client(url, token=token) as client:
            async for item in client.subscribe(*patterns, last_event_id=last_event_id, since=since):
                if as_json:
                    line = dataclasses.asdict(item)
                    if not isinstance(item, Event):
                        line = {"id": item.id, "event": "hopcast-missed", **line}
                    click.echo(json.dumps(line, ensure_ascii=False))
                elif isinstance(item, Event):
                    click.echo(f"{item.id}\t{item.event}\t{item.data}")
                else:
                    click.echo(
                        f"{item.id}\thopcast-missed\tevents lost ({item.reason}):"
                        f" after {item.requested}, the stream starts at {item.first}"
                    )
                seen += 1
                if count is not None and seen >= count:
                    return

    try:
        asyncio.run(go())
    except Refused as exc:
        raise _refused(exc, as_json) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _command(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    """A command that can be run: a path, or a name found on ``PATH``."""
    import shutil

    _text(ctx, param, value)
    if not value[0]:
        raise click.BadParameter("the command is empty")
    if shutil.which(value[0]) is None:
        raise click.BadParameter(f"{value[0]!r}: no such command (or it is not executable)")
    return value


@main.command("work", context_settings={"ignore_unknown_options": False})
@click.argument("queue", callback=_text)
@click.argument("command", nargs=-1, required=True, callback=_command)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="commands run at once (the stream's prefetch)",
)
@click.option(
    "--lease",
    type=click.FloatRange(0, 86_400, min_open=True),
    default=None,
    help="seconds each task is leased for, extended while its command runs (default: the"
    " gateway's --lease)",
)
@click.option(
    "--grace",
    type=click.FloatRange(0, 86_400),
    default=20.0,
    show_default=True,
    help="seconds running commands get to finish on SIGTERM or Ctrl-C; then they are killed"
    " and their tasks go back (a second signal ends the grace at once)",
)
@click.option(
    "--nack-delay",
    type=click.FloatRange(0, 86_400),
    default=0.0,
    show_default=True,
    help="seconds a failed task waits before it goes back to the queue",
)
@url_option
@token_option
def work_command(
    queue: str,
    command: tuple[str, ...],
    *,
    concurrency: int,
    lease: float | None,
    grace: float,
    nack_delay: float,
    url: str,
    token: str | None,
) -> None:
    """Run COMMAND for each task of QUEUE: `hopcast work QUEUE -- COMMAND ARGS...`.

    The task's body goes to the command's stdin, its id, type and deliveries to
    HOPCAST_TASK_ID, HOPCAST_TASK_TYPE and HOPCAST_TASK_DELIVERIES. Exit status 0
    acks the task, any other nacks it (the queue's delivery limit dead-letters one
    that keeps failing). Stops cleanly on SIGTERM or Ctrl-C.
    """
    import signal

    from hopcast._client import Client
    from hopcast._client.worker import Work, Worker

    logging.basicConfig(level=logging.WARNING, format="%(message)s")  # on stderr
    work = Work(queue, command, concurrency, lease, grace, nack_delay)
    stopped_by: list[int] = []

    async def go() -> None:
        async with Client(url, token=token) as client:
            worker = Worker(client, work)
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, _stop, worker, signum)
            await worker.run()

    def _stop(worker: Worker, signum: int) -> None:
        if worker.stop.is_set():
            worker.hurry.set()
        stopped_by.append(signum)
        worker.stop.set()

    try:
        asyncio.run(go())
    except Refused as exc:
        raise _refused(exc, False) from None
    if stopped_by and stopped_by[0] == signal.SIGINT:
        raise SystemExit(130)
