"""The package's public surface is explicit and sorted; everything else is internal."""

from __future__ import annotations

import pkgutil

import hopcast


def test_all_is_sorted_and_complete() -> None:
    exported = hopcast.__all__
    assert exported == sorted(exported)
    for name in exported:
        assert getattr(hopcast, name) is not None
    assert exported == [
        "BrokerUnavailable",
        "CannotStart",
        "Client",
        "ConfigError",
        "Event",
        "Forbidden",
        "HopcastError",
        "InvalidEventName",
        "InvalidInput",
        "InvalidOffset",
        "InvalidTopic",
        "LeaseLost",
        "Missed",
        "PublishNotConfirmed",
        "PublishRefused",
        "Published",
        "QueueRefused",
        "Refused",
        "Settings",
        "Subscription",
        "SubscriptionClosed",
        "SubscriptionRefused",
        "Task",
        "TaskStream",
        "Unauthorized",
        "create_app",
    ]


def test_every_module_but_the_entry_point_is_marked_internal() -> None:
    names = [m.name for m in pkgutil.iter_modules(hopcast.__path__)]
    assert names, "the package has modules"
    assert [n for n in names if not n.startswith("_")] == []
    public = {n for n in dir(hopcast) if not n.startswith("_")}
    assert public == set(hopcast.__all__)
