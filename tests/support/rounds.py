"""How many examples a Hypothesis test runs: what it asks for, or a few for the inner loop.

The profile is chosen by ``HOPCAST_HYPOTHESIS_PROFILE`` (``tests/conftest.py``):
``full``, the default, lets every test take the count it asks for; ``quick``
(``make test-fast``) caps every count at a few.
"""

from __future__ import annotations

from hypothesis import settings

PROFILES = {"full": 10_000, "quick": 10}
"""Each profile's ceiling on a test's examples (``full``'s is above any test's count)."""


def register_profiles() -> None:
    for name, ceiling in PROFILES.items():
        settings.register_profile(name, max_examples=ceiling, deadline=None)


def rounds(count: int) -> settings:
    """Settings for ``count`` examples, without a deadline, at most the loaded profile's ceiling."""
    return settings(max_examples=min(count, settings().max_examples), deadline=None)
