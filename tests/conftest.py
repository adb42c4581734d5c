from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from hypothesis import settings

from hopcast._broker.amqp import AmqpBroker
from tests.support.gateways import settings_for
from tests.support.rabbitmq import Names, delete_topology, need_rabbitmq
from tests.support.rounds import register_profiles

# Helper modules with assertions of their own: report them as a test module's are.
pytest.register_assert_rewrite("tests.integration.hostile_kit", "tests.hub.kit")

register_profiles()
settings.load_profile(os.environ.get("HOPCAST_HYPOTHESIS_PROFILE", "full"))


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


@pytest.fixture
async def amqp_broker(rabbitmq: None, names: Names) -> AsyncIterator[AmqpBroker]:
    """The AMQP broker on this test's exchange and stream, started (a prefetch of 10)."""
    broker = AmqpBroker(settings_for("amqp", names, prefetch=10))
    await broker.start()
    yield broker
    await broker.aclose()
