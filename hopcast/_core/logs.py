"""Log lines on stderr: text for people, or one JSON object per line for log collectors.

Only the CLI and the worker processes configure logging; an app mounted in
another one logs through whatever that one set up.

>>> record = logging.LogRecord("hopcast._hub.hub", logging.WARNING, "", 0, "lag %d", (3,), None)
>>> line = json.loads(JsonFormatter(worker=False).format(record))
>>> {key: value for key, value in line.items() if key != "time"}
{'level': 'warning', 'logger': 'hopcast._hub.hub', 'message': 'lag 3'}
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

from hopcast._core.settings import Settings

_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}
"""The attributes every record has; any other one came as ``extra=`` and is logged as a field."""


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}``, then ``pid`` in a worker, ``error``
    with the traceback when there is one, and the fields given with ``extra=``."""

    def __init__(self, *, worker: bool) -> None:
        super().__init__()
        self._pid = os.getpid() if worker else None

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self._pid is not None:
            line["pid"] = self._pid
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in line:
                line[key] = value
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(settings: Settings, *, worker: bool = False) -> None:
    """Send the ``hopcast`` logs (and the libraries') to stderr, as ``settings`` say."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter(worker=worker))
    else:
        where = f" [worker {os.getpid()}]" if worker else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s{where} %(name)s: %(message)s")
        )
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
