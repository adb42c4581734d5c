"""The AMQP broker against the real RabbitMQ: what any AMQP client may publish, reads from
any start, the tail probes, and failures reported clearly."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pika
import pytest

from hopcast._broker import amqp
from hopcast._broker.amqp import AmqpBroker
from hopcast._broker.consumer import StreamConsumer
from hopcast._core.errors import BrokerUnavailable
from tests.support.brokers import LateToDeliver, publish_counted_history, read_messages
from tests.support.gateways import settings_for
from tests.support.rabbitmq import (
    AMQP_URL,
    Names,
    delete_topology,
    publish_with_pika,
    rabbitmqctl_table,
)

pytestmark = pytest.mark.usefixtures("rabbitmq")


EVERY_PROPERTY = pika.BasicProperties(
    content_type="application/json",
    content_encoding="utf-8",
    headers={
        "bool": True,
        "int": 7,
        "big": 2**40,
        "neg": -3,
        "text": "héllo",
        "bytes": b"\x00\xff",
        "list": [1, "two", [3]],
        "nested": {"a": {"b": None}},
        "when": datetime(2026, 1, 1),
        # a decimal header makes RabbitMQ 3.10 close the publisher's connection (541)
        # when it routes to a stream; the codec's own test covers that type
    },
    delivery_mode=2,
    priority=3,
    correlation_id="c",
    reply_to="r",
    expiration="60000",
    message_id="m",
    timestamp=1700000000,
    type="price",
    user_id="guest",
    app_id="a",
)
"""Every property AMQP 0-9-1 has, and a header of each type a stream takes."""


async def test_whatever_another_client_publishes_arrives_whole(
    amqp_broker: AmqpBroker, names: Names
) -> None:
    big = bytes(range(256)) * 1200  # 300 KiB: more than one body frame
    items = [
        (b"plain", pika.BasicProperties()),
        (b'{"all": "properties"}', EVERY_PROPERTY),
        (big, pika.BasicProperties(type="big")),
        (b"", pika.BasicProperties(type="empty")),
        (b"poison", pika.BasicProperties(type=b"\xff\xfe")),
        (b"after", pika.BasicProperties()),
    ]
    await asyncio.to_thread(publish_with_pika, names, items)
    messages = await read_messages(amqp_broker, "first", 5)
    assert [(m.topic, m.type, m.body) for m in messages] == [
        ("t.x", None, b"plain"),
        ("t.x", "price", b'{"all": "properties"}'),
        ("t.x", "big", big),
        ("t.x", "empty", b""),
        ("t.x", None, b"after"),
    ]
    offsets = [m.offset for m in messages]
    assert offsets == sorted(offsets) and offsets[-1] - offsets[0] == 5  # one stepped over
    assert await amqp_broker.tail(patient=True) == offsets[-1]


async def test_reads_start_where_asked_and_credit_keeps_flowing(
    amqp_broker: AmqpBroker, names: Names
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)
    items = [(str(i).encode(), pika.BasicProperties()) for i in range(100)]
    await asyncio.to_thread(publish_with_pika, names, items)
    everything = await read_messages(
        amqp_broker, "first", 100
    )  # prefetch 10: acks must return credit
    assert [m.body for m in everything] == [str(i).encode() for i in range(100)]
    first = everything[0].offset
    assert [m.body for m in await read_messages(amqp_broker, first + 95, 5)] == [
        b"95",
        b"96",
        b"97",
        b"98",
        b"99",
    ]
    assert len(await read_messages(amqp_broker, before, 100)) == 100
    async with amqp_broker.read("next") as reader:
        batches = reader.__aiter__()
        later = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.5)
        assert not later.done()
        await asyncio.to_thread(publish_with_pika, names, [(b"later", pika.BasicProperties())])
        async with asyncio.timeout(30):
            assert [m.body for m in await later] == [b"later"]


async def test_a_stream_deleted_under_a_read_ends_it(amqp_broker: AmqpBroker, names: Names) -> None:
    await asyncio.to_thread(publish_with_pika, names, [(b"one", pika.BasicProperties())])
    with pytest.raises(BrokerUnavailable, match="cancelled"):
        async with amqp_broker.read("first") as reader:
            async with asyncio.timeout(30):
                async for _batch in reader:
                    await delete_topology(names)


async def test_connection_failures_are_reported_clearly(names: Names) -> None:
    with pytest.raises(BrokerUnavailable, match="404"):
        await StreamConsumer.open(AMQP_URL, "hopcast-test-no-such-stream", "first", prefetch=10)
    wrong = AMQP_URL.replace("guest:guest", "guest:wrong")
    with pytest.raises(BrokerUnavailable, match="403 ACCESS_REFUSED"):
        await StreamConsumer.open(wrong, names.stream, "first", prefetch=10)
    with pytest.raises(OSError):
        await StreamConsumer.open("amqp://127.0.0.1:1/", names.stream, "first", prefetch=10)


@pytest.mark.slow
async def test_a_patient_tail_probe_waits_for_a_late_first_message(
    amqp_broker: AmqpBroker, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream gives no message count: it is empty when nothing comes from ``last`` in time.
    A patient probe (the hub's after a reconnect) gives a slow broker far longer."""
    assert await amqp_broker.tail() is None
    monkeypatch.setattr(amqp, "TAIL_PATIENT_WAIT", 60.0)
    probe = asyncio.create_task(amqp_broker.tail(patient=True))
    await asyncio.sleep(2 * amqp.TAIL_FIRST_WAIT)
    assert not probe.done()  # a quick probe would have called it empty by now
    await amqp_broker.publish("t", b"late", None)
    assert await probe == 0


@pytest.mark.slow
async def test_a_quick_tail_probe_gives_a_stream_rabbitmq_counts_messages_in_time(
    amqp_broker: AmqpBroker, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At start-up a slow first delivery must not make a stream with history look empty:
    RabbitMQ's count of the stream's messages, which lags its writes by seconds, says it
    is not."""
    last = await publish_counted_history(amqp_broker, names, 10)
    monkeypatch.setattr(amqp, "AmqpReader", LateToDeliver)
    assert await amqp_broker.tail() == last


async def test_a_quick_tail_probe_still_calls_an_uncounted_stream_empty(
    amqp_broker: AmqpBroker, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(amqp, "AmqpReader", LateToDeliver)
    monkeypatch.setattr(amqp, "TAIL_PATIENT_WAIT", 60.0)
    assert await amqp_broker.tail() is None  # did not wait the patient minute


async def test_the_stream_is_declared_with_its_replicas_when_asked(names: Names) -> None:
    """``--stream-replicas`` (x-initial-cluster-size): one here, on a single node."""
    broker = AmqpBroker(settings_for("amqp", names, stream_replicas=1))
    await broker.start()
    await broker.aclose()
    rows = await asyncio.to_thread(rabbitmqctl_table, "list_queues", "name", "arguments")
    (arguments,) = [args for name, args in rows if name == names.stream]
    assert '{"x-initial-cluster-size",1}' in arguments, arguments
