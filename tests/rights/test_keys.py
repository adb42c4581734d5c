"""Keys and key settings: PEM keys, certificates, JWKS files, algorithm confusion, start-up checks.

Each key verifies only the algorithms of its own type; a JWKS key is picked by
``kid``, and entries it cannot use are skipped. A bad auth setting fails at
start-up with a ``ConfigError`` that names the setting and never the secret.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from hopcast._core.errors import ConfigError, Unauthorized
from hopcast._rights.tokens import Authorizer, AuthSettings
from tests.rights.jwt_kit import (
    FAST,
    HS,
    SECRET,
    b64,
    claims,
    forge,
    hmac_with,
    json_values,
    make,
    public_pem,
    refused,
)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ec_pem_file(keydir: Path, ec_key: ec.EllipticCurvePrivateKey) -> Path:
    path = keydir / "ec.pem"
    path.write_bytes(public_pem(ec_key))
    return path


def write_jwks(path: Path, *keys: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"keys": list(keys)}))
    return path


def rsa_jwk(key: rsa.RSAPrivateKey, **extra: Any) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    assert isinstance(jwk, dict)
    return {**jwk, **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey, **extra: Any) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    assert isinstance(jwk, dict)
    return {**jwk, **extra}


@pytest.fixture(scope="module")
def jwks_auth(
    keydir: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> Authorizer:
    path = write_jwks(
        keydir / "jwks.json", rsa_jwk(rsa_key, kid="rsa-1"), ec_jwk(ec_key, kid="ec-1")
    )
    return make(mode="jwt", jwks_file=path)


# Asymmetric keys


@pytest.mark.parametrize("alg", ["RS256", "RS512", "PS256"])
def test_rsa_pem_key_verifies_rsa_tokens(
    rsa_pem_file: Path, rsa_key: rsa.RSAPrivateKey, alg: str
) -> None:
    auth = make(mode="jwt", key_file=rsa_pem_file)
    assert auth.authenticate(jwt.encode(claims(), rsa_key, algorithm=alg)).subject == "alice"


def test_ec_pem_key_verifies_es256(ec_pem_file: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    auth = make(mode="jwt", key_file=str(ec_pem_file))
    assert auth.authenticate(jwt.encode(claims(), ec_key, algorithm="ES256")).subject == "alice"


def test_a_certificate_pem_is_accepted(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(rsa_key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .sign(rsa_key, hashes.SHA256())
    )
    path = tmp_path / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    auth = make(mode="jwt", key_file=path)
    auth.authenticate(jwt.encode(claims(), rsa_key, algorithm="RS256"))


def test_algorithm_confusion_is_refused(rsa_pem_file: Path, jwks_auth: Authorizer) -> None:
    """An HS256 token whose HMAC secret is the RSA public key must not verify against it."""
    pem = rsa_pem_file.read_bytes()
    for secret in (pem, pem.strip()):
        token = forge({"alg": "HS256", "typ": "JWT"}, claims(), hmac_with(secret))
        error = refused(make(mode="jwt", key_file=rsa_pem_file), token)
        assert "algorithm" in error.description
        jwks_token = forge({"alg": "HS256", "kid": "rsa-1"}, claims(), hmac_with(secret))
        assert "algorithm" in refused(jwks_auth, jwks_token).description


def test_keys_of_another_type_are_refused(
    rsa_pem_file: Path,
    ec_pem_file: Path,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    refused(make(mode="jwt", key_file=rsa_pem_file), jwt.encode(claims(), ec_key, "ES256"))
    refused(make(mode="jwt", key_file=ec_pem_file), jwt.encode(claims(), rsa_key, "RS256"))
    refused(HS, jwt.encode(claims(), rsa_key, algorithm="RS256"))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    stranger_token = jwt.encode(claims(), stranger, algorithm="RS256")
    assert (
        "signature" in refused(make(mode="jwt", key_file=rsa_pem_file), stranger_token).description
    )


# JWKS


def test_jwks_picks_the_key_by_kid(
    jwks_auth: Authorizer, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    rs = jwt.encode(claims(sub="r"), rsa_key, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(claims(sub="e"), ec_key, algorithm="ES256", headers={"kid": "ec-1"})
    assert jwks_auth.authenticate(rs).subject == "r"
    assert jwks_auth.authenticate(es).subject == "e"


def test_jwks_refuses_unknown_missing_and_mismatched_kids(
    jwks_auth: Authorizer, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    unknown = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "rsa-2"})
    assert "key id" in refused(jwks_auth, unknown).description
    assert "kid" in refused(jwks_auth, jwt.encode(claims(), rsa_key, algorithm="RS256")).description
    swapped = jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "rsa-1"})
    assert "algorithm" in refused(jwks_auth, swapped).description
    signed_by_other = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "ec-1"})
    refused(jwks_auth, signed_by_other)
    refused(jwks_auth, forge({"alg": "ES256", "kid": 7}, claims()))


def test_a_single_key_jwks_needs_no_kid(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    auth = make(mode="jwt", jwks_file=write_jwks(tmp_path / "one.json", rsa_jwk(rsa_key)))
    auth.authenticate(jwt.encode(claims(), rsa_key, algorithm="RS256"))


def test_jwks_skips_encryption_keys(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    path = write_jwks(
        tmp_path / "mixed.json", rsa_jwk(rsa_key, kid="enc", use="enc"), ec_jwk(ec_key, kid="sig")
    )
    auth = make(mode="jwt", jwks_file=path)
    refused(auth, jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "enc"}))
    auth.authenticate(jwt.encode(claims(), ec_key, algorithm="ES256", headers={"kid": "sig"}))


def test_jwks_skips_keys_it_cannot_use(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    junk: list[dict[str, Any]] = [
        {"kty": "RSA", "kid": "no-n"},
        {"kty": "XX", "kid": "odd"},
        {"kty": ["RSA"]},
    ]
    path = write_jwks(tmp_path / "junk.json", *junk, rsa_jwk(rsa_key, kid="good"))
    auth = make(mode="jwt", jwks_file=path)
    auth.authenticate(jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": "good"}))


jwk_members = st.none() | st.integers() | st.text(max_size=8) | st.lists(st.integers(), max_size=2)
jwk_entries = st.dictionaries(
    st.sampled_from(["kty", "alg", "kid", "use", "n", "e", "crv", "x", "y", "k", "d"]),
    jwk_members | st.sampled_from(["RSA", "EC", "OKP", "oct", "RS256", "none", "P-256", "AQAB"]),
)


@FAST
@given(entries=st.lists(jwk_entries, max_size=4))
def test_any_jwks_loads_or_fails_with_a_config_error(keydir: Path, entries: list[Any]) -> None:
    path = write_jwks(keydir / "fuzz.json", *entries)
    try:
        make(mode="jwt", jwks_file=path)
    except ConfigError as exc:
        assert "--jwks" in str(exc)


@FAST
@given(header=st.dictionaries(st.sampled_from(["alg", "kid", "crit", "b64", "typ"]), json_values))
def test_any_header_is_refused_by_a_jwks_authorizer(
    jwks_auth: Authorizer, header: dict[str, Any]
) -> None:
    with pytest.raises(Unauthorized):
        jwks_auth.authenticate(forge(header, claims(), hmac_with(b"x" * 32)))


# Configuration


def bad_settings_cases(tmp: Path, rsa_key: rsa.RSAPrivateKey) -> Iterator[tuple[Any, str]]:
    """(settings, text the ConfigError must contain) pairs."""
    yield AuthSettings(mode="jwt"), "--jwt-secret"
    yield AuthSettings(mode="jwt", secret=SECRET, key_file=tmp / "k.pem"), "exactly one"
    yield AuthSettings(mode="jwt", secret="short"), "--jwt-secret"
    yield AuthSettings(mode="none", secret=SECRET), "--auth"
    yield AuthSettings(mode="basic"), "--auth"  # type: ignore[arg-type]
    yield AuthSettings(public=("news.#", "a..b")), "--public"
    yield AuthSettings(cookie_name="bad name;"), "--cookie-name"
    pem = public_pem(rsa_key).decode()
    yield AuthSettings(mode="jwt", secret=pem), "--jwt-secret"
    yield AuthSettings(mode="jwt", key_file=tmp / "missing.pem"), "--jwt-key"
    (tmp / "garbage.pem").write_text("not a key")
    yield AuthSettings(mode="jwt", key_file=tmp / "garbage.pem"), "--jwt-key"
    private = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp / "private.pem").write_bytes(private)
    yield AuthSettings(mode="jwt", key_file=tmp / "private.pem"), "private key"
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (tmp / "weak.pem").write_bytes(public_pem(weak))
    yield AuthSettings(mode="jwt", key_file=tmp / "weak.pem"), "too short"
    (tmp / "bad.json").write_text("{")
    yield AuthSettings(mode="jwt", jwks_file=tmp / "bad.json"), "--jwks"
    (tmp / "notjwks.json").write_text('{"keys": {}}')
    yield AuthSettings(mode="jwt", jwks_file=tmp / "notjwks.json"), "--jwks"
    private_jwk = json.loads(RSAAlgorithm.to_jwk(rsa_key))
    path = write_jwks(tmp / "private.json", private_jwk)
    yield AuthSettings(mode="jwt", jwks_file=path), "private key"
    path = write_jwks(tmp / "twice.json", rsa_jwk(rsa_key, kid="a"), rsa_jwk(rsa_key, kid="a"))
    yield AuthSettings(mode="jwt", jwks_file=path), "second key"
    path = write_jwks(tmp / "nokid.json", rsa_jwk(rsa_key, kid="a"), rsa_jwk(rsa_key))
    yield AuthSettings(mode="jwt", jwks_file=path), "needs a kid"
    path = write_jwks(tmp / "enc.json", rsa_jwk(rsa_key, use="enc"))
    yield AuthSettings(mode="jwt", jwks_file=path), "no usable"
    path = write_jwks(tmp / "short.json", {"kty": "oct", "k": b64(b"short"), "kid": "s"})
    yield AuthSettings(mode="jwt", jwks_file=path), "too short"
    none = {"kty": "oct", "k": b64(b"k" * 32), "alg": "none", "kid": "n"}
    yield AuthSettings(mode="jwt", jwks_file=write_jwks(tmp / "none.json", none)), "verifies"


def test_bad_settings_fail_at_start_up_naming_the_setting(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    for settings_, expected in bad_settings_cases(tmp_path, rsa_key):
        with pytest.raises(ConfigError) as info:
            Authorizer.from_settings(settings_)
        assert expected in str(info.value), settings_
        assert SECRET not in str(info.value)


def test_settings_repr_hides_the_secret() -> None:
    assert SECRET not in repr(AuthSettings(mode="jwt", secret=SECRET))
