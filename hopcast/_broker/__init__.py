"""Brokers: the interface the hub needs (`base`), and the one a URL names.

`hopcast._broker.amqp` (RabbitMQ streams, the product) and
`hopcast._broker.memory` (embedded, same offsets and resume semantics) are
imported only when chosen, so a gateway on ``memory://`` never loads aiormq.
"""

from __future__ import annotations

from hopcast._broker.base import Broker, TaskBroker
from hopcast._core.errors import ConfigError
from hopcast._core.settings import Settings


def broker_from_settings(settings: Settings) -> Broker:
    """Build the broker that ``settings.broker`` names (``amqp://…`` or ``memory://``)."""
    scheme = settings.broker[0].split(":", 1)[0].lower()
    if scheme == "memory":
        from hopcast._broker.memory import MemoryBroker

        return MemoryBroker(max_length=settings.memory_max_events)
    if scheme in ("amqp", "amqps"):
        from hopcast._broker.amqp import AmqpBroker

        return AmqpBroker(settings)
    raise ConfigError(
        f"broker: unsupported URL scheme {scheme!r} (use amqp://, amqps:// or memory://)"
    )


def tasks_of(broker: Broker) -> TaskBroker | None:
    """The work queues of ``broker``: RabbitMQ's quorum queues, or the memory broker's own;
    None for any other broker (a test's double)."""
    from hopcast._broker.memory import MemoryBroker

    if isinstance(broker, MemoryBroker):
        return broker.tasks
    from hopcast._broker.amqp import AmqpBroker  # not memory://: RabbitMQ is loaded already
    from hopcast._broker.amqp_tasks import AmqpTasks

    return AmqpTasks(broker) if isinstance(broker, AmqpBroker) else None
