"""What the token, grant and key tests share: a test secret, tokens built by hand, refusals."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import strategies as st

from hopcast._core.errors import Unauthorized
from hopcast._rights.tokens import Authorizer, AuthSettings
from tests.support.rounds import rounds

SECRET = "an HS256 secret of more than 32 bytes, for tests"
OTHER_SECRET = "another HS256 secret of 32+ bytes, not trusted"
FAST = rounds(300)


def make(**fields: Any) -> Authorizer:
    """An authorizer built as the gateway builds it, from ``AuthSettings(**fields)``."""
    return Authorizer.from_settings(AuthSettings(**fields))


HS = make(mode="jwt", secret=SECRET)


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    """A token signed with ``secret``, as an identity provider sharing it would sign one."""
    return jwt.encode(payload, secret, algorithm="HS256")


def claims(**extra: Any) -> dict[str, Any]:
    """Claims granting orders.# both ways, for one hour; ``extra`` overrides (None drops)."""
    base: dict[str, Any] = {
        "sub": "alice",
        "exp": int(time.time()) + 3600,
        "hopcast": {"subscribe": ["orders.#"], "publish": ["orders.#"]},
    }
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(
    header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes] | None = None
) -> str:
    """A compact JWS built by hand, so that a test can make what PyJWT refuses to sign."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = sign(signing_input.encode()) if sign else b""
    return f"{signing_input}.{b64(signature)}"


def hmac_with(secret: bytes) -> Callable[[bytes], bytes]:
    """An HS256 signer for :func:`forge` keyed with ``secret``."""
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


def public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    """The public half of ``key`` as a SubjectPublicKeyInfo PEM."""
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def refused(auth: Authorizer, token: str | None) -> Unauthorized:
    """The ``Unauthorized`` that ``auth`` must raise for ``token``."""
    with pytest.raises(Unauthorized) as info:
        auth.authenticate(token)
    return info.value


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
"""Any JSON value, nested a little."""
