"""Tokens: verification, claim reading, where a token comes from, and no leak of it.

Tokens here are mostly HS256 against a shared secret; what a token's grants allow is
tested in ``test_grants``, the PEM and JWKS keys and the start-up checks on key
settings in ``test_keys``.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers, QueryParams

from hopcast._core.errors import Forbidden, HopcastError, Unauthorized
from hopcast._core.topics import Pattern
from hopcast._rights.principals import MAX_GRANTS, Principal
from hopcast._rights.tokens import (
    DEFAULT_COOKIE_NAME,
    LEEWAY_SECONDS,
    token_from,
)
from tests.rights.jwt_kit import (
    FAST,
    HS,
    OTHER_SECRET,
    SECRET,
    b64,
    claims,
    forge,
    hmac_with,
    hs256,
    json_values,
    make,
    refused,
)

AUDIENCE = "hopcast-tests"
ISSUER = "https://issuer.example"
HS_STRICT = make(mode="jwt", secret=SECRET, audience=AUDIENCE, issuer=ISSUER)


def p(text: str) -> Pattern:
    return Pattern.parse(text)


# HS256


def test_a_valid_hs256_token_gives_its_grants_subject_and_expiry() -> None:
    exp = int(time.time()) + 600
    principal = HS.authenticate(hs256(claims(exp=exp)))
    assert principal.subject == "alice"
    assert principal.subscribe == (p("orders.#"),)
    assert principal.publish == (p("orders.#"),)
    assert principal.expires_at == dt.datetime.fromtimestamp(exp, dt.UTC)
    left = principal.seconds_left()
    assert left is not None
    assert 590 < left <= 600


def test_a_token_without_exp_never_expires_and_without_claim_grants_nothing() -> None:
    principal = HS.authenticate(hs256({"sub": "bob"}))
    assert principal == Principal(subject="bob")
    assert principal.seconds_left() is None


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (claims(exp=int(time.time()) - 60), "expired"),
        (claims(nbf=int(time.time()) + 86400), "not valid yet"),
        (claims(iat=int(time.time()) + 86400), "not valid yet"),
        (claims(exp=float("inf")), "malformed"),
        (claims(exp="9999999999"), "exp must be a number"),
    ],
)
def test_time_claims_are_enforced(payload: dict[str, Any], reason: str) -> None:
    error = refused(HS, hs256(payload))
    assert reason in error.description
    assert error.error == "invalid_token"
    assert error.status == 401


def test_a_few_seconds_of_clock_skew_are_tolerated() -> None:
    now = time.time()  # not rounded down: the test keeps its whole two seconds of margin
    HS.authenticate(hs256(claims(exp=now - LEEWAY_SECONDS + 2, nbf=now + LEEWAY_SECONDS - 2)))


def test_audience_and_issuer_are_checked_when_configured() -> None:
    HS_STRICT.authenticate(hs256(claims(aud=AUDIENCE, iss=ISSUER)))
    HS_STRICT.authenticate(hs256(claims(aud=["other", AUDIENCE], iss=ISSUER)))
    assert "audience" in refused(HS_STRICT, hs256(claims(aud="other", iss=ISSUER))).description
    assert "issuer" in refused(HS_STRICT, hs256(claims(aud=AUDIENCE, iss="evil"))).description
    assert "aud" in refused(HS_STRICT, hs256(claims(iss=ISSUER))).description
    assert "iss" in refused(HS_STRICT, hs256(claims(aud=AUDIENCE))).description


def test_a_token_for_some_audience_is_refused_where_none_is_configured() -> None:
    # RFC 7519 §4.1.3: a recipient that does not identify itself with aud must reject.
    refused(HS, hs256(claims(aud="billing")))


def test_a_bad_signature_is_refused() -> None:
    assert "signature" in refused(HS, hs256(claims(), OTHER_SECRET)).description
    head, _, sig = hs256(claims()).split(".")
    tampered = b64(json.dumps(claims(hopcast={"subscribe": ["#"]})).encode())
    assert "signature" in refused(HS, f"{head}.{tampered}.{sig}").description


@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
@pytest.mark.parametrize("signature", [None, hmac_with(SECRET.encode())])
def test_alg_none_is_refused(alg: str, signature: Callable[[bytes], bytes] | None) -> None:
    token = forge({"alg": alg, "typ": "JWT"}, claims(), signature)
    assert refused(HS, token).error == "invalid_token"


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c.d", "é.é.é", "x" * 20_000])
def test_garbage_is_refused(token: str) -> None:
    error = refused(HS, token)
    assert error.error == ("invalid_token" if token else None)


# Claims


@pytest.mark.parametrize(
    "claim",
    [
        [],
        "orders.*",
        None,
        {"subscribe": "orders.*"},
        {"subscribe": None},
        {"subscribe": [1]},
        {"subscribe": [["orders.*"]]},
        {"subscribe": ["a..b"]},
        {"subscribe": [""]},
        {"publish": ["orders.#", "bad pattern"]},
        {"subscibe": ["orders.*"]},
        {"subscribe": ["orders.*"], "admin": True},
        {"subscribe": ["orders.*"] * (MAX_GRANTS + 1)},
    ],
)
def test_a_malformed_claim_is_an_invalid_token(claim: Any) -> None:
    payload = claims()
    payload["hopcast"] = claim
    assert refused(HS, hs256(payload)).error == "invalid_token"


def test_the_claim_reader_dedupes_and_accepts_missing_lists() -> None:
    principal = Principal.from_claims({"hopcast": {"subscribe": ["a.*", "a.*", "b"]}})
    assert principal.subscribe == (p("a.*"), p("b"))
    assert principal.publish == ()
    for huge in (10**400, 1e300):
        far = Principal.from_claims({"exp": huge}).expires_at
        assert far is not None
        assert far.year == 9999


pattern_like = st.sampled_from(["orders.*", "#", "a..b", "", "*.#", "x" * 70]) | st.text(
    alphabet="ab.*# ", max_size=12
)
hopcast_claims = json_values | st.dictionaries(
    st.sampled_from(["subscribe", "publish", "other"]),
    json_values | st.lists(pattern_like | json_values, max_size=5),
    max_size=3,
)


@FAST
@given(hopcast_claims)
def test_any_json_in_the_claim_is_read_or_refused_never_a_crash(claim: Any) -> None:
    token = hs256({"hopcast": claim})
    try:
        principal = HS.authenticate(token)
    except Unauthorized as exc:
        assert exc.error == "invalid_token"
        assert token not in str(exc)
        assert SECRET not in str(exc)
        assert exc.www_authenticate.startswith('Bearer realm="hopcast", error="invalid_token"')
        return
    assert all(isinstance(g, Pattern) for g in principal.subscribe + principal.publish)


registered = st.dictionaries(
    st.sampled_from(["exp", "nbf", "iat", "aud", "iss", "sub", "jti"]),
    json_values | st.integers(min_value=0, max_value=2**40),
)


@FAST
@given(registered)
def test_any_json_in_registered_claims_is_accepted_or_refused(payload: dict[str, Any]) -> None:
    # Signed by hand: PyJWT's encode refuses some of these (a non-string iss).
    token = forge({"alg": "HS256", "typ": "JWT"}, payload, hmac_with(SECRET.encode()))
    for auth in (HS, HS_STRICT):
        try:
            auth.authenticate(token)
        except Unauthorized as exc:
            assert exc.error == "invalid_token"


segments = st.binary(max_size=60) | json_values.map(lambda v: json.dumps(v).encode())
forged = st.tuples(segments, segments, segments).map(lambda t: ".".join(b64(s) for s in t))


@FAST
@given(st.text(max_size=80) | forged)
def test_any_string_is_refused_without_a_crash(token: str) -> None:
    with pytest.raises(Unauthorized):
        HS.authenticate(token)


# Token sources


def test_the_authorization_header_wins_over_the_cookie() -> None:
    cookies = {DEFAULT_COOKIE_NAME: "from-cookie"}
    assert token_from({"Authorization": "Bearer from-header"}, cookies, {}) == "from-header"
    assert token_from({"authorization": "bearer  from-header "}, cookies, {}) == "from-header"
    assert token_from({}, cookies, {}) == "from-cookie"
    assert token_from({}, {}, {}) is None
    assert token_from({}, {DEFAULT_COOKIE_NAME: ""}, {}) is None


def test_another_scheme_falls_through_to_the_cookie() -> None:
    cookies = {DEFAULT_COOKIE_NAME: "from-cookie"}
    assert token_from({"Authorization": "Basic dXNlcjpwdw=="}, cookies, {}) == "from-cookie"


@pytest.mark.parametrize("value", ["Bearer", "Bearer ", "Bearer a b"])
def test_a_malformed_bearer_header_is_an_invalid_request(value: str) -> None:
    with pytest.raises(Unauthorized) as info:
        token_from({"Authorization": value}, {}, {})
    assert info.value.error == "invalid_request"
    assert info.value.status == 400


def test_the_cookie_name_is_settable() -> None:
    auth = make(cookie_name="jwt")
    assert auth.token_from({}, {"jwt": "a", DEFAULT_COOKIE_NAME: "b"}, {}) == "a"
    assert auth.token_from({}, {DEFAULT_COOKIE_NAME: "b"}, {}) is None


def test_the_query_token_is_off_by_default() -> None:
    with pytest.raises(Unauthorized) as info:
        make().token_from({}, {}, {"access_token": "from-url"})
    assert info.value.error == "invalid_request"
    assert "from-url" not in str(info.value)
    allowed = make(allow_query_token=True)
    assert allowed.token_from({}, {}, {"access_token": "from-url"}) == "from-url"
    assert allowed.token_from({}, {DEFAULT_COOKIE_NAME: "c"}, {"access_token": "u"}) == "c"


def test_token_sources_accept_starlette_structures() -> None:
    headers = Headers(raw=[(b"authorization", b"Bearer from-header")])
    query = QueryParams("access_token=from-url")
    assert token_from(headers, {}, query) == "from-header"
    assert token_from(Headers(), {}, query, allow_query_token=True) == "from-url"


# No leaks


def test_no_error_or_log_line_carries_the_token_or_the_secret(
    caplog: pytest.LogCaptureFixture, rsa_pem_file: Path
) -> None:
    caplog.set_level(logging.DEBUG, logger="hopcast.rights")
    tokens = [
        hs256(claims(exp=int(time.time()) - 60)),
        hs256(claims(), OTHER_SECRET),
        hs256(claims(aud="other")),
        hs256(claims(hopcast={"subscribe": ["a..b"]})),
        hs256(claims(hopcast={"publish": "x"})),
        forge({"alg": "none"}, claims()),
        forge({"alg": "HS256"}, claims(), hmac_with(rsa_pem_file.read_bytes())),
        hs256(claims())[:-3],
    ]
    errors: list[Exception] = []
    for token in tokens:
        for auth in (HS, HS_STRICT, make(mode="jwt", key_file=rsa_pem_file)):
            with pytest.raises(Unauthorized) as info:
                auth.authenticate(token)
            errors.append(info.value)
            with pytest.raises(HopcastError) as denied:
                auth.authorize_subscribe(token, [p("secret.stuff")])
            errors.append(denied.value)
    good = hs256(claims())
    with pytest.raises(Forbidden) as forbidden:
        HS.authorize_subscribe(good, [p("#")])
    errors.append(forbidden.value)
    secrets = [SECRET, OTHER_SECRET, good, *tokens]
    for error in errors:
        shown = f"{error} {error!r} {getattr(error, 'www_authenticate', '')}"
        assert not any(s in shown for s in secrets), shown
    for record in caplog.records:
        assert not any(s in record.getMessage() for s in secrets), record.getMessage()
    assert caplog.records, "refusals are logged at DEBUG"
