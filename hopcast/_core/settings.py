"""Settings: one frozen, typed object built from ``HOPCAST_*`` variables and flag overrides.

Every flag ``--some-name`` has the variable ``HOPCAST_SOME_NAME``; list settings
take a comma-separated value in their variable. The variables are read by
pydantic-settings: ``Settings()`` reads the process's environment,
``Settings.from_env(mapping, **flags)`` a given mapping with flags on top. Plain
data: the layers that need settings build themselves from them.

>>> Settings.from_env({"HOPCAST_PORT": "9000", "HOPCAST_PUBLIC": "news.#, weather.*"}).public
('news.#', 'weather.*')
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from hopcast._core.errors import ConfigError

DEFAULT_BROKER = "amqp://guest:guest@localhost:5672/"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_EXCHANGE = "hopcast"
DEFAULT_STREAM = "hopcast.events"
DEFAULT_STREAM_MAX_AGE = 24 * 3600
DEFAULT_STREAM_MAX_BYTES = 1_000_000_000
DEFAULT_STREAM_SEGMENT_BYTES = 50_000_000
DEFAULT_HEARTBEAT = 15.0
DEFAULT_RETRY_MS = 3000
DEFAULT_SUBSCRIBER_BUFFER = 1000
DEFAULT_QUEUE_DELIVERY_LIMIT = 10
DEFAULT_LEASE = 30.0
DEFAULT_MAX_LEASE = 25 * 60.0
MAX_LEASE_CAP = 29 * 60.0
"""The longest ``--max-lease``: RabbitMQ closes a channel whose delivery stays unacknowledged
past its ``consumer_timeout`` (30 minutes by default), and redelivers everything on it."""
DEFAULT_RING_SIZE = 10_000
DEFAULT_MAX_EVENT_BYTES = 1_048_576
DEFAULT_PREFETCH = 1000
DEFAULT_MAX_WRITE_DELAY = 0.015
DEFAULT_AMQP_HEARTBEAT = 10
DEFAULT_SHUTDOWN_GRACE = 5.0
DEFAULT_MEMORY_MAX_EVENTS = 1_000_000
PREFIX = "HOPCAST_"
DEFAULT_MAX_CONNECTIONS = 15_000
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 500
DEFAULT_MAX_PATTERNS = 32
DEFAULT_MAX_PATTERN_DEPTH = 16
DEFAULT_MAX_URL_BYTES = 4096
DEFAULT_MAX_HEADER_BYTES = 16_384
DEFAULT_PUBLISH_RATE = 100.0
DEFAULT_PUBLISH_BURST = 200
DEFAULT_JWKS_REFRESH = 300.0

Positive = Annotated[int, Field(gt=0)]
Seconds = Annotated[float, Field(gt=0)]
Listed = Annotated[tuple[str, ...], NoDecode]
"""A list setting: its variable holds the items separated by commas."""

RETIRED = {
    "coalesce_ms": (
        "is retired: writes are held only while that saves CPU the gateway is short of,"
        f" at most --max-write-delay seconds (HOPCAST_MAX_WRITE_DELAY, default"
        f" {DEFAULT_MAX_WRITE_DELAY})"
    ),
}
"""Settings that no longer exist, and what replaced them: given one, the gateway stops
with this message rather than run without what was asked for."""

_ENVIRONMENT: ContextVar[Mapping[str, str] | None] = ContextVar("hopcast_env", default=None)


class _Variables(EnvSettingsSource):
    """pydantic-settings' environment source, over the mapping `Settings.from_env` was given."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        env = _ENVIRONMENT.get()
        return {k.lower(): v for k, v in (os.environ if env is None else env).items()}


@contextmanager
def _reading(env: Mapping[str, str]) -> Iterator[None]:
    token = _ENVIRONMENT.set(env)
    try:
        yield
    finally:
        _ENVIRONMENT.reset(token)


def _refuse_retired(env: Mapping[str, str], flags: Mapping[str, Any]) -> None:
    for name, why in RETIRED.items():
        variable = PREFIX + name.upper()
        if name in flags:
            raise ConfigError(f"--{name.replace('_', '-')} {why}")
        if variable in env:
            raise ConfigError(f"{variable} {why}")


class Settings(BaseSettings):
    """Everything the gateway can be told; every field has a flag and a variable."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid")

    broker: Listed = Field(
        (DEFAULT_BROKER,),
        description="broker URL (amqp://, amqps:// or memory://); several amqp URLs fail over",
        min_length=1,
    )
    host: str = Field(DEFAULT_HOST, description="address to listen on")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(DEFAULT_PORT, description="TCP port")
    workers: Positive = Field(1, description="processes serving the same port")
    exchange: str = Field(DEFAULT_EXCHANGE, description="topic exchange publishers use")
    stream: str = Field(DEFAULT_STREAM, description="stream queue bound to the exchange with #")
    stream_max_age: Positive = Field(
        DEFAULT_STREAM_MAX_AGE, description="stream retention, seconds (applies at creation)"
    )
    stream_max_bytes: Positive = Field(
        DEFAULT_STREAM_MAX_BYTES, description="stream retention, bytes (applies at creation)"
    )
    stream_segment_bytes: Positive = Field(
        DEFAULT_STREAM_SEGMENT_BYTES, description="stream segment size, bytes (applies at creation)"
    )
    stream_replicas: Positive | None = Field(
        None,
        description="stream replicas on a RabbitMQ cluster, x-initial-cluster-size"
        " (applies at creation)",
    )
    heartbeat: Seconds = Field(DEFAULT_HEARTBEAT, description="heartbeat on quiet streams, seconds")
    retry: Positive = Field(DEFAULT_RETRY_MS, description="reconnection delay sent to clients, ms")
    subscriber_buffer: Positive = Field(
        DEFAULT_SUBSCRIBER_BUFFER,
        description="events buffered per subscriber before it is cut off as slow",
    )
    queue_size: Positive | None = Field(
        None, description="the former name of --subscriber-buffer (still read, with a note)"
    )
    queue: Listed = Field(
        (), description="work queue to serve at /queues/NAME (quorum queue hopcast.q.NAME)"
    )
    queue_delivery_limit: Positive = Field(
        DEFAULT_QUEUE_DELIVERY_LIMIT,
        description="deliveries of a task before it is dead-lettered (applies at creation)",
    )
    queue_max_length: Positive | None = Field(
        None,
        description="tasks a queue holds before enqueues are refused (503; applies at creation)",
    )
    lease: Annotated[float, Field(gt=0, le=MAX_LEASE_CAP)] = Field(
        DEFAULT_LEASE, description="seconds a worker holds a task before it goes back (?lease=)"
    )
    max_lease: Annotated[float, Field(gt=0, le=MAX_LEASE_CAP)] = Field(
        DEFAULT_MAX_LEASE,
        description="seconds no lease outlives, extended or not (below RabbitMQ's"
        " consumer_timeout)",
    )
    lease_secret: SecretStr | None = Field(
        None, description="key that signs lease tokens, 32+ bytes (unset: a random key per start)"
    )
    ring_size: Annotated[int, Field(ge=0)] = Field(
        DEFAULT_RING_SIZE, description="latest events kept in memory for resumes"
    )
    max_event_bytes: Positive = Field(
        DEFAULT_MAX_EVENT_BYTES, description="largest event body sent or accepted, bytes"
    )
    max_write_delay: Annotated[float, Field(ge=0, le=1)] = Field(
        DEFAULT_MAX_WRITE_DELAY,
        description=(
            "while the process is short of CPU and clients get events this often, hold a"
            " client's next write up to this long after its last one, seconds (0: never)"
        ),
    )
    prefetch: Positive = Field(DEFAULT_PREFETCH, description="stream consumer prefetch (credit)")
    amqp_heartbeat: Annotated[int, Field(ge=0)] = Field(
        DEFAULT_AMQP_HEARTBEAT, description="AMQP heartbeat, seconds (0 turns it off)"
    )
    shutdown_grace: Seconds = Field(
        DEFAULT_SHUTDOWN_GRACE, description="seconds given to open streams on shutdown"
    )
    memory_max_events: Positive = Field(
        DEFAULT_MEMORY_MAX_EVENTS, description="retention of the memory:// broker, events"
    )
    log_level: str = Field("info", description="debug, info, warning or error")
    log_format: Literal["text", "json"] = Field(
        "text", description="text, or json: one JSON object per line, for log collectors"
    )
    auth: Literal["none", "jwt"] = Field(
        "none", description="none (development: anyone may do anything) or jwt"
    )
    jwt_secret: SecretStr | None = Field(None, description="HS256 shared secret (32+ bytes)")
    jwt_key: str | None = Field(None, description="PEM public key file (RS256, ES256, ...)")
    jwks: str | None = Field(
        None, description="JWKS file, or the issuer's https:// URL; the key is chosen by kid"
    )
    jwks_refresh: Seconds = Field(
        DEFAULT_JWKS_REFRESH,
        description="seconds between fetches of a --jwks URL (also soon after an unknown kid)",
    )
    jwt_audience: str | None = Field(None, description="required aud claim")
    jwt_issuer: str | None = Field(None, description="required iss claim")
    cookie_name: str = Field("hopcast_token", description="cookie carrying the token")
    allow_query_token: bool = Field(
        False, description="accept ?access_token= (off: URLs end up in logs)"
    )
    page: Literal["auto", "on", "off"] = Field(
        "auto",
        description="the live page at GET /: auto (on with --auth none, off with --auth jwt)",
    )
    public: Listed = Field((), description="patterns anyone may subscribe to")
    cors_origin: Listed = Field((), description="origins allowed by CORS, with credentials")
    trusted_proxy: Listed = Field((), description="proxy CIDRs whose X-Forwarded-For is believed")
    max_connections: Positive = Field(
        DEFAULT_MAX_CONNECTIONS, description="open streams per process"
    )
    max_connections_per_address: Positive = Field(
        DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, description="open streams per client address"
    )
    max_patterns: Positive = Field(DEFAULT_MAX_PATTERNS, description="patterns per subscription")
    max_pattern_depth: Positive = Field(DEFAULT_MAX_PATTERN_DEPTH, description="words per pattern")
    max_url_bytes: Positive = Field(DEFAULT_MAX_URL_BYTES, description="request target, bytes")
    max_header_bytes: Positive = Field(
        DEFAULT_MAX_HEADER_BYTES, description="request headers, bytes"
    )
    publish_rate: Annotated[float, Field(gt=0)] = Field(
        DEFAULT_PUBLISH_RATE, description="publishes per second per token (or address)"
    )
    publish_burst: Positive = Field(
        DEFAULT_PUBLISH_BURST, description="publishes allowed in a burst above the rate"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (the constructor's arguments) over the variables; no .env or secrets files."""
        return init_settings, _Variables(settings_cls)

    @field_validator("broker", "public", "cors_origin", "trusted_proxy", "queue", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("broker")
    @classmethod
    def _known_schemes(cls, urls: tuple[str, ...]) -> tuple[str, ...]:
        schemes = {u.split("://", 1)[0].lower() for u in urls if "://" in u}
        if len(schemes) != 1 or any("://" not in u for u in urls):
            raise ValueError("each broker is a URL, all of one scheme")
        if not schemes <= {"amqp", "amqps", "memory"}:
            raise ValueError("the scheme is amqp://, amqps:// or memory://")
        return urls

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        if level.lower() not in ("debug", "info", "warning", "error"):
            raise ValueError("debug, info, warning or error")
        return level.lower()

    @field_validator("exchange", "stream")
    @classmethod
    def _amqp_name(cls, name: str) -> str:
        if not 0 < len(name.encode()) <= 255 or any(c in name for c in "\r\n\x00"):
            raise ValueError("1-255 bytes, no line breaks")
        return name

    @field_validator("lease_secret")
    @classmethod
    def _long_enough(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value().encode()) < 32:
            raise ValueError("at least 32 bytes: it signs every lease token")
        return secret

    @field_validator("trusted_proxy")
    @classmethod
    def _cidrs(cls, cidrs: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in cidrs:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an address or CIDR") from None
        return cidrs

    @model_validator(mode="before")
    @classmethod
    def _former_names(cls, values: Any) -> Any:
        """``--queue-size`` (the former name) sets the subscriber buffer when the new name
        is not given; `former_names_used` tells the log."""
        if isinstance(values, dict):
            former = values.get("queue_size")
            if former is not None and values.get("subscriber_buffer") is None:
                values = {**values, "subscriber_buffer": former}
        return values

    @property
    def former_names_used(self) -> list[str]:
        """Notes for the log on settings given by a former name."""
        if self.queue_size is None:
            return []
        return ["--queue-size (HOPCAST_QUEUE_SIZE) is now --subscriber-buffer"]

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from ``HOPCAST_*`` variables, then flags (not None) on top.

        A bad value is a `ConfigError` naming the flag or variable it came from, and the value.
        """
        flags = {k: v for k, v in overrides.items() if v is not None and v != ()}
        _refuse_retired(env, flags)
        try:
            with _reading(env):
                return cls(**flags)
        except ValidationError as exc:
            err = exc.errors()[0]
            if not err["loc"]:  # a rule across settings: its message names them
                raise ConfigError(err["msg"].removeprefix("Value error, ")) from None
            name = str(err["loc"][0])
            key = PREFIX + name.upper()
            if name in flags:
                where, value = "--" + name.replace("_", "-"), flags[name]
            else:
                where, value = (key, env[key]) if key in env else ("--" + name, err.get("input"))
            if isinstance(value, tuple):
                value = ",".join(map(str, value))
            shown = "(hidden)" if "secret" in name else repr(value)
            reason = err["msg"].removeprefix("Value error, ")
            raise ConfigError(f"{where}: bad value {shown}: {reason}") from None

    @property
    def page_on(self) -> bool:
        """Whether ``GET /`` serves the live page."""
        return self.page == "on" or (self.page == "auto" and self.auth == "none")

    def to_env(self) -> dict[str, str]:
        """The variables that rebuild these settings (how worker processes receive them)."""
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None or name == "queue_size":  # its value is the subscriber buffer's
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            out[PREFIX + name.upper()] = ",".join(value) if isinstance(value, tuple) else str(value)
        return out
