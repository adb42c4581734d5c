"""The keys tokens are verified with: a shared secret, a PEM public key, or a JWKS.

A JWKS comes from a file, or from an issuer's URL (`RemoteKeySet`), fetched
again now and then so that the issuer can rotate its keys.

Each key carries the algorithms its type allows, decided here from the key
alone and never from a token's header (the algorithm-confusion attacks).

>>> secret_key("a shared secret of at least thirty-two bytes", "--jwt-secret").algorithms
('HS256',)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from hopcast._core.errors import CannotStart, ConfigError

if TYPE_CHECKING:
    from jwt.algorithms import AllowedPublicKeys

log = logging.getLogger("hopcast.rights")  # named by layer: module paths are internal

MIN_SECRET_BYTES = 32
"""RFC 7518 §3.2: an HS256 key is at least as long as the hash output."""
_HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
_RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}

JWKS_TIMEOUT = 10.0
JWKS_MAX_BYTES = 1_000_000
JWKS_MIN_INTERVAL = 10.0
"""Seconds between two fetches of a JWKS URL at least, whatever kids tokens name."""
FIRST_FETCH_TRIES = 3
FIRST_FETCH_PAUSE = 2.0

VerifyKey: TypeAlias = "AllowedPublicKeys | jwt.PyJWK | bytes"


@dataclass(frozen=True, slots=True)
class Key:
    """A verification key and the algorithms it may verify."""

    key: VerifyKey = field(repr=False)
    algorithms: tuple[str, ...]


def _usable(key: Any, candidates: Iterable[str], where: str) -> tuple[str, ...]:
    algorithms = tuple(
        name for name in candidates if jwt.get_algorithm_by_name(name).check_key_length(key) is None
    )
    if not algorithms:
        raise ConfigError(f"{where}: the key is too short for any algorithm it could sign with")
    return algorithms


def secret_key(secret: str, where: str) -> Key:
    """A shared HMAC secret (``where`` names its setting in errors)."""
    raw = secret.encode()
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigError(f"{where}: {len(raw)} bytes; at least {MIN_SECRET_BYTES} are needed")
    try:
        jwt.get_algorithm_by_name("HS256").prepare_key(raw)
    except jwt.InvalidKeyError:
        raise ConfigError(f"{where}: looks like a PEM key; give a key file to --jwt-key") from None
    return Key(raw, _usable(raw, _HMAC_ALGORITHMS, where))


def pem_key(path: Path, flag: str) -> Key:
    """The issuer's public key or certificate from a PEM file."""
    where = f"{flag}: {str(path)!r}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror}") from None
    if b"PRIVATE KEY" in data:
        raise ConfigError(f"{where}: holds a private key; give the issuer's public key")
    try:
        key: Any = load_pem_public_key(data)
    except ValueError:
        try:
            key = x509.load_pem_x509_certificate(data).public_key()
        except ValueError:
            raise ConfigError(f"{where}: not a PEM public key or certificate") from None
    return Key(key, _usable(key, _algorithms_for(key, where), where))


def _algorithms_for(key: object, where: str) -> tuple[str, ...]:
    """The algorithms that can verify with ``key``: its type alone decides, never the token."""
    if isinstance(key, rsa.RSAPublicKey):
        return _RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey):
        algorithm = _EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise ConfigError(f"{where}: unsupported curve {key.curve.name}")
        return (algorithm,)
    if isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        return ("EdDSA",)
    raise ConfigError(f"{where}: unsupported key type {type(key).__name__}")


def jwks_keys(path: Path, flag: str) -> dict[str | None, Key]:
    """The signing keys of a JWKS file, by kid."""
    where = f"{flag}: {str(path)!r}"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror}") from None
    return parse_jwks(data, where)


def parse_jwks(data: bytes, where: str) -> dict[str | None, Key]:
    """The signing keys of a JWKS document, by kid (``where`` names its source in errors)."""
    keys: dict[str | None, Key] = {}
    for i, entry in enumerate(_jwks_entries(data, where)):
        kid = entry.get("kid")
        key = _jwks_key(entry, f"{where}: key {i} (kid {kid!r})", keys)
        if key is not None:
            keys[kid] = key
    if not keys:
        raise ConfigError(f"{where}: no usable signing key")
    if len(keys) > 1 and None in keys:
        raise ConfigError(f"{where}: with several keys, every key needs a kid")
    return keys


def _jwks_entries(data: bytes, where: str) -> list[dict[str, Any]]:
    """The entries of a JWKS document's ``keys`` list, each an object."""
    try:
        document = json.loads(data)
    except ValueError:
        raise ConfigError(f"{where}: not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError(f"{where}: not a JWKS (an object with a list of keys)")
    return entries


def _jwks_key(entry: dict[str, Any], name: str, keys: Mapping[str | None, Key]) -> Key | None:
    """One JWKS entry as a key, or None when it is skipped (not for signing, or not usable)."""
    kid = entry.get("kid")
    if entry.get("use", "sig") != "sig":
        log.info("%s skipped: it is not a signing key", name)
        return None
    if entry.get("kty") in ("RSA", "EC", "OKP") and "d" in entry:
        raise ConfigError(f"{name}: holds a private key; give the issuer's public keys")
    if kid is not None and not isinstance(kid, str):
        raise ConfigError(f"{name}: kid must be a string")
    if kid in keys:
        raise ConfigError(f"{name}: a second key with this kid")
    alg = entry.get("alg")
    if alg is not None and (not isinstance(alg, str) or alg.lower() == "none"):
        raise ConfigError(f"{name}: alg {alg!r} verifies nothing")
    try:
        jwk = jwt.PyJWK(entry)
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        # PyJWK lets KeyError out for a missing member; its messages quote the key,
        # which may be a shared secret, so none of them is logged.
        log.warning("%s skipped: not a key PyJWT can verify with", name)
        return None
    return Key(jwk, _usable(jwk.key, [jwk.algorithm_name], name))


def is_url(source: str) -> bool:
    """Whether a ``--jwks`` value names a URL rather than a file."""
    return source.startswith(("https://", "http://"))


class RemoteKeySet(Mapping[str | None, Key]):
    """The keys of a JWKS URL, by kid: fetched on entry, then every ``refresh`` seconds,
    and soon after a token names a kid it lacks (an issuer rotating its keys).

    A failed fetch keeps the keys in use. On entry, the first fetch is tried
    `FIRST_FETCH_TRIES` times and then raises `CannotStart`: without keys no
    token can be checked.
    """

    def __init__(self, url: str, flag: str, refresh: float) -> None:
        self.url = url
        self._where = f"{flag}: {url!r}"
        self._refresh = refresh
        self._keys: dict[str | None, Key] = {}
        self._wanted = asyncio.Event()
        self._fetched_at = -math.inf
        self._task: asyncio.Task[None] | None = None

    def __getitem__(self, kid: str | None) -> Key:
        return self._keys[kid]

    def __iter__(self) -> Iterator[str | None]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def get(self, kid: str | None, default: Any = None) -> Any:
        key = self._keys.get(kid)
        if key is None and kid is not None:
            self._wanted.set()  # fetched again at most every JWKS_MIN_INTERVAL seconds
        return default if key is None else key

    async def __aenter__(self) -> RemoteKeySet:
        if self.url.startswith("http://"):
            log.warning("%s: plain http, so anyone on the way could swap the keys", self._where)
        for attempt in range(1, FIRST_FETCH_TRIES + 1):
            try:
                await self.fetch()
                break
            except ConfigError as exc:
                if attempt == FIRST_FETCH_TRIES:  # the setting may be right: exit status 1
                    raise CannotStart(str(exc)) from None
                log.warning("%s; trying again in %.0f s", exc, FIRST_FETCH_PAUSE)
                await asyncio.sleep(FIRST_FETCH_PAUSE)
        self._task = asyncio.create_task(self._keep_fresh(), name="jwks refresh")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def fetch(self) -> None:
        """Fetch the key set now and use it; `ConfigError` says why it could not be."""
        import httpx

        self._fetched_at = time.monotonic()
        data = bytearray()
        try:
            async with (
                httpx.AsyncClient(timeout=JWKS_TIMEOUT, follow_redirects=True) as http,
                http.stream("GET", self.url, headers={"Accept": "application/json"}) as response,
            ):
                if response.status_code != 200:
                    raise ConfigError(f"{self._where}: answered {response.status_code}")
                async for chunk in response.aiter_bytes():
                    data += chunk
                    if len(data) > JWKS_MAX_BYTES:
                        raise ConfigError(f"{self._where}: larger than {JWKS_MAX_BYTES} bytes")
        except httpx.HTTPError as exc:
            raise ConfigError(
                f"{self._where}: cannot fetch it: {exc or type(exc).__name__}"
            ) from None
        keys = parse_jwks(bytes(data), self._where)
        if keys.keys() != self._keys.keys():
            log.info("%s: %d key(s), kid %s", self._where, len(keys), sorted(map(str, keys)))
        self._keys = keys

    async def _keep_fresh(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), self._refresh)
            await asyncio.sleep(max(0.0, self._fetched_at + JWKS_MIN_INTERVAL - time.monotonic()))
            self._wanted.clear()
            try:
                await self.fetch()
            except ConfigError as exc:
                log.warning("%s; keeping the %d key(s) in use", exc, len(self._keys))
