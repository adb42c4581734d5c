"""Fault 6: on a three-node RabbitMQ cluster with the stream replicated on every node, the node
the gateway is connected to stops; the gateway fails over to the next broker URL, loses nothing.

Booting the cluster takes about half a minute, so this runs only with
``HOPCAST_FAULTS_CLUSTER=1`` (``make faults``, and CI) and is skipped otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest

from tests.faults.cluster import Node, RabbitCluster
from tests.faults.sequence import (
    PATTERNS,
    Publisher,
    check_sequence,
    read_stream,
)
from tests.faults.subscribers import (
    Pool,
    Subscriber,
    assert_exact,
    flowing,
    join,
    open_fresh,
    read_back,
)
from tests.faults.timings import Timings
from tests.support.processes import ChildGateway, child_gateway
from tests.support.rabbitmq import Names
from tests.support.waits import until, wait_ready

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("HOPCAST_FAULTS_CLUSTER") != "1",
        reason="starts a three-node RabbitMQ cluster: set HOPCAST_FAULTS_CLUSTER=1 (make faults)",
    ),
]


async def test_the_gateway_fails_over_when_its_cluster_node_stops(tmp_path: Path) -> None:
    timings = Timings()
    cluster = RabbitCluster(tmp_path / "cluster")
    names = Names.fresh()  # lives on the cluster, which goes away whole
    try:
        await asyncio.to_thread(cluster.start)
        timings.mark("cluster up")
        env = {
            "HOPCAST_EXCHANGE": names.exchange,
            "HOPCAST_STREAM": names.stream,
            "HOPCAST_STREAM_REPLICAS": "3",  # the gateway declares it on all three nodes
            "HOPCAST_BROKER": ",".join(cluster.urls),
            "HOPCAST_AMQP_HEARTBEAT": "2",
            "HOPCAST_RETRY": "300",
        }
        with child_gateway(env, log_dir=tmp_path) as gw:
            await wait_ready(gw.url)
            timings.mark("gateway ready")
            await until(lambda: _online_members(cluster, names.stream) == 3, "three stream members")
            timings.mark("stream on 3 nodes")
            await _run_failover(cluster, names, gw, timings)
    finally:
        await asyncio.to_thread(cluster.teardown)
        timings.mark("cluster down")
    assert not await asyncio.to_thread(cluster.registered)  # nothing of it is left running
    timings.show("cluster failover")


async def _run_failover(
    cluster: RabbitCluster, names: Names, gw: ChildGateway, timings: Timings
) -> None:
    pool = Pool(gw.url)
    async with contextlib.AsyncExitStack() as stack:
        publisher = await stack.enter_async_context(Publisher(names.exchange, cluster.urls))
        subs, early = await open_fresh(stack, pool, publisher, PATTERNS)
        await join(
            stack,
            subs,
            Subscriber("resumes f.#", pool, ("f.#",), last_event_id=early),
            Subscriber("since first", pool, ("f.a.*",), since_first=True),
        )
        publisher.start(interval=0.01)
        await publisher.wait_confirmed(100)

        ports = await asyncio.to_thread(_gateway_ports, cluster, names.stream)
        assert len(ports) == 1, ports  # reader and publisher on the node it reached first
        victim = cluster.node_on_port(ports.pop())
        leader = await asyncio.to_thread(_leader, cluster, names.stream)
        await asyncio.to_thread(cluster.ctl, victim, "stop_app")
        timings.mark(f"stopped {victim.name} (stream leader was {leader})")
        await flowing(subs, publisher, f"{victim.name} stopped", timeout=120)
        timings.mark("flowing again")
        survivors = [n for n in cluster.nodes if n is not victim]
        new_leader = await asyncio.to_thread(_leader, cluster, names.stream, survivors[0])
        timings.mark(f"stream leader now {new_leader}")
        total = await publisher.stop(more=100)
        truth = await read_stream([n.url for n in survivors], names.stream, total)
        await read_back(stack, pool, subs, truth)
        timings.mark(f"{total} caught up")
    check_sequence(truth, total)
    assert_exact(subs, truth, [gw])
    assert new_leader != victim.name


def _online_members(cluster: RabbitCluster, stream: str) -> int:
    for name, online in cluster.table("list_queues", "name", "online"):
        if name == stream:
            return online.count("@")
    return 0


def _leader(cluster: RabbitCluster, stream: str, node: Node | None = None) -> str:
    for name, leader in cluster.table("list_queues", "name", "leader", node=node):
        if name == stream:
            return leader
    return "?"


def _gateway_ports(cluster: RabbitCluster, stream: str) -> set[int]:
    """The AMQP ports (so the nodes) the gateway's connections are open on."""
    rows = cluster.table("list_connections", "port", "client_properties")
    return {int(port) for port, props in rows if f"hopcast {stream} " in props}
