"""Authorisation: which client may subscribe to and publish on which topics (design §5).

Mode ``none`` allows everything (development). Mode ``jwt`` verifies a bearer token
with one configured key (HMAC secret, PEM public key, or a local JWKS file) and
reads the grants in its ``hopcast`` claim; a request for pattern P is allowed when
a granted (or public) pattern contains P. Errors raised here::

    HopcastError
    ├── Unauthorized     no token, or one that does not verify (→ 401; 400 for invalid_request)
    └── Forbidden        a verified token that does not grant the pattern or topic (→ 403)

>>> auth = Authorizer.from_settings(AuthSettings(mode="jwt", secret="s" * 32, public=("news.#",)))
>>> auth.authorize_subscribe(None, [Pattern.parse("news.today")]) is None
True
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import jwt

from hopcast._core.errors import ConfigError, Forbidden, InvalidTopic, Unauthorized
from hopcast._core.settings import DEFAULT_JWKS_REFRESH, Settings
from hopcast._core.topics import Pattern, parse_topic
from hopcast._rights.keys import (
    Key,
    RemoteKeySet,
    is_url,
    jwks_keys,
    pem_key,
    secret_key,
)
from hopcast._rights.principals import UNRESTRICTED, Principal, QueueAction

log = logging.getLogger("hopcast.rights")  # named by layer: module paths are internal

AuthMode = Literal["none", "jwt"]

DEFAULT_COOKIE_NAME = "hopcast_token"
QUERY_PARAM = "access_token"
LEEWAY_SECONDS = 5
"""Clock skew tolerated between the token issuer and the gateway on exp, nbf and iat."""
MAX_TOKEN_CHARS = 16_384

_FLAG = {
    "mode": "--auth",
    "secret": "--jwt-secret",
    "key_file": "--jwt-key",
    "jwks_file": "--jwks",
    "cookie_name": "--cookie-name",
    "public": "--public",
}
_JWS_COMPACT = re.compile(r"[A-Za-z0-9_-]+={0,2}\.[A-Za-z0-9_-]*={0,2}\.[A-Za-z0-9_-]*={0,2}")
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")

# Most specific first: several PyJWT errors subclass DecodeError or InvalidTokenError.
_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidIssuedAtError, "the token's iat claim is not a number"),
    (jwt.InvalidAudienceError, "the token is not meant for this audience"),
    (jwt.InvalidIssuerError, "the token's issuer is not trusted here"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not accepted for this key"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidKeyError, "the token does not fit the configured key"),
    (jwt.DecodeError, "the token is malformed"),
)


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """What the authoriser needs; each field has a flag (``mode`` is ``--auth``).

    >>> AuthSettings(mode="jwt", key_file=Path("issuer.pem"), audience="hopcast").mode
    'jwt'
    """

    mode: AuthMode = "none"
    secret: str | None = field(default=None, repr=False)
    key_file: Path | str | None = None
    jwks_file: Path | str | None = None
    jwks_refresh: float = DEFAULT_JWKS_REFRESH
    audience: str | None = None
    issuer: str | None = None
    cookie_name: str = DEFAULT_COOKIE_NAME
    allow_query_token: bool = False
    public: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> AuthSettings:
        """The authoriser's view of the gateway's settings."""
        return cls(
            mode=settings.auth,
            secret=settings.jwt_secret.get_secret_value() if settings.jwt_secret else None,
            key_file=settings.jwt_key,
            jwks_file=settings.jwks,
            jwks_refresh=settings.jwks_refresh,
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            cookie_name=settings.cookie_name,
            allow_query_token=settings.allow_query_token,
            public=settings.public,
        )


def token_from(
    headers: Mapping[str, str],
    cookies: Mapping[str, str],
    query: Mapping[str, str],
    *,
    cookie_name: str = DEFAULT_COOKIE_NAME,
    allow_query_token: bool = False,
) -> str | None:
    """The request's bearer token: Authorization header, else cookie, else ``?access_token=``.

    >>> token_from({"Authorization": "Bearer abc"}, {"hopcast_token": "def"}, {})
    'abc'
    """
    authorization = headers.get("authorization")
    if authorization is None:
        authorization = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        # Another scheme (Basic for a proxy in front) is not ours to judge.
        if scheme.lower() == "bearer":
            token = credentials.strip()
            if not token or any(c.isspace() for c in token):
                raise Unauthorized(
                    "the Authorization header must be 'Bearer <token>'", error="invalid_request"
                )
            return token
    cookie = cookies.get(cookie_name)
    if cookie:
        return cookie
    in_query = query.get(QUERY_PARAM)
    if in_query is None:
        return None
    if not allow_query_token:
        raise Unauthorized(
            f"?{QUERY_PARAM}= is turned off here (URLs end up in logs); send the token in"
            f" the Authorization header or the {cookie_name} cookie",
            error="invalid_request",
        )
    return in_query or None


class Authorizer:
    """Verifies tokens and decides subscribe and publish requests; build it with `from_settings`.

    >>> auth = Authorizer.from_settings(AuthSettings())
    >>> auth.authorize_publish(None, "orders.42") is None
    True
    """

    def __init__(
        self,
        settings: AuthSettings,
        *,
        public: tuple[Pattern, ...] = (),
        keys: Mapping[str | None, Key] | None = None,
    ) -> None:
        self.settings = settings
        self.public = public
        self._keys: Mapping[str | None, Key] = {} if keys is None else keys

    @classmethod
    def from_settings(cls, settings: Settings | AuthSettings) -> Authorizer:
        """Check the settings and load the key once; a bad value raises `ConfigError`."""
        if isinstance(settings, Settings):
            settings = AuthSettings.of(settings)
        public = tuple(_parse_public(settings.public))
        if not _COOKIE_NAME.fullmatch(settings.cookie_name):
            raise ConfigError(f"{_FLAG['cookie_name']}: bad value {settings.cookie_name!r}")
        sources = [
            name
            for name in ("secret", "key_file", "jwks_file")
            if getattr(settings, name) not in (None, "")
        ]
        if settings.mode == "none":
            if sources:
                raise ConfigError(
                    f"{_FLAG[sources[0]]} is set but {_FLAG['mode']} is none, so no token"
                    f" would be checked; pass {_FLAG['mode']} jwt"
                )
            log.warning("auth is off (--auth none): any client may subscribe and publish anywhere")
            return cls(settings, public=public)
        if settings.mode != "jwt":
            raise ConfigError(f"{_FLAG['mode']}: bad value {settings.mode!r}: none or jwt")
        if len(sources) != 1:
            names = ", ".join(_FLAG[n] for n in ("secret", "key_file", "jwks_file"))
            raise ConfigError(f"{_FLAG['mode']} jwt needs exactly one of {names}")
        if settings.secret:
            keys: dict[str | None, Key] = {None: secret_key(settings.secret, _FLAG["secret"])}
        elif settings.key_file:
            keys = {None: pem_key(Path(settings.key_file), _FLAG["key_file"])}
        elif is_url(str(settings.jwks_file)):
            remote = RemoteKeySet(
                str(settings.jwks_file), _FLAG["jwks_file"], settings.jwks_refresh
            )
            log.info("auth: jwt with keys from %s, %d public pattern(s)", remote.url, len(public))
            return cls(settings, public=public, keys=remote)
        else:
            keys = jwks_keys(Path(str(settings.jwks_file)), _FLAG["jwks_file"])
        log.info(
            "auth: jwt with %s (%d key(s)), %d public pattern(s)",
            _FLAG[sources[0]],
            len(keys),
            len(public),
        )
        return cls(settings, public=public, keys=keys)

    @property
    def remote_keys(self) -> RemoteKeySet | None:
        """The key set fetched from a URL, which the app enters for its lifetime; else None."""
        return self._keys if isinstance(self._keys, RemoteKeySet) else None

    @property
    def enabled(self) -> bool:
        """Whether requests are checked at all (mode ``jwt``)."""
        return self.settings.mode == "jwt"

    def token_from(
        self, headers: Mapping[str, str], cookies: Mapping[str, str], query: Mapping[str, str]
    ) -> str | None:
        """`token_from` with this gateway's cookie name and query-token flag."""
        return token_from(
            headers,
            cookies,
            query,
            cookie_name=self.settings.cookie_name,
            allow_query_token=self.settings.allow_query_token,
        )

    def authenticate(self, token: str | None) -> Principal:
        """Verify ``token`` and read its grants; raise `Unauthorized` if it is missing or bad."""
        if not self.enabled:
            return UNRESTRICTED
        if not token:
            raise Unauthorized.missing()
        if len(token) > MAX_TOKEN_CHARS or not _JWS_COMPACT.fullmatch(token):
            raise _refused("the token is not a JWT")
        key = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(key.algorithms),
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=LEEWAY_SECONDS,
                options={"enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as exc:
            reason = next((r for kind, r in _REASONS if isinstance(exc, kind)), None)
            if reason is None and isinstance(exc, jwt.MissingRequiredClaimError):
                reason = f"the token lacks the {exc.claim} claim"
            raise _refused(reason or "the token is invalid") from None
        try:
            return Principal.from_claims(claims)
        except Unauthorized as exc:
            raise _refused(exc.description) from None

    def is_public(self, pattern: Pattern) -> bool:
        """Whether ``pattern`` needs no token: some public pattern contains it."""
        return any(public.contains(pattern) for public in self.public)

    def check_subscribe(self, principal: Principal | None, patterns: Iterable[Pattern]) -> None:
        """Allow a subscription when each pattern is public or granted, else raise."""
        if not self.enabled:
            return
        for pattern in patterns:
            if self.is_public(pattern):
                continue
            if principal is None:
                raise Unauthorized.missing()
            if not principal.may_subscribe(pattern):
                log.debug("subscribe to %s refused for %r", pattern, principal.subject)
                raise Forbidden("subscribe", pattern.text)

    def check_publish(self, principal: Principal | None, topic: str) -> None:
        """Allow a publish when a publish grant matches ``topic``, else raise."""
        parse_topic(topic)
        if not self.enabled:
            return
        if principal is None:
            raise Unauthorized.missing()
        if not principal.may_publish(topic):
            log.debug("publish to %s refused for %r", topic, principal.subject)
            raise Forbidden("publish", topic)

    def authorize_subscribe(
        self, token: str | None, patterns: Iterable[Pattern]
    ) -> Principal | None:
        """Decide a subscription; the principal whose expiry ends the stream, or None.

        The token is only read when some pattern is not public, so a stale cookie
        never breaks a public stream.
        """
        wanted = list(patterns)
        if not self.enabled or all(self.is_public(p) for p in wanted):
            return None
        principal = self.authenticate(token)
        self.check_subscribe(principal, wanted)
        return principal

    def authorize_publish(self, token: str | None, topic: str) -> Principal | None:
        """Decide a publish; the verified principal, or None when auth is off."""
        principal = self.authenticate(token) if self.enabled else None
        self.check_publish(principal, topic)
        return principal

    def authorize_queue(
        self, token: str | None, action: QueueAction, name: str
    ) -> Principal | None:
        """Decide an enqueue or a consume (listing dead letters, settling) on queue ``name``;
        the verified principal, or None when auth is off. Public patterns are for
        subscriptions only: every queue needs a token."""
        if not self.enabled:
            return None
        principal = self.authenticate(token)
        if not principal.may_use_queue(action, name):
            log.debug("%s on queue %s refused for %r", action, name, principal.subject)
            raise Forbidden(action, name)
        return principal

    def _key_for(self, token: str) -> Key:
        only = self._keys.get(None)
        if only is not None:
            return only
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            raise _refused("the token is malformed") from None
        if kid is None:
            if len(self._keys) == 1:
                return next(iter(self._keys.values()))
            raise _refused("the token names no key id (kid)")
        key = self._keys.get(kid)
        if key is None:
            raise _refused("the token's key id (kid) is not in the key set")
        return key


def _refused(description: str) -> Unauthorized:
    log.debug("token refused: %s", description)
    return Unauthorized(description)


def _parse_public(texts: Iterable[str]) -> Iterable[Pattern]:
    for text in texts:
        try:
            yield Pattern.parse(text)
        except InvalidTopic as exc:
            raise ConfigError(f"{_FLAG['public']}: bad value {text!r}: {exc}") from None
