"""Grants: a pattern is allowed by containment, public patterns need no token, publishing.

What a verified token's ``hopcast`` claim lets its bearer subscribe to and publish on.
"""

from __future__ import annotations

import pytest

from hopcast._core.errors import Forbidden, InvalidTopic, Unauthorized
from hopcast._core.topics import Pattern
from hopcast._rights.principals import UNRESTRICTED, Principal
from tests.rights.jwt_kit import HS, SECRET, claims, hs256, make


def p(text: str) -> Pattern:
    return Pattern.parse(text)


def principal(subscribe: tuple[str, ...] = (), publish: tuple[str, ...] = ()) -> Principal:
    return Principal.from_claims({"hopcast": {"subscribe": [*subscribe], "publish": [*publish]}})


@pytest.mark.parametrize(
    ("granted", "wanted", "allowed"),
    [
        ("orders.#", "orders.*", True),
        ("orders.#", "orders", True),
        ("orders.#", "orders.42.items", True),
        ("orders.*", "orders.42", True),
        ("orders.*", "orders.#", False),
        ("orders.*", "orders", False),
        ("orders.#", "#", False),
        ("*", "#", False),
        ("#", "#", True),
        ("*.#", "#", True),
        ("#", "anything.at.*.all", True),
        ("user.42.#", "user.*.profile", False),
    ],
)
def test_a_pattern_is_allowed_by_containment(granted: str, wanted: str, allowed: bool) -> None:
    who = principal(subscribe=(granted,))
    if allowed:
        HS.check_subscribe(who, [p(wanted)])
    else:
        with pytest.raises(Forbidden) as info:
            HS.check_subscribe(who, [p(wanted)])
        assert info.value.target == wanted
        assert info.value.status == 403


def test_every_pattern_of_a_subscription_must_be_allowed() -> None:
    who = principal(subscribe=("orders.#", "user.42.#"))
    HS.check_subscribe(who, [p("orders.*"), p("user.42.inbox")])
    with pytest.raises(Forbidden) as info:
        HS.check_subscribe(who, [p("orders.*"), p("user.43.inbox"), p("user.44")])
    assert info.value.target == "user.43.inbox"
    assert "user.43.inbox" in info.value.www_authenticate
    assert 'error="insufficient_scope"' in info.value.www_authenticate


def test_public_patterns_need_no_token() -> None:
    auth = make(mode="jwt", secret=SECRET, public=("news.#", "status"))
    assert auth.authorize_subscribe(None, [p("news.*"), p("status")]) is None
    # A stale cookie must not break a public stream: the token is not even read.
    assert auth.authorize_subscribe("expired.or.garbage", [p("news.today")]) is None
    with pytest.raises(Unauthorized) as info:
        auth.authorize_subscribe(None, [p("news.*"), p("#")])
    assert info.value.www_authenticate == 'Bearer realm="hopcast"'
    token = hs256(claims(hopcast={"subscribe": ["orders.#"]}))
    who = auth.authorize_subscribe(token, [p("news.*"), p("orders.42")])
    assert who is not None
    assert who.subject == "alice"
    with pytest.raises(Forbidden):
        auth.authorize_subscribe(token, [p("news.*"), p("users.*")])
    with pytest.raises(Unauthorized):
        auth.authorize_publish(None, "news.today")


def test_check_subscribe_without_principal_is_unauthorized() -> None:
    with pytest.raises(Unauthorized) as info:
        HS.check_subscribe(None, [p("orders.*")])
    assert info.value.error is None
    assert info.value.status == 401


def test_publishing_needs_a_matching_publish_grant() -> None:
    who = principal(subscribe=("#",), publish=("orders.*",))
    HS.check_publish(who, "orders.42")
    with pytest.raises(Forbidden) as info:
        HS.check_publish(who, "orders.42.paid")
    assert info.value.action == "publish"
    with pytest.raises(Forbidden):
        HS.check_publish(principal(subscribe=("#",)), "orders.42")
    with pytest.raises(Unauthorized):
        HS.check_publish(None, "orders.42")
    with pytest.raises(InvalidTopic):
        HS.check_publish(who, "orders.*")
    token = hs256(claims(hopcast={"publish": ["orders.*"]}))
    assert HS.authorize_publish(token, "orders.1") is not None


def test_mode_none_allows_everything() -> None:
    auth = make()
    assert not auth.enabled
    assert auth.authenticate(None) is UNRESTRICTED
    assert auth.authenticate("whatever") is UNRESTRICTED
    assert auth.authorize_subscribe(None, [p("#")]) is None
    assert auth.authorize_publish(None, "anything.at.all") is None
    auth.check_subscribe(None, [p("#")])
    auth.check_publish(None, "x")
