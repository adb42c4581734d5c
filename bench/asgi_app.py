"""The gateway as a plain ASGI app, for serving under uvicorn or granian in the benchmark.

``hopcast serve`` streams events through its own listener and keeps the ASGI
app for every other request; this factory gives the servers the whole app,
streams included, as when it is mounted in another application, so the two
paths can be measured side by side (targets ``hopcast-uvicorn`` and
``hopcast-granian``). Settings come from ``HOPCAST_*`` variables.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from hopcast import Settings, create_app


def app() -> Starlette:
    """A factory: ``uvicorn --factory bench.asgi_app:app``."""
    return create_app(Settings.from_env(os.environ))
