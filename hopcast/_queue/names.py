"""Work queue names: the topic rules, at most 200 bytes, and a last word that is not ``dead``.

>>> parse_queue_name("mail.outgoing")
'mail.outgoing'
>>> amqp_name("mail.outgoing")
'hopcast.q.mail.outgoing'
"""

from __future__ import annotations

from hopcast._core.errors import InvalidTopic
from hopcast._core.topics import parse_topic

PREFIX = "hopcast.q."
MAX_QUEUE_NAME_BYTES = 200
"""Leaves room in AMQP's 255 bytes for the prefix and the dead-letter queue's suffix."""


def parse_queue_name(text: str) -> str:
    """``text`` if it names a work queue, else `InvalidTopic` saying why."""
    name = parse_topic(text)
    if len(name.encode()) > MAX_QUEUE_NAME_BYTES:
        raise InvalidTopic(f"a queue name is at most {MAX_QUEUE_NAME_BYTES} bytes")
    if name.rsplit(".", 1)[-1] == "dead":
        raise InvalidTopic("a queue name's last word may not be 'dead' (its dead letters' name)")
    return name


def amqp_name(name: str) -> str:
    """The RabbitMQ queue behind the work queue ``name``."""
    return PREFIX + name
