"""A gateway on a RabbitMQ slow to deliver: no history passed off as new, retention told,
and reads held back with the writes lose nothing."""

from __future__ import annotations

import asyncio
import json
import logging

import pika
import pytest

from hopcast._broker import amqp
from hopcast._broker.amqp import AmqpBroker
from hopcast._http import writes as coalescing
from tests.support.brokers import LateToDeliver, publish_counted_history
from tests.support.clients import Listener
from tests.support.gateways import create_app_server, serve_in_loop, settings_for
from tests.support.rabbitmq import Names, amqp_publish, publish_with_pika, until_counted

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("rabbitmq")]


async def test_a_gateway_starting_on_a_slow_broker_sends_fresh_subscribers_no_history(
    amqp_broker: AmqpBroker, names: Names, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Had the start-up probe called the stream empty, the hub would read it from its start
    and send its history to the subscribers already there, as new events."""
    last = await publish_counted_history(amqp_broker, names, 5)
    monkeypatch.setattr(amqp, "AmqpReader", LateToDeliver)
    async with serve_in_loop(settings_for("amqp", names)) as gw:
        async with Listener(f"{gw.url}/events/t.x") as fresh:
            await fresh.wait_started()
            await asyncio.to_thread(publish_with_pika, names, [(b"new", pika.BasicProperties())])
            first = (await fresh.wait_for(1))[0]  # history would come first: streams keep order
        assert (first.data, int(first.last_event_id)) == ("new", last + 1)


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
    monkeypatch.setattr(amqp, "AmqpReader", LateToDeliver)
    async with (
        create_app_server(settings) as (url, _app),
        Listener(f"{url}/events/r", {"Last-Event-ID": "0"}) as sub,
    ):
        missed, first = (await sub.wait_for(2))[:2]
    assert missed.type == "hopcast-missed"
    info = json.loads(missed.data)
    assert info["reason"] == "retention" and info["requested"] == 0 and info["first"] > 1
    assert (
        int(missed.last_event_id) == info["first"] - 1 and int(first.last_event_id) == info["first"]
    )


async def test_with_writes_held_every_event_arrives_in_order_once(
    names: Names, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Busy enough to hold writes (forced here), events from the real stream still arrive,
    all of them, in order, once, each connection's in writes at most the delay apart."""
    monkeypatch.setattr(coalescing, "should_hold", lambda busy, fill, holding: True)
    caplog.set_level(logging.INFO, logger="hopcast.http")
    settings = settings_for("amqp", names, max_write_delay=0.04)
    async with (
        serve_in_loop(settings) as gw,
        Listener(f"{gw.url}/events/p.%23") as sub,
    ):
        await sub.wait_started()
        for burst in range(20):
            await amqp_publish(
                names, [(f"p.{i % 3}", b"%d" % (burst * 10 + i), None) for i in range(10)]
            )
            await asyncio.sleep(0.005)
        events = await sub.wait_for(200)
    assert [e.data for e in events] == [str(n) for n in range(200)]
    assert "writes held up to 40 ms" in caplog.text
