"""The work queue settings, and the subscriber buffer's former name."""

from __future__ import annotations

import pytest

from hopcast._core.errors import ConfigError
from hopcast._core.settings import Settings


def test_queues_come_as_a_comma_list() -> None:
    settings = Settings.from_env({"HOPCAST_QUEUE": "mail, jobs.resize"})
    assert settings.queue == ("mail", "jobs.resize")
    assert (settings.lease, settings.max_lease, settings.queue_delivery_limit) == (30, 1500, 10)
    assert Settings.from_env({}, queue=("a", "b")).queue == ("a", "b")


def test_queues_are_served_by_several_processes_too() -> None:
    settings = Settings.from_env({"HOPCAST_QUEUE": "mail", "HOPCAST_WORKERS": "2"})
    assert (settings.queue, settings.workers) == (("mail",), 2)


def test_the_former_name_of_the_subscriber_buffer_still_works_with_a_note() -> None:
    former = Settings.from_env({"HOPCAST_QUEUE_SIZE": "16"})
    assert former.subscriber_buffer == 16
    assert former.former_names_used == [
        "--queue-size (HOPCAST_QUEUE_SIZE) is now --subscriber-buffer"
    ]
    both = Settings.from_env({"HOPCAST_QUEUE_SIZE": "16", "HOPCAST_SUBSCRIBER_BUFFER": "8"})
    assert both.subscriber_buffer == 8
    assert Settings.from_env({}).former_names_used == []
    rebuilt = Settings.from_env(former.to_env())  # as worker processes get them: no note
    assert (rebuilt.subscriber_buffer, rebuilt.former_names_used) == (16, [])


def test_a_lease_secret_is_long_enough_and_never_shown() -> None:
    with pytest.raises(ConfigError, match="at least 32 bytes") as refused:
        Settings.from_env({"HOPCAST_LEASE_SECRET": "short"})
    assert "short" not in str(refused.value)
    assert Settings.from_env({"HOPCAST_LEASE_SECRET": "k" * 32}).lease_secret is not None
