"""Problem details (RFC 9457): every refusal the gateway answers, and the app's error handlers.

>>> problem(404, "Not found", "no route for /nowhere").media_type
'application/problem+json'
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ExceptionHandler

from hopcast._core.errors import Forbidden, InvalidInput, NotStarted, Unauthorized, UnknownQueue

log = logging.getLogger("hopcast.http")  # named by layer: module paths are internal


def problem(
    status: int, title: str, detail: str, *, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An RFC 9457 problem details response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return JSONResponse(body, status, headers=headers, media_type="application/problem+json")


class ProblemCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, its refused preflights answered as problem details."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = bytes(response.body).decode().removeprefix("Disallowed CORS ")
        kept = {
            name: value
            for name, value in response.headers.items()
            if name not in ("content-length", "content-type")
        }
        detail = f"this gateway's CORS settings do not allow the request's {refused}"
        return problem(400, "CORS preflight refused", detail, headers=kept)


async def _on_invalid(request: Request, exc: Exception) -> Response:
    return problem(400, "Bad request", str(exc))


async def _on_unauthorized(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, Unauthorized):  # pragma: no cover - registered for Unauthorized
        raise exc
    headers = {"WWW-Authenticate": exc.www_authenticate}
    title = "Unauthorized" if exc.status == 401 else "Bad request"
    return problem(exc.status, title, exc.description, headers=headers)


async def _on_forbidden(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, Forbidden):  # pragma: no cover - registered for Forbidden
        raise exc
    return problem(403, "Forbidden", str(exc), headers={"WWW-Authenticate": exc.www_authenticate})


async def _on_unknown_queue(request: Request, exc: Exception) -> Response:
    return problem(404, "Not found", str(exc))


async def _on_not_started(request: Request, exc: Exception) -> Response:
    log.error("%s", exc)
    return problem(500, "Gateway not started", str(exc))


async def error_response(request: Request, exc: Exception) -> Response:
    """The problem-details answer for a refused request (as the app's handlers give it)."""
    handlers = (
        (Unauthorized, _on_unauthorized),
        (Forbidden, _on_forbidden),
        (InvalidInput, _on_invalid),
        (UnknownQueue, _on_unknown_queue),
        (HTTPException, _on_http),
    )
    for kind, handler in handlers:
        if isinstance(exc, kind):
            return await handler(request, exc)
    raise exc


async def _on_http(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):  # pragma: no cover - registered for HTTPException
        raise exc
    titles = {404: "Not found", 405: "Method not allowed", 413: "Content too large"}
    title = titles.get(exc.status_code, "Error")
    detail = exc.detail if exc.status_code != 404 else f"no route for {request.url.path[:200]}"
    return problem(exc.status_code, title, str(detail), headers=exc.headers)


EXCEPTION_HANDLERS: Mapping[type[Exception], ExceptionHandler] = {
    InvalidInput: _on_invalid,
    HTTPException: _on_http,
    Unauthorized: _on_unauthorized,
    Forbidden: _on_forbidden,
    UnknownQueue: _on_unknown_queue,
    NotStarted: _on_not_started,
}
"""The app's handlers: each refusal the routes raise, answered as problem details."""
