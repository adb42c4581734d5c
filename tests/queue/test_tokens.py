"""Lease tokens: signed for one queue by one key; anything else is not a lease of ours."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hopcast._core.errors import InvalidLease
from hopcast._queue.leases import TOKEN_CHARS, LeaseRef, LeaseSigner
from tests.support.rounds import rounds

SIGNER = LeaseSigner(b"a lease secret of some length....")
REF = LeaseRef(SIGNER.instance, channel=4, tag=2**40, generation=17)
TOKEN = SIGNER.sign("mail", REF)


def test_a_token_names_its_lease() -> None:
    assert len(TOKEN) == TOKEN_CHARS
    assert SIGNER.read("mail", TOKEN) == REF


def test_a_token_of_a_later_start_with_the_same_secret_verifies_but_names_another_start() -> None:
    later = LeaseSigner(b"a lease secret of some length....")
    assert later.read("mail", TOKEN).instance != later.instance  # so its lease is lost (409)


@pytest.mark.parametrize(
    ("queue", "token", "signer"),
    [
        ("other", TOKEN, SIGNER),  # another queue's
        ("mail", TOKEN, LeaseSigner()),  # another key's
        ("mail", TOKEN[:-1] + ("A" if TOKEN[-1] != "A" else "B"), SIGNER),
        ("mail", ("A" if TOKEN[0] != "A" else "B") + TOKEN[1:], SIGNER),
        ("mail", TOKEN + "=", SIGNER),
        ("mail", TOKEN.replace(".", "-"), SIGNER),
        ("mail", "", SIGNER),
        ("mail", 42, SIGNER),
        ("mail", None, SIGNER),
    ],
)
def test_anything_else_is_refused(queue: str, token: object, signer: LeaseSigner) -> None:
    with pytest.raises(InvalidLease):
        signer.read(queue, token)


@rounds(300)
@given(st.one_of(st.text(max_size=100), st.from_regex(r"[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]{22}")))
def test_no_text_is_anything_but_refused(text: str) -> None:
    with pytest.raises(InvalidLease):
        SIGNER.read("mail", text)
