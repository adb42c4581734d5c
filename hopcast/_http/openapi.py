"""The OpenAPI document of the HTTP API, served at ``/openapi.json``.

It says what the server really answers under the given settings: the topic
rules and limits come from them, and 401/403 and the security schemes appear
only with ``--auth jwt``.

>>> doc = document(Settings.from_env({"HOPCAST_BROKER": "memory://"}))
>>> doc["openapi"], sorted(doc["paths"])[:2]
('3.0.3', ['/events', '/events/{topic}'])
"""

from __future__ import annotations

from typing import Any

from hopcast._core.settings import Settings
from hopcast._core.sse import MAX_EVENT_NAME_CHARS, RESERVED_PREFIX
from hopcast._core.topics import MAX_TOPIC_BYTES, MAX_WORD_CHARS

PROBLEM = "application/problem+json"
WORD = f"[A-Za-z0-9_:-]{{1,{MAX_WORD_CHARS}}}"
MAX_TOPIC_WORDS = (MAX_TOPIC_BYTES + 1) // 2
Schema = dict[str, Any]
_SPACE = "".join(f"\\u{c:04x}" for c in range(0x10000) if chr(c).isspace())
OFFSET = f"^[{_SPACE}]*(?:-?[0-9]{{1,20}})?[{_SPACE}]*$"
"""What ``parse_offset`` may accept: blank is ignored, surrounding space (str.strip) too."""


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/responses/{name}"}


def _topic_schema(depth: int, *, wildcards: bool) -> Schema:
    word = f"(?:{WORD}|\\*|#)" if wildcards else WORD
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_TOPIC_BYTES,
        "pattern": f"^{word}(?:\\.{word}){{0,{depth - 1}}}$",
    }


def _problem_response(description: str, *headers: str) -> Schema:
    response: Schema = {
        "description": description,
        "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if headers:
        response["headers"] = {h: {"$ref": f"#/components/headers/{h}"} for h in headers}
    return response


def _responses(settings: Settings) -> Schema:
    auth = settings.auth == "jwt"
    responses = {
        "BadRequest": _problem_response(
            "A malformed topic, pattern, Last-Event-ID, since, event name, body or"
            " Authorization header, or too many patterns or words; `detail` says which. A"
            " malformed Authorization header or a refused ?access_token= also gets"
            " `WWW-Authenticate` (RFC 6750 invalid_request).",
            "WWW-Authenticate",
        ),
        "Unauthorized": _problem_response(
            "No token, or one that does not verify (RFC 6750).", "WWW-Authenticate"
        ),
        "Forbidden": _problem_response(
            "The token does not grant this pattern or topic; `detail` names it.",
            "WWW-Authenticate",
        ),
        "NotFound": _problem_response(
            "No such route: any path not listed here; also a topic with a line break (CR or"
            " LF) in a publish, or in a subscription when the app is mounted in another ASGI"
            " server (`hopcast serve` answers that subscription 400)."
        ),
        "MethodNotAllowed": _problem_response(
            "The path exists, not with this method (any method not listed here).", "Allow"
        ),
        "ContentTooLarge": _problem_response(
            f"The body is larger than {settings.max_event_bytes} bytes (--max-event-bytes)."
        ),
        "URITooLong": _problem_response(
            f"The request target is longer than {settings.max_url_bytes} bytes (--max-url-bytes)."
        ),
        "TooManyRequests": _problem_response(
            f"More than {settings.publish_rate:g} publishes per second, after a burst of"
            f" {settings.publish_burst}, from one token (or address without one).",
            "Retry-After",
        ),
        "HeadersTooLarge": _problem_response(
            f"The request headers are larger than {settings.max_header_bytes} bytes"
            " (--max-header-bytes)."
        ),
        "BrokerUnavailable": _problem_response(
            "The broker did not confirm the event; nothing was published, try again.",
            "Retry-After",
        ),
    }
    if not auth:
        del responses["Unauthorized"], responses["Forbidden"]
    return responses


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


def _subscribe(settings: Settings, *, by_path: bool) -> Schema:
    auth = settings.auth == "jwt"
    pattern = _topic_schema(settings.max_pattern_depth, wildcards=True)
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
    where = [in_path, in_query] if by_path else [in_query]
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
        "400": _ref("BadRequest"),
        "414": _ref("URITooLong"),
        "431": _ref("HeadersTooLarge"),
    }
    if by_path:
        responses["404"] = _ref("NotFound")
    if auth:
        responses["401"] = _ref("Unauthorized")
        responses["403"] = _ref("Forbidden")
    operation: Schema = {
        "operationId": "subscribePath" if by_path else "subscribe",
        "summary": "Subscribe to a topic or pattern" if by_path else "Subscribe to several",
        "tags": ["events"],
        "parameters": [*where, *_resume_parameters(), *_query_token(settings)],
        "responses": dict(sorted(responses.items())),
    }
    security = _security(settings, public=True)
    if security:
        operation["security"] = security
    return operation


def _publish(settings: Settings) -> Schema:
    auth = settings.auth == "jwt"
    responses: Schema = {
        "202": {
            "description": "The broker confirmed the event.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Published"}}},
        },
        "400": _ref("BadRequest"),
        "404": _ref("NotFound"),
        "413": _ref("ContentTooLarge"),
        "414": _ref("URITooLong"),
        "429": _ref("TooManyRequests"),
        "431": _ref("HeadersTooLarge"),
        "503": _ref("BrokerUnavailable"),
    }
    if auth:
        responses["401"] = _ref("Unauthorized")
        responses["403"] = _ref("Forbidden")
    body_text = {
        "type": "string",
        "description": f"UTF-8 text, at most {settings.max_event_bytes} bytes; it becomes the"
        " event's data (CR and CRLF come out as LF).",
    }
    operation: Schema = {
        "operationId": "publish",
        "summary": "Publish an event",
        "tags": ["events"],
        "parameters": [
            {
                "name": "topic",
                "in": "path",
                "required": True,
                "description": "The topic (no `*` or `#`).",
                "schema": _topic_schema(MAX_TOPIC_WORDS, wildcards=False),
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
            *_query_token(settings),
        ],
        "requestBody": {
            "required": False,
            "description": "The event's data. Any media type is read as UTF-8 text.",
            "content": {
                "text/plain": {"schema": body_text},
                "application/json": {"schema": {}},
            },
        },
        "responses": dict(sorted(responses.items())),
    }
    security = _security(settings, public=False)
    if security:
        operation["security"] = security
    return operation


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
            "400": _ref("BadRequest"),
            "405": _ref("MethodNotAllowed"),
        },
    }


def _simple(operation_id: str, summary: str, responses: Schema) -> Schema:
    base: Schema = {"414": _ref("URITooLong"), "431": _ref("HeadersTooLarge")}
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


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.0.3 document of the gateway configured by ``settings``."""
    ready = {"$ref": "#/components/schemas/Readiness"}
    paths: Schema = {
        "/events": {"get": _subscribe(settings, by_path=False)},
        "/events/{topic}": {
            "get": _subscribe(settings, by_path=True),
            "post": _publish(settings),
        },
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
    if settings.cors_origin:
        paths["/events"]["options"] = _preflight("preflight")
        paths["/events/{topic}"]["options"] = _preflight("preflightPath")
    components: Schema = {
        "schemas": {
            "Problem": {
                "type": "object",
                "description": "RFC 9457 problem details.",
                "required": ["type", "title", "status", "detail"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string", "minLength": 1},
                    "status": {"type": "integer", "minimum": 400, "maximum": 599},
                    "detail": {"type": "string", "minLength": 1},
                },
            },
            "Published": {
                "type": "object",
                "required": ["topic", "event", "size"],
                "additionalProperties": False,
                "properties": {
                    "topic": {"type": "string"},
                    "event": {"type": "string", "nullable": True},
                    "size": {"type": "integer", "minimum": 0},
                },
            },
            "Readiness": {
                "type": "object",
                "required": ["ready", "broker_connected", "stream_reader", "position"],
                "properties": {
                    "ready": {"type": "boolean"},
                    "broker_connected": {"type": "boolean"},
                    "stream_reader": {"type": "boolean"},
                    "position": {
                        "type": "integer",
                        "minimum": -1,
                        "description": "The last offset dispatched; -1 before any.",
                    },
                },
            },
        },
        "headers": {
            "Retry-After": {
                "description": "Whole seconds to wait, at least 1.",
                "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
            },
            "WWW-Authenticate": {
                "description": "A Bearer challenge (RFC 6750).",
                "schema": {"type": "string", "pattern": "^Bearer "},
            },
            "Allow": {"description": "The methods this path takes.", "schema": {"type": "string"}},
        },
        "responses": _responses(settings),
    }
    if settings.auth == "jwt":
        components["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "cookie": {"type": "apiKey", "in": "cookie", "name": settings.cookie_name},
            "query": {
                "type": "apiKey",
                "in": "query",
                "name": "access_token",
                "description": "Only with --allow-query-token.",
            },
        }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "hopcast",
            "version": _version(),
            "description": "Server-Sent Events gateway for RabbitMQ streams. Every error is"
            " an RFC 9457 problem (`application/problem+json`); an unknown path gets 404"
            " and an unlisted method on a known path 405 (see components/responses).",
        },
        "paths": paths,
        "components": components,
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hopcast")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0"
