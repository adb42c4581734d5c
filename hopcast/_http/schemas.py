"""The OpenAPI document's components: its schemas, headers, problem responses and security.

What the operations refer to (``$ref``) rather than repeat, and the patterns a
topic and an offset must fit; `hopcast._http.openapi` assembles the document.

>>> sorted(components(Settings.from_env({"HOPCAST_BROKER": "memory://"})))
['headers', 'responses', 'schemas']
"""

from __future__ import annotations

from typing import Any

from hopcast._core.settings import Settings
from hopcast._core.topics import MAX_TOPIC_BYTES, MAX_WORD_CHARS

PROBLEM = "application/problem+json"
WORD = f"[A-Za-z0-9_:-]{{1,{MAX_WORD_CHARS}}}"
MAX_TOPIC_WORDS = (MAX_TOPIC_BYTES + 1) // 2
Schema = dict[str, Any]
_SPACE = "".join(f"\\u{c:04x}" for c in range(0x10000) if chr(c).isspace())
OFFSET = f"^[{_SPACE}]*(?:-?[0-9]{{1,20}})?[{_SPACE}]*$"
"""What ``parse_offset`` may accept: blank is ignored, surrounding space (str.strip) too."""


def ref(name: str) -> Schema:
    """A reference to the problem response ``name`` of the components."""
    return {"$ref": f"#/components/responses/{name}"}


def topic_schema(depth: int, *, wildcards: bool) -> Schema:
    """A topic of at most ``depth`` words, or with ``wildcards`` a pattern."""
    word = f"(?:{WORD}|\\*|#)" if wildcards else WORD
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_TOPIC_BYTES,
        "pattern": f"^{word}(?:\\.{word}){{0,{depth - 1}}}$",
    }


def components(settings: Settings) -> Schema:
    """The components of the document of the gateway configured by ``settings``."""
    parts: Schema = {
        "schemas": _schemas(),
        "headers": _headers(),
        "responses": _responses(settings),
    }
    if settings.auth == "jwt":
        parts["securitySchemes"] = _security_schemes(settings)
    return parts


def _schemas() -> Schema:
    return {
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
    }


def _headers() -> Schema:
    return {
        "Retry-After": {
            "description": "Whole seconds to wait, at least 1.",
            "schema": {"type": "string", "pattern": "^[1-9][0-9]*$"},
        },
        "WWW-Authenticate": {
            "description": "A Bearer challenge (RFC 6750).",
            "schema": {"type": "string", "pattern": "^Bearer "},
        },
        "Allow": {"description": "The methods this path takes.", "schema": {"type": "string"}},
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


def _security_schemes(settings: Settings) -> Schema:
    return {
        "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        "cookie": {"type": "apiKey", "in": "cookie", "name": settings.cookie_name},
        "query": {
            "type": "apiKey",
            "in": "query",
            "name": "access_token",
            "description": "Only with --allow-query-token.",
        },
    }
