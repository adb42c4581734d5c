"""The work queue part of the OpenAPI document: its paths, and the schemas they answer with.

Present only when the gateway serves work queues (``--queue``); the queue name
in every path is one of those.

>>> paths = queue_paths(Settings.from_env({"HOPCAST_QUEUE": "mail"}))
>>> sorted(paths)[:2]
['/queues/{name}', '/queues/{name}/ack']
"""

from __future__ import annotations

from hopcast._core.settings import Settings
from hopcast._http.queues import (
    MAX_DEAD_LISTED,
    MAX_LEASES,
    MAX_PREFETCH,
    MAX_RECEIVE,
    MAX_TYPE_BYTES,
    MAX_WAIT,
)
from hopcast._http.schemas import Schema, ref
from hopcast._queue.names import MAX_QUEUE_NAME_BYTES

_RESULT = {"type": "string", "enum": ["ok", "lost", "forbidden"]}
_SETTLES = {
    "ack": "Acknowledge: the tasks are done",
    "nack": "Give the tasks back (after `delay` seconds, held meanwhile)",
    "reject": "Send the tasks straight to the dead letters",
    "extend": "Push the expiry of live leases (never past --max-lease)",
}


def queue_paths(settings: Settings) -> Schema:
    """The ``/queues`` paths of a gateway serving ``settings.queue`` (none: no paths)."""
    if not settings.queue:
        return {}
    paths: Schema = {
        "/queues/{name}": {"get": _stream(settings), "post": _enqueue(settings)},
        "/queues/{name}/receive": {"post": _receive(settings)},
        "/queues/{name}/dead": {"get": _dead(settings)},
        "/queues/{name}/dead/redrive": {"post": _redrive(settings)},
    }
    for action, summary in _SETTLES.items():
        paths[f"/queues/{{name}}/{action}"] = {"post": _settle(settings, action, summary)}
    return dict(sorted(paths.items()))


def queue_schemas(settings: Settings) -> Schema:
    """The schemas the queue operations answer with."""
    if not settings.queue:
        return {}
    text = {"type": "string"}
    return {
        "Task": _object(
            lease=text,
            id=text,
            type={"type": "string", "nullable": True},
            data=text,
            encoding={"type": "string", "enum": ["utf-8", "base64"]},
            deliveries={"type": "integer", "minimum": 1},
            redelivered={"type": "boolean"},
            expires={"type": "string", "format": "date-time"},
        ),
        "Tasks": _object(tasks={"type": "array", "items": {"$ref": "#/components/schemas/Task"}}),
        "Enqueued": _object(id=text),
        "Settled": {
            "type": "object",
            "required": ["results"],
            "additionalProperties": False,
            "properties": {
                "results": {"type": "object", "additionalProperties": _RESULT},
                "expires": {"type": "object", "additionalProperties": text},
            },
        },
        "DeadLetters": _object(
            dead={
                "type": "array",
                "items": _object(
                    id=text,
                    type={"type": "string", "nullable": True},
                    data=text,
                    encoding={"type": "string", "enum": ["utf-8", "base64"]},
                    reason=text,
                    count={"type": "integer"},
                    died={"type": "string", "nullable": True},
                ),
            }
        ),
        "Redriven": _object(redriven={"type": "integer", "minimum": 0}),
    }


def queue_responses() -> Schema:
    """The refusals only queue operations give."""
    problem = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {
        "LeaseLost": {
            "description": "The one lease given is lost: expired, settled, given back, or"
            " its task was delivered again (only the latest lease of a task is valid).",
            "content": problem,
        },
    }


def _object(**properties: Schema) -> Schema:
    return {
        "type": "object",
        "required": sorted(properties),
        "additionalProperties": False,
        "properties": properties,
    }


def _name(settings: Settings) -> Schema:
    return {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "A work queue this gateway serves (--queue); any other name is a 404,"
        f" a name that breaks the topic rules or passes {MAX_QUEUE_NAME_BYTES} bytes a 400.",
        "schema": {"type": "string", "enum": list(settings.queue)},
    }


def _count(name: str, high: int, description: str) -> Schema:
    schema = {"type": "integer", "minimum": 1, "maximum": high}
    return {"name": name, "in": "query", "description": description, "schema": schema}


def _lease(settings: Settings) -> Schema:
    return {
        "name": "lease",
        "in": "query",
        "description": f"Seconds each lease lasts (default {settings.lease:g}).",
        "schema": {
            "type": "number",
            "minimum": 0,
            "exclusiveMinimum": True,
            "maximum": settings.max_lease,
        },
    }


def _operation(
    settings: Settings, operation_id: str, summary: str, responses: Schema, **more: object
) -> Schema:
    common: Schema = {
        "400": ref("BadRequest"),
        "404": ref("NotFound"),
        "414": ref("URITooLong"),
        "431": ref("HeadersTooLarge"),
    }
    if settings.auth == "jwt":
        common |= {"401": ref("Unauthorized"), "403": ref("Forbidden")}
        more["security"] = [{"bearer": []}, {"cookie": []}]
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["queues"],
        **more,
        "responses": dict(sorted({**common, **responses}.items())),
    }


def _json(description: str, schema: str) -> Schema:
    content = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
    return {"description": description, "content": content}


def _stream(settings: Settings) -> Schema:
    return _operation(
        settings,
        "taskStream",
        "Take tasks as an event stream (one competing consumer)",
        {
            "200": {
                "description": "`event: task` events, `id:` the lease token, `data:` a Task;"
                " a comment as heartbeat. Unsettled tasks go back when the connection drops.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            }
        },
        parameters=[
            _name(settings),
            _count("prefetch", MAX_PREFETCH, "Tasks leased at a time."),
            _lease(settings),
        ],
    )


def _enqueue(settings: Settings) -> Schema:
    return _operation(
        settings,
        "enqueue",
        "Enqueue a task",
        {
            "202": _json("The broker confirmed the task.", "Enqueued"),
            "413": ref("ContentTooLarge"),
            "429": ref("TooManyRequests"),
            "503": ref("BrokerUnavailable"),
        },
        parameters=[
            _name(settings),
            {
                "name": "type",
                "in": "query",
                "description": "The task's type (the AMQP `type`).",
                "schema": {"type": "string", "minLength": 1, "maxLength": MAX_TYPE_BYTES},
            },
        ],
        requestBody={
            "required": False,
            "description": f"The task: any bytes, at most {settings.max_event_bytes}.",
            "content": {"application/octet-stream": {"schema": {"type": "string"}}},
        },
    )


def _receive(settings: Settings) -> Schema:
    wait = {"type": "number", "minimum": 0, "maximum": MAX_WAIT}
    return _operation(
        settings,
        "receive",
        "Take tasks, waiting up to `wait` seconds for the first",
        {"200": _json("The tasks leased (maybe none).", "Tasks"), "503": ref("BrokerUnavailable")},
        parameters=[
            _name(settings),
            _count("max", MAX_RECEIVE, "Tasks at most."),
            {"name": "wait", "in": "query", "description": "Seconds.", "schema": wait},
            _lease(settings),
        ],
    )


def _settle(settings: Settings, action: str, summary: str) -> Schema:
    leases = {"type": "array", "minItems": 1, "maxItems": MAX_LEASES, "items": {"type": "string"}}
    properties: Schema = {"leases": leases}
    required = ["leases"]
    if action == "extend":
        properties["seconds"] = {"type": "number", "minimum": 0, "exclusiveMinimum": True}
        required.append("seconds")
    if action == "nack":
        properties["delay"] = {"type": "number", "minimum": 0}
    body = {"type": "object", "required": required, "additionalProperties": False}
    responses: Schema = {
        "200": _json("Settled; with several leases, a result for each.", "Settled"),
        "409": ref("LeaseLost"),
        "413": ref("ContentTooLarge"),
    }
    return _operation(
        settings,
        action,
        summary,
        responses,
        parameters=[_name(settings)],
        requestBody={
            "required": True,
            "content": {"application/json": {"schema": {**body, "properties": properties}}},
        },
    )


def _dead(settings: Settings) -> Schema:
    return _operation(
        settings,
        "deadLetters",
        "List dead letters without taking them",
        {"200": _json("The dead letters, oldest first.", "DeadLetters")}
        | {"503": ref("BrokerUnavailable")},
        parameters=[_name(settings), _count("max", MAX_DEAD_LISTED, "Dead letters at most.")],
    )


def _redrive(settings: Settings) -> Schema:
    ids = {"type": "array", "items": {"type": "string", "maxLength": 255}}
    body = {"type": "object", "additionalProperties": False, "properties": {"ids": ids}}
    return _operation(
        settings,
        "redrive",
        "Move dead letters (these ids, or all) back to the queue",
        {
            "200": _json("How many moved.", "Redriven"),
            "413": ref("ContentTooLarge"),
            "503": ref("BrokerUnavailable"),
        },
        parameters=[_name(settings)],
        requestBody={"required": False, "content": {"application/json": {"schema": body}}},
    )
