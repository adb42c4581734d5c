"""The live page at ``GET /``: plain HTML, CSS and JS from the package, under a strict CSP.

It subscribes with the browser's own ``EventSource`` and publishes with
``fetch``, both at URLs relative to the page, so it works wherever the app is
mounted; with ``--auth jwt`` it sends the cookie, as any page of the same origin.

>>> [route.path for route in page_routes()]
['/', '/page.js', '/page.css']
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Nothing inline, nothing from elsewhere: the page's own files and the gateway's URLs."""
_TYPES = {
    "page.html": "text/html; charset=utf-8",
    "page.js": "text/javascript; charset=utf-8",
    "page.css": "text/css; charset=utf-8",
}


def page_routes() -> list[Route]:
    """``/`` and its two files, each read once from the package."""
    static = resources.files("hopcast._http") / "static"
    files = {name: (static / name).read_bytes() for name in _TYPES}

    def serve(name: str) -> Route:
        body = files[name]
        headers = {
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache",
        }

        async def endpoint(request: Request) -> Response:
            return Response(body, media_type=_TYPES[name], headers=headers)

        path = "/" if name == "page.html" else f"/{name}"
        return Route(path, endpoint, methods=["GET"], name=name)

    return [serve(name) for name in _TYPES]
