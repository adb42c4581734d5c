from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.queues import delete_queues, fresh_queue_name


@pytest.fixture
async def queue(broker_kind: str) -> AsyncIterator[str]:
    """A work queue name of this test's own (its RabbitMQ queues deleted afterwards)."""
    name = fresh_queue_name()
    yield name
    if broker_kind == "amqp":
        await delete_queues([name])
