"""A request's parameters, each checked: the patterns, the resume point, the token.

Text a client sends becomes a value or an `InvalidInput` (a 400), never another error.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request

from hopcast._core.errors import InvalidInput, InvalidOffset, InvalidTopic
from hopcast._core.settings import Settings
from hopcast._core.topics import Pattern
from hopcast._hub.subscription import Since
from hopcast._rights.tokens import QUERY_PARAM, Authorizer

MAX_OFFSET = 2**63 - 1
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
"""The earliest ``?since=``: no stream holds anything older."""
HASH_HINT = (
    "; a '#' in a URL starts its fragment, which clients do not send:"
    " write it as %23 (/events/orders.%23)"
)
"""Added to a pattern refused for an empty last word: ``curl .../events/orders.#`` sends
``orders.``, since clients strip the fragment; a raw client sends the ``#`` itself."""


def parse_offset(text: str, source: str) -> int:
    """Parse a Last-Event-ID: an offset from -1 (before the first event) upwards.

    >>> parse_offset("1042", "Last-Event-ID")
    1042
    """
    value = text.strip()
    # removeprefix, not lstrip: "--5" passed the digit test and broke int() (a 500)
    if not value.removeprefix("-").isdigit() or not value.isascii() or len(value) > 20:
        raise InvalidOffset(f"{source} must be an event id (an integer), got {text[:40]!r}")
    offset = int(value)
    if not -1 <= offset <= MAX_OFFSET:
        raise InvalidOffset(f"{source} must be between -1 and {MAX_OFFSET}")
    return offset


def parse_since(text: str) -> Since:
    """Parse ``?since=``: ``first`` or an ISO-8601 time (UTC when no zone is given).

    >>> parse_since("first")
    'first'
    """
    if text == "first":
        return "first"
    if "T" in text and " " in text:
        text = text.replace(" ", "+")  # an unencoded '+' in a URL arrives as a space
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidOffset(
            f"since must be 'first' or an ISO-8601 time, got {text[:40]!r}"
        ) from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    # AMQP timestamps are unsigned: a time before 1970 broke the catch-up consumer
    return max(when, EPOCH)


def patterns(request: Request, settings: Settings) -> list[Pattern]:
    """The patterns of a subscription: the path's, then each ``?topic=``, without repeats."""
    path = request.path_params.get("topic")
    texts = ([path] if path is not None else []) + request.query_params.getlist("topic")
    if not texts:
        raise InvalidInput("name a topic: /events/{topic} or /events?topic=…")
    if len(texts) > settings.max_patterns:
        raise InvalidInput(f"at most {settings.max_patterns} patterns per subscription")
    found = list(dict.fromkeys(_pattern(t, request) for t in texts))
    for pattern in found:
        if len(pattern.words) > settings.max_pattern_depth:
            raise InvalidInput(f"a pattern has at most {settings.max_pattern_depth} words")
    return found


def _pattern(text: str, request: Request) -> Pattern:
    try:
        return Pattern.parse(text)
    except InvalidTopic as exc:
        if text.endswith(".") or not text or request.scope.get("hopcast.fragment"):
            raise InvalidTopic(f"{exc}{HASH_HINT}") from None
        raise


def once(request: Request, name: str) -> str | None:
    """A query parameter that may be given at most once: two would be ambiguous."""
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise InvalidInput(f"give ?{name}= once, not {len(values)} times")
    return values[0] if values else None


def resume_point(request: Request) -> tuple[int | None, Since | None]:
    """Where a subscription starts: after an offset, or at a time, or (both None) live."""
    query, since = once(request, "lastEventId"), once(request, "since")
    header = request.headers.get("last-event-id", "")
    if header.strip():
        return parse_offset(header, "Last-Event-ID"), None
    if query is not None and query.strip():
        return parse_offset(query, "lastEventId"), None
    if since is not None:
        return None, parse_since(since)
    return None, None


def token(request: Request, auth: Authorizer) -> str | None:
    """The request's bearer token, if any (``?access_token=`` at most once)."""
    once(request, QUERY_PARAM)
    return auth.token_from(request.headers, request.cookies, request.query_params)
