"""The work queue routes: enqueue, take tasks (stream or pull), settle, dead letters.

Every input is checked before anything is settled: a malformed lease list is a
400 and settles none of it. The status of a settle follows the table in the
README (Work queues): one lease answers 200, 409 (lost) or 403 (another
principal's); several answer 200 with a result for each.

>>> [route.path for route in queue_routes()][:2]
['/queues/{name}', '/queues/{name}/receive']
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Mapping
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hopcast._core.errors import BrokerUnavailable, InvalidInput, NotStarted
from hopcast._core.settings import Settings
from hopcast._http.params import once, token
from hopcast._http.problems import problem
from hopcast._http.routes import over_rate, read_body
from hopcast._http.streaming import StreamHead
from hopcast._http.task_stream import TaskStreamResponse
from hopcast._queue.names import parse_queue_name
from hopcast._queue.queues import WorkQueues
from hopcast._queue.routing import Action
from hopcast._queue.stream import TaskStream
from hopcast._queue.work import WorkQueue
from hopcast._rights.limits import retry_after
from hopcast._rights.principals import QueueAction
from hopcast._rights.tokens import Authorizer

log = logging.getLogger("hopcast.http")  # named by layer: module paths are internal

MAX_PREFETCH = 100
MAX_RECEIVE = 100
MAX_WAIT = 20.0
MAX_LEASES = 100
"""Leases per settle request."""
MAX_DEAD_LISTED = 1000
DEFAULT_DEAD_LISTED = 100
MAX_TYPE_BYTES = 255


def queue_routes() -> list[Route]:
    """The routes under ``/queues``; each answers 404 for a queue the gateway does not serve."""
    return [
        Route("/queues/{name}", enqueue_or_stream, methods=["GET", "POST"]),
        Route("/queues/{name}/receive", receive, methods=["POST"]),
        Route("/queues/{name}/extend", settle_route("extend"), methods=["POST"]),
        Route("/queues/{name}/ack", settle_route("ack"), methods=["POST"]),
        Route("/queues/{name}/nack", settle_route("nack"), methods=["POST"]),
        Route("/queues/{name}/reject", settle_route("reject"), methods=["POST"]),
        Route("/queues/{name}/dead", dead_letters, methods=["GET"]),
        Route("/queues/{name}/dead/redrive", redrive, methods=["POST"]),
    ]


def is_task_stream(method: str, path: str) -> bool:
    """Whether a request opens a task stream (``GET /queues/NAME``), which the listener
    writes as it comes instead of waiting for the whole answer."""
    return method == "GET" and path.startswith("/queues/") and "/" not in path[len("/queues/") :]


def is_long_poll(method: str, path: str) -> bool:
    """Whether a request may wait for its answer (``POST /queues/NAME/receive``): the
    listener watches for its client leaving meanwhile, so that the wait ends with it."""
    return method == "POST" and path.startswith("/queues/") and path.endswith("/receive")


# -- request values -------------------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class LeaseList(_Body):
    leases: Annotated[list[str], Field(min_length=1, max_length=MAX_LEASES)]


class ExtendBody(LeaseList):
    seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)]


class NackBody(LeaseList):
    delay: Seconds = 0.0


class RedriveBody(_Body):
    """Which dead letters to move back: ``ids`` absent moves them all; ``null`` is refused."""

    ids: Annotated[list[Annotated[str, Field(max_length=255)]], Field(max_length=10_000)] | None = (
        None
    )

    @field_validator("ids", mode="before")
    @classmethod
    def _not_null(cls, given: object) -> object:
        # Runs only on a value the body gave: an absent ``ids`` keeps its default.
        if given is None:
            raise ValueError("leave ids out to move every dead letter; null is not a list")
        return given


_M = TypeVar("_M", bound=_Body)


def _parse_body(model: type[_M], body: bytes) -> _M:
    """``body`` as JSON of ``model``'s shape, or `InvalidInput` saying where it is not."""
    try:
        data = json.loads(body) if body.strip() else {}
    except (ValueError, RecursionError):
        raise InvalidInput("the body must be a JSON object") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(part) for part in err["loc"]) or "the body"
        raise InvalidInput(f"{where}: {err['msg']}") from None


def _number(request: Request, name: str, default: float, low: float, high: float) -> float:
    """A query parameter that is a number from ``low`` to ``high``."""
    text = once(request, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise InvalidInput(f"?{name}= must be a number from {low:g} to {high:g}, got {text[:40]!r}")
    return value


def _count(request: Request, name: str, default: int, high: int) -> int:
    """A query parameter that is a whole number from 1 to ``high``."""
    text = once(request, name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) < 8 and 1 <= int(text) <= high):
        raise InvalidInput(f"?{name}= must be a whole number from 1 to {high}, got {text[:40]!r}")
    return int(text)


def _lease_seconds(request: Request, settings: Settings) -> float:
    """``?lease=``: seconds, above 0 and at most ``--max-lease``."""
    seconds = _number(request, "lease", settings.lease, 0, settings.max_lease)
    if seconds <= 0:
        raise InvalidInput("?lease= must be above 0 seconds")
    return seconds


def _task_type(request: Request) -> str | None:
    """``?type=``: the task's AMQP ``type``, at most 255 bytes of printable text."""
    text = once(request, "type")
    if text is None:
        return None
    if not text or len(text.encode()) > MAX_TYPE_BYTES or not text.isprintable():
        raise InvalidInput(f"?type= is 1-{MAX_TYPE_BYTES} bytes of printable text")
    return text


# -- the queue, the principal ---------------------------------------------------------


def _queues(request: Request) -> WorkQueues:
    queues: WorkQueues | None = getattr(request.app.state, "queues", None)
    if queues is None:
        raise NotStarted("the gateway's lifespan has not run: it serves no work queue yet")
    return queues


def _queue(request: Request, action: QueueAction) -> tuple[WorkQueue, str | None]:
    """The queue the path names and the principal's subject (who owns its leases), checked."""
    name = parse_queue_name(request.path_params["name"])
    auth: Authorizer = request.app.state.auth
    # rights first: which queues exist is no one's business but those who may use them
    principal = auth.authorize_queue(token(request, auth), action, name)
    return _queues(request).get(name), principal.subject if principal is not None else None


def _unavailable(settings: Settings, what: str, exc: BrokerUnavailable) -> Response:
    log.info("%s answered 503: %s", what, exc)
    return problem(
        503,
        "Broker unavailable",
        f"{what} did not happen: the broker refused or is away ({exc}); try again",
        headers={"Retry-After": retry_after(settings.retry / 1000)},
    )


async def _body(request: Request, settings: Settings) -> bytes:
    try:
        return await read_body(request, settings.max_event_bytes)
    except ClientDisconnect:  # a truncated or malformed body
        raise InvalidInput("the connection closed before the body ended") from None


# -- the routes -------------------------------------------------------------------


async def enqueue_or_stream(request: Request) -> Response:
    """``/queues/{name}``: one route for both methods, so a 405 lists both in ``Allow``."""
    if request.method == "POST":
        return await enqueue(request)
    return await task_stream(request)


async def enqueue(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    queue, owner = _queue(request, "enqueue")
    kind = _task_type(request)
    too_many = over_rate(request, owner, token(request, request.app.state.auth), "enqueue")
    if too_many is not None:
        return too_many
    body = await _body(request, settings)
    task_id = uuid.uuid4().hex
    try:
        await queue.enqueue(body, kind, task_id)
    except BrokerUnavailable as exc:
        return _unavailable(settings, f"enqueue on {queue.name}", exc)
    return JSONResponse({"id": task_id}, 202)


async def task_stream(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    prefetch = _count(request, "prefetch", 1, MAX_PREFETCH)
    seconds = _lease_seconds(request, settings)
    queue, owner = _queue(request, "consume")
    if request.method == "HEAD":
        return StreamHead()  # checked as a GET is; nothing to stream
    return TaskStreamResponse(TaskStream(queue, prefetch, owner, seconds), settings)


async def receive(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    most = _count(request, "max", 1, MAX_RECEIVE)
    wait = _number(request, "wait", 0.0, 0.0, MAX_WAIT)
    seconds = _lease_seconds(request, settings)
    queue, owner = _queue(request, "consume")
    try:
        tasks = await queue.receive(owner, most, wait, seconds)
    except BrokerUnavailable as exc:
        return _unavailable(settings, f"receive on {queue.name}", exc)
    return JSONResponse({"tasks": tasks})


def settle_route(action: Action) -> Any:
    """The route that acks, nacks, rejects or extends the leases in the body."""
    shapes: dict[Action, type[LeaseList]] = {"extend": ExtendBody, "nack": NackBody}

    async def settle(request: Request) -> Response:
        settings: Settings = request.app.state.settings
        queue, owner = _queue(request, "consume")
        asked = _parse_body(shapes.get(action, LeaseList), await _body(request, settings))
        seconds = asked.seconds if isinstance(asked, ExtendBody) else 0.0
        seconds = asked.delay if isinstance(asked, NackBody) else seconds
        try:
            settled = await queue.settle(asked.leases, action, owner, seconds=seconds)
        except BrokerUnavailable as exc:  # the owner of a lease did not answer: nothing claimed
            return _unavailable(settings, f"{action} on {queue.name}", exc)
        return _settled(settled.results, settled.expires)

    settle.__name__ = action
    return settle


def _settled(results: Mapping[str, str], expires: Mapping[str, str]) -> Response:
    """200 with each lease's result; one lease alone that was not settled: 409 or 403."""
    body: dict[str, Any] = {"results": dict(results)}
    if expires:
        body["expires"] = dict(expires)
    if len(results) == 1:
        outcome = next(iter(results.values()))
        if outcome == "lost":
            detail = (
                "the lease is lost: it expired, was settled or given back, or its task came again"
            )
            return problem(409, "Lease lost", detail)
        if outcome == "forbidden":
            return problem(403, "Forbidden", "the lease was granted to another principal")
    return JSONResponse(body)


async def dead_letters(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    most = _count(request, "max", DEFAULT_DEAD_LISTED, MAX_DEAD_LISTED)
    queue, _ = _queue(request, "consume")
    try:
        dead = await queue.dead_letters(most)
    except BrokerUnavailable as exc:
        return _unavailable(settings, f"listing the dead letters of {queue.name}", exc)
    return JSONResponse({"dead": dead})


async def redrive(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    queue, _ = _queue(request, "enqueue")
    asked = _parse_body(RedriveBody, await _body(request, settings))
    ids = frozenset(asked.ids) if asked.ids is not None else None
    try:
        moved = await queue.redrive(ids)
    except BrokerUnavailable as exc:
        return _unavailable(settings, f"redriving the dead letters of {queue.name}", exc)
    return JSONResponse({"redriven": moved})
