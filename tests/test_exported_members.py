"""The package's public surface is explicit and sorted."""

from __future__ import annotations

import hopcast


def test_all_is_sorted_and_complete() -> None:
    exported = hopcast.__all__
    assert exported == sorted(exported)
    for name in exported:
        assert getattr(hopcast, name) is not None
    public = {n for n in dir(hopcast) if not n.startswith("_")}
    modules = {
        "app",
        "auth",
        "broker",
        "cli",
        "client",
        "coalescing",
        "config",
        "errors",
        "hub",
        "keys",
        "limits",
        "listener",
        "logs",
        "metrics",
        "openapi",
        "request",
        "responses",
        "server",
        "sse",
        "subscription",
        "topics",
        "trie",
    }
    assert public - modules == set(exported)
