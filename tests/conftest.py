from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support import Names, delete_topology, need_rabbitmq


@pytest.fixture(params=["memory", "amqp"])
def broker_kind(request: pytest.FixtureRequest) -> str:
    """Run a behavioural test once on the memory broker and once on the real RabbitMQ."""
    kind: str = request.param
    if kind == "amqp":
        need_rabbitmq()
    return kind


@pytest.fixture
async def names() -> AsyncIterator[Names]:
    """A fresh exchange and stream for this test, deleted afterwards."""
    fresh = Names.fresh()
    yield fresh
    await delete_topology(fresh)


@pytest.fixture
def rabbitmq() -> None:
    """Mark a test as needing the real RabbitMQ (fails in CI when it is missing)."""
    need_rabbitmq()
