"""The errors' tree: bearer challenges as RFC 6750 writes them, every error a ``HopcastError``."""

from __future__ import annotations

from hopcast._core.errors import Forbidden, HopcastError, Unauthorized


def test_challenges_follow_rfc_6750() -> None:
    assert Unauthorized.missing().www_authenticate == 'Bearer realm="hopcast"'
    error = Unauthorized('bad "quote" \\ and\nnewline ü')
    assert error.www_authenticate == (
        'Bearer realm="hopcast", error="invalid_token",'
        ' error_description="bad ?quote? ? and?newline ?"'
    )
    assert isinstance(error, HopcastError)
    assert isinstance(Forbidden("subscribe", "#"), HopcastError)
