"""The OpenAPI document of the HTTP API, served at ``/openapi.json``.

It says what the server really answers under the given settings: the topic
rules and limits come from them, and 401/403 and the security schemes appear
only with ``--auth jwt``. Here are the paths and their operations; what they
refer to is in `hopcast._http.schemas`.

>>> doc = document(Settings.from_env({"HOPCAST_BROKER": "memory://"}))
>>> doc["openapi"], sorted(doc["paths"])[1:3]
('3.0.3', ['/events', '/events/{topic}'])
"""

from __future__ import annotations

from typing import Any

from hopcast._core.settings import Settings
from hopcast._core.sse import MAX_EVENT_NAME_CHARS, RESERVED_PREFIX
from hopcast._http.queue_openapi import queue_paths, queue_responses, queue_schemas
from hopcast._http.schemas import (
    MAX_TOPIC_WORDS,
    OFFSET,
    Schema,
    components,
    ref,
    topic_schema,
)


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of the gateway configured by ``settings``."""
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "hopcast",
            "version": _version(),
            "description": "Server-Sent Events gateway for RabbitMQ streams. Every error is"
            " an RFC 9457 problem (`application/problem+json`); an unknown path gets 404"
            " and an unlisted method on a known path 405 (see components/responses).",
        },
        "paths": _paths(settings),
        "components": _components(settings),
    }


def _components(settings: Settings) -> dict[str, Any]:
    parts = components(settings)
    if settings.queue:
        parts["schemas"] |= queue_schemas(settings)
        parts["responses"] |= queue_responses()
    return parts


def _paths(settings: Settings) -> Schema:
    paths: Schema = {
        "/events": {"get": _subscribe(settings, by_path=False)},
        "/events/{topic}": {
            "get": _subscribe(settings, by_path=True),
            "post": _publish(settings),
        },
        **queue_paths(settings),
        **_operations_paths(),
        **(_page_paths() if settings.page_on else {}),
    }
    if settings.cors_origin:
        paths["/events"]["options"] = _preflight("preflight")
        paths["/events/{topic}"]["options"] = _preflight("preflightPath")
    return paths


def _operations_paths() -> Schema:
    """Health, readiness, metrics and this document."""
    ready = {"$ref": "#/components/schemas/Readiness"}
    return {
        "/healthz": _simple(
            "healthz",
            "Alive (route SSE load balancing here)",
            {
                "200": _json(
                    "The process serves requests.",
                    {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"type": "string", "enum": ["alive"]}},
                    },
                )
            },
        ),
        "/readyz": _simple(
            "readyz",
            "Ready: broker connected, stream reader running, ring filled",
            {
                "200": _json("Ready.", ready),
                "503": _json("Not ready (starting, or the broker is away).", ready),
            },
        ),
        "/metrics": _simple(
            "metrics",
            "Prometheus metrics",
            {
                "200": {
                    "description": "Prometheus text format 0.0.4.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        ),
        "/openapi.json": _simple(
            "openapi",
            "This document",
            {"200": _json("The OpenAPI document.", {"type": "object"})},
        ),
    }


def _page_paths() -> Schema:
    """The live page (``--page``) and its two files."""

    def text(media: str, what: str) -> Schema:
        return {"200": {"description": what, "content": {media: {"schema": {"type": "string"}}}}}

    return {
        "/": _simple("page", "The live page", text("text/html", "The page (HTML).")),
        "/page.js": _simple("pageScript", "The live page's script", text("text/javascript", "JS.")),
        "/page.css": _simple("pageStyle", "The live page's style", text("text/css", "CSS.")),
    }


# -- subscribe ------------------------------------------------------------------


def _subscribe(settings: Settings, *, by_path: bool) -> Schema:
    operation: Schema = {
        "operationId": "subscribePath" if by_path else "subscribe",
        "summary": "Subscribe to a topic or pattern" if by_path else "Subscribe to several",
        "tags": ["events"],
        "parameters": [
            *_topic_parameters(settings, by_path=by_path),
            *_resume_parameters(),
            *_query_token(settings),
        ],
        "responses": _stream_responses(settings, by_path=by_path),
    }
    security = _security(settings, public=True)
    if security:
        operation["security"] = security
    return operation


def _topic_parameters(settings: Settings, *, by_path: bool) -> list[Schema]:
    pattern = topic_schema(settings.max_pattern_depth, wildcards=True)
    in_path: Schema = {
        "name": "topic",
        "in": "path",
        "required": True,
        "description": "A topic or pattern: `*` is one word, `#` zero or more (send `#` as `%23`).",
        "schema": pattern,
    }
    in_query: Schema = {
        "name": "topic",
        "in": "query",
        "required": not by_path,
        "description": "A topic or pattern, repeatable (`#` as `%23`); an event that"
        " matches several is sent once."
        + (" These come on top of the one in the path." if by_path else ""),
        "schema": {
            "type": "array",
            "items": pattern,
            "minItems": 0 if by_path else 1,
            "maxItems": settings.max_patterns - 1 if by_path else settings.max_patterns,
        },
        "style": "form",
        "explode": True,
    }
    return [in_path, in_query] if by_path else [in_query]


def _resume_parameters() -> list[Schema]:
    return [
        {
            "name": "Last-Event-ID",
            "in": "header",
            "description": "Resume after this offset: every matching event with a higher"
            " offset, in order, then live. Wins over `lastEventId` and `since`.",
            "schema": {"type": "string", "pattern": OFFSET},
        },
        {
            "name": "lastEventId",
            "in": "query",
            "description": "As the Last-Event-ID header, for clients that cannot set it;"
            " wins over `since`.",
            "schema": {"type": "string", "pattern": OFFSET},
        },
        {
            "name": "since",
            "in": "query",
            "description": "Without a resume point: `first` (the stream's beginning) or an"
            " ISO-8601 time (UTC when it names no zone; a time before 1970 means 1970).",
            "schema": {"type": "string"},
            "examples": {
                "first": {"value": "first"},
                "time": {"value": "2026-01-01T00:00:00Z"},
            },
        },
    ]


def _stream_responses(settings: Settings, *, by_path: bool) -> Schema:
    responses: Schema = {
        "200": {
            "description": "The event stream: `retry:`, a comment, then events and heartbeats"
            " until the client leaves. Over capacity or shutting down, the same 200 carries"
            " only a spread-out `retry:` hint and ends (a browser gives up on any other"
            " status, and comes back after this one).",
            "headers": {
                "Cache-Control": {"schema": {"type": "string", "enum": ["no-cache"]}},
            },
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
        "400": ref("BadRequest"),
        "414": ref("URITooLong"),
        "431": ref("HeadersTooLarge"),
    }
    if by_path:
        responses["404"] = ref("NotFound")
    if settings.auth == "jwt":
        responses["401"] = ref("Unauthorized")
        responses["403"] = ref("Forbidden")
    return dict(sorted(responses.items()))


# -- publish --------------------------------------------------------------------


def _publish(settings: Settings) -> Schema:
    operation: Schema = {
        "operationId": "publish",
        "summary": "Publish an event",
        "tags": ["events"],
        "parameters": [*_publish_parameters(), *_query_token(settings)],
        "requestBody": {
            "required": False,
            "description": "The event's data. Any media type is read as UTF-8 text.",
            "content": {
                "text/plain": {
                    "schema": {
                        "type": "string",
                        "description": "UTF-8 text, at most"
                        f" {settings.max_event_bytes} bytes; it becomes the event's data"
                        " (CR and CRLF come out as LF).",
                    }
                },
                "application/json": {"schema": {}},
            },
        },
        "responses": _publish_responses(settings),
    }
    security = _security(settings, public=False)
    if security:
        operation["security"] = security
    return operation


def _publish_parameters() -> list[Schema]:
    return [
        {
            "name": "topic",
            "in": "path",
            "required": True,
            "description": "The topic (no `*` or `#`).",
            "schema": topic_schema(MAX_TOPIC_WORDS, wildcards=False),
        },
        {
            "name": "event",
            "in": "query",
            "description": "The event name (`event:` line); names starting with"
            f" `{RESERVED_PREFIX}` are the gateway's own.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_EVENT_NAME_CHARS,
                "pattern": f"^(?!{RESERVED_PREFIX})[^\\r\\n\\u0000]+$",
            },
        },
    ]


def _publish_responses(settings: Settings) -> Schema:
    responses: Schema = {
        "202": {
            "description": "The broker confirmed the event.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Published"}}},
        },
        "400": ref("BadRequest"),
        "404": ref("NotFound"),
        "413": ref("ContentTooLarge"),
        "414": ref("URITooLong"),
        "429": ref("TooManyRequests"),
        "431": ref("HeadersTooLarge"),
        "503": ref("BrokerUnavailable"),
    }
    if settings.auth == "jwt":
        responses["401"] = ref("Unauthorized")
        responses["403"] = ref("Forbidden")
    return dict(sorted(responses.items()))


# -- shared by the operations ---------------------------------------------------


def _query_token(settings: Settings) -> list[Schema]:
    if settings.allow_query_token:
        described = "The token, accepted here because --allow-query-token is on."
    else:
        described = "Refused with 400: --allow-query-token is off (URLs end up in logs)."
    return [
        {
            "name": "access_token",
            "in": "query",
            "description": described,
            "schema": {"type": "string"},
        }
    ]


def _security(settings: Settings, *, public: bool) -> list[Schema]:
    if settings.auth != "jwt":
        return []
    schemes: list[Schema] = [{"bearer": []}, {"cookie": []}]
    if settings.allow_query_token:
        schemes.append({"query": []})
    if public and settings.public:
        schemes.append({})
    return schemes


def _preflight(operation_id: str) -> Schema:
    """The CORS preflight (only with --cors-origin): 200 for a listed origin, method and
    headers; a problem naming what is not allowed otherwise."""
    text = {"text/plain": {"schema": {"type": "string"}}}
    header = {"schema": {"type": "string"}}
    return {
        "operationId": operation_id,
        "summary": "CORS preflight",
        "tags": ["cors"],
        "parameters": [
            {"name": "Origin", "in": "header", "required": True, **header},
            {"name": "Access-Control-Request-Method", "in": "header", "required": True, **header},
            {"name": "Access-Control-Request-Headers", "in": "header", **header},
        ],
        "responses": {
            "200": {
                "description": "A listed origin: credentials allowed.",
                "headers": {
                    "Access-Control-Allow-Origin": header,
                    "Access-Control-Allow-Credentials": header,
                    "Access-Control-Allow-Methods": header,
                },
                "content": text,
            },
            "400": ref("BadRequest"),
            "405": ref("MethodNotAllowed"),
        },
    }


def _simple(operation_id: str, summary: str, responses: Schema) -> Schema:
    base: Schema = {"414": ref("URITooLong"), "431": ref("HeadersTooLarge")}
    return {
        "get": {
            "operationId": operation_id,
            "summary": summary,
            "tags": ["operations"],
            "responses": {**responses, **base},
        }
    }


def _json(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hopcast")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
