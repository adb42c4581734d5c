"""The stream consumer against the real RabbitMQ: what any AMQP client may publish, and failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

import pika
import pytest

from hopcast._broker import amqp
from hopcast._broker.amqp import AmqpBroker
from hopcast._broker.base import Message
from hopcast._broker.consumer import StreamConsumer
from hopcast._core.errors import BrokerUnavailable
from hopcast._http import writes as coalescing
from tests.support import (
    AMQP_URL,
    Listener,
    Names,
    amqp_publish,
    create_app_server,
    delete_topology,
    serve_in_loop,
    settings_for,
)

pytestmark = pytest.mark.usefixtures("rabbitmq")


@pytest.fixture
async def broker(names: Names) -> AsyncIterator[AmqpBroker]:
    broker = AmqpBroker(settings_for("amqp", names, prefetch=10))
    await broker.start()
    yield broker
    await broker.aclose()


def publish_with_pika(names: Names, items: list[tuple[bytes, pika.BasicProperties]]) -> None:
    """Publish as another client library would, with its own encoding of properties."""
    conn = pika.BlockingConnection()
    try:
        channel = conn.channel()
        channel.confirm_delivery()
        for body, props in items:
            channel.basic_publish(names.exchange, "t.x", body, props)
    finally:
        conn.close()


async def read(broker: AmqpBroker, start: int | datetime | str, count: int) -> list[Message]:
    messages: list[Message] = []
    async with broker.read(start) as reader:  # type: ignore[arg-type]
        async with asyncio.timeout(30):
            async for batch in reader:
                messages += batch
                if len(messages) >= count:
                    return messages
    return messages


async def test_whatever_another_client_publishes_arrives_whole(
    broker: AmqpBroker, names: Names
) -> None:
    headers = {
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
    }
    big = bytes(range(256)) * 1200  # 300 KiB: more than one body frame
    items = [
        (b"plain", pika.BasicProperties()),
        (
            b'{"all": "properties"}',
            pika.BasicProperties(
                content_type="application/json",
                content_encoding="utf-8",
                headers=headers,
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
            ),
        ),
        (big, pika.BasicProperties(type="big")),
        (b"", pika.BasicProperties(type="empty")),
        (b"poison", pika.BasicProperties(type=b"\xff\xfe")),
        (b"after", pika.BasicProperties()),
    ]
    await asyncio.to_thread(publish_with_pika, names, items)
    messages = await read(broker, "first", 5)
    assert [(m.topic, m.type, m.body) for m in messages] == [
        ("t.x", None, b"plain"),
        ("t.x", "price", b'{"all": "properties"}'),
        ("t.x", "big", big),
        ("t.x", "empty", b""),
        ("t.x", None, b"after"),
    ]
    offsets = [m.offset for m in messages]
    assert offsets == sorted(offsets) and offsets[-1] - offsets[0] == 5  # one stepped over
    assert await broker.tail(patient=True) == offsets[-1]


async def test_reads_start_where_asked_and_credit_keeps_flowing(
    broker: AmqpBroker, names: Names
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=2)
    items = [(str(i).encode(), pika.BasicProperties()) for i in range(100)]
    await asyncio.to_thread(publish_with_pika, names, items)
    everything = await read(broker, "first", 100)  # prefetch 10: acks must return credit
    assert [m.body for m in everything] == [str(i).encode() for i in range(100)]
    first = everything[0].offset
    assert [m.body for m in await read(broker, first + 95, 5)] == [
        b"95",
        b"96",
        b"97",
        b"98",
        b"99",
    ]
    assert len(await read(broker, before, 100)) == 100
    async with broker.read("next") as reader:
        batches = reader.__aiter__()
        later = asyncio.ensure_future(anext(batches))
        await asyncio.sleep(0.5)
        assert not later.done()
        await asyncio.to_thread(publish_with_pika, names, [(b"later", pika.BasicProperties())])
        async with asyncio.timeout(30):
            assert [m.body for m in await later] == [b"later"]


async def test_a_stream_deleted_under_a_read_ends_it(broker: AmqpBroker, names: Names) -> None:
    await asyncio.to_thread(publish_with_pika, names, [(b"one", pika.BasicProperties())])
    with pytest.raises(BrokerUnavailable, match="cancelled"):
        async with broker.read("first") as reader:
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


async def test_a_patient_tail_probe_waits_for_a_late_first_message(
    broker: AmqpBroker, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stream gives no message count: it is empty when nothing comes from ``last`` in time.
    A patient probe (the hub's after a reconnect) gives a slow broker far longer."""
    assert await broker.tail() is None
    monkeypatch.setattr(amqp, "TAIL_PATIENT_WAIT", 60.0)
    probe = asyncio.create_task(broker.tail(patient=True))
    await asyncio.sleep(2 * amqp.TAIL_FIRST_WAIT)
    assert not probe.done()  # a quick probe would have called it empty by now
    await broker.publish("t", b"late", None)
    assert await probe == 0


class _LateToDeliver(amqp.AmqpReader):
    """A read whose first delivery comes after a quick tail probe stopped waiting,
    as a loaded RabbitMQ's may."""

    async def __aiter__(self) -> AsyncIterator[Sequence[Message]]:
        # the live read later still, so that a resume is placed before its first batch
        await asyncio.sleep(
            6 * amqp.TAIL_FIRST_WAIT if self._purpose == "live" else 2 * amqp.TAIL_FIRST_WAIT
        )
        async for batch in super().__aiter__():
            yield batch


def counted_messages(names: Names) -> int:
    conn = pika.BlockingConnection()
    try:
        declared = conn.channel().queue_declare(names.stream, passive=True)
        return int(declared.method.message_count)
    finally:
        conn.close()


async def until_counted(names: Names) -> None:
    """Wait until RabbitMQ counts messages in the stream (its count lags the writes)."""
    async with asyncio.timeout(60):
        while not await asyncio.to_thread(counted_messages, names):
            await asyncio.sleep(0.2)


async def publish_counted_history(broker: AmqpBroker, names: Names, count: int) -> int:
    """Publish ``count`` events and wait until RabbitMQ counts them; the last offset."""
    items = [(str(i).encode(), pika.BasicProperties()) for i in range(count)]
    await asyncio.to_thread(publish_with_pika, names, items)
    last = (await read(broker, "first", count))[-1].offset
    await until_counted(names)
    return last


async def test_a_quick_tail_probe_gives_a_stream_rabbitmq_counts_messages_in_time(
    broker: AmqpBroker, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At start-up a slow first delivery must not make a stream with history look empty:
    RabbitMQ's count of the stream's messages, which lags its writes by seconds, says it
    is not."""
    last = await publish_counted_history(broker, names, 10)
    monkeypatch.setattr(amqp, "AmqpReader", _LateToDeliver)
    assert await broker.tail() == last


async def test_a_gateway_starting_on_a_slow_broker_sends_fresh_subscribers_no_history(
    broker: AmqpBroker, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Had the start-up probe called the stream empty, the hub would read it from its start
    and send its history to the subscribers already there, as new events."""
    last = await publish_counted_history(broker, names, 5)
    monkeypatch.setattr(amqp, "AmqpReader", _LateToDeliver)
    async with serve_in_loop(settings_for("amqp", names)) as gw:
        async with Listener(f"{gw.url}/events/t.x") as fresh:
            await fresh.wait_until(lambda s: s.last_id is not None)
            await asyncio.to_thread(publish_with_pika, names, [(b"new", pika.BasicProperties())])
            first = (await fresh.wait_for(1))[0]  # history would come first: streams keep order
        assert (first.data, int(first.id)) == ("new", last + 1)


async def test_a_quick_tail_probe_still_calls_an_uncounted_stream_empty(
    broker: AmqpBroker, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(amqp, "AmqpReader", _LateToDeliver)
    monkeypatch.setattr(amqp, "TAIL_PATIENT_WAIT", 60.0)
    assert await broker.tail() is None  # did not wait the patient minute


async def test_a_resume_placed_while_the_ring_fills_hears_of_events_retention_took(
    names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub asks the stream for offsets retention has taken (its ring reaches further
    back than the stream); a resume placed meanwhile is told, as one from the stream is."""
    settings = settings_for("amqp", names, stream_max_bytes=3000, stream_segment_bytes=1000)
    async with serve_in_loop(settings):  # creates the stream with that retention
        for i in range(60):
            await amqp_publish(names, [("r", f"{i:03d}".ljust(100).encode(), None)])
    await until_counted(names)  # so that the start-up probe waits for the tail
    monkeypatch.setattr(amqp, "AmqpReader", _LateToDeliver)
    async with (
        create_app_server(settings) as (url, _app),
        Listener(f"{url}/events/r", {"Last-Event-ID": "0"}) as sub,
    ):
        missed, first = (await sub.wait_for(2))[:2]
    assert missed.event == "hopcast-missed"
    info = json.loads(missed.data)
    assert info["reason"] == "retention" and info["requested"] == 0 and info["first"] > 1
    assert int(missed.id) == info["first"] - 1 and int(first.id) == info["first"]


async def test_with_writes_held_the_live_reader_reads_once_per_turn_and_loses_nothing(
    names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Busy enough to hold writes (forced here), the gateway reads the stream just before
    each turn of the window: events arrive in bursts on a paused socket, all of them, in
    order, once."""
    monkeypatch.setattr(coalescing, "should_hold", lambda busy, fill, holding: True)
    resumed = 0
    read_again = StreamConsumer._read_again

    def counted(self: StreamConsumer) -> None:
        nonlocal resumed
        resumed += 1
        read_again(self)

    monkeypatch.setattr(StreamConsumer, "_read_again", counted)
    settings = settings_for("amqp", names, coalesce_ms=40)
    async with (
        serve_in_loop(settings) as gw,
        Listener(f"{gw.url}/events/p.%23") as sub,
    ):
        await sub.wait_until(lambda s: s.last_id is not None)
        for burst in range(20):
            await amqp_publish(
                names, [(f"p.{i % 3}", b"%d" % (burst * 10 + i), None) for i in range(10)]
            )
            await asyncio.sleep(0.005)
        events = await sub.wait_for(200)
    assert [e.data for e in events] == [str(n) for n in range(200)]
    assert resumed > 0  # the socket was left unread between turns
