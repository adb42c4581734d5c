"""The benchmark's subscriber: what it counts while a step runs, and the tally after it."""

from __future__ import annotations

import random
import socket
import time

import pytest

from bench import loadgen
from bench.loadgen import FleetConfig, SseSubscriber, _Pool
from bench.publisher import make_body

HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"


def frame(seq: int, ts: float) -> bytes:
    """One event as a chunk of a chunked response, as the gateway writes it."""
    event = b"id: %d\ndata: %s\n\n" % (seq, make_body(seq, ts))
    return b"%x\r\n%s\r\n" % (len(event), event)


async def subscriber() -> tuple[SseSubscriber, _Pool]:
    pool = _Pool(FleetConfig("127.0.0.1", 1, ("t",)))
    sub = SseSubscriber(pool, "t", None)
    pool.subscribers.append(sub)
    sub.data_received(HEAD, 0.0)
    return sub, pool


async def test_events_split_anywhere_across_reads_count_once_each() -> None:
    sub, pool = await subscriber()
    stream = b"".join(frame(seq, 1_000.0 + seq / 1000) + b": ping\n\n" for seq in range(500))
    rng = random.Random(7)
    pos = 0
    while pos < len(stream):  # pieces of 1 to 300 bytes: some cut inside '{"seq"'
        step = rng.randint(1, 300)
        sub.data_received(stream[pos : pos + step], 2_000.0)
        pos += step
    assert pool.received == 500  # counted as the reads came, for the runner's progress

    result = pool.result([0.01], failed=0, errors=[])
    assert (result.received, result.duplicates) == (500, 0)
    assert result.topics["t"].unique == 500
    assert result.latency.total == 500
    assert result.lost({"t": 500}) == 0
    assert result.lost({"t": 501}) == 1


async def test_a_repeat_or_a_step_back_counts_as_a_duplicate() -> None:
    sub, pool = await subscriber()
    for seq in (1, 2, 2, 3, 1, 4):
        sub.data_received(frame(seq, 1_000.0), 1_000.0)
    result = pool.result([0.01], failed=0, errors=[])
    assert (result.received, result.duplicates) == (6, 2)
    assert result.topics["t"].unique == 4
    assert result.lost({"t": 4}) == 0


async def test_latency_runs_from_the_send_time_to_the_stamp_of_the_read_that_completed_it() -> None:
    """The kernel's stamp of a read times its events; the generator's lag behind the stamp
    is kept apart (the read-clock latency and the lag itself)."""
    sub, pool = await subscriber()
    whole = frame(1, 2_000.0) + frame(2, 2_000.25)
    sub.data_received(whole[:-60], 2_000.5, 0.002)  # the first whole, the second cut
    sub.data_received(whole[-60:], 2_001.0, 0.004)  # the second completed
    result = pool.result([0.01], failed=0, errors=[])
    assert result.latency.total == 2
    assert result.latency.maximum == 0.75
    assert result.latency.quantile(0.5) == 0.5001  # the first: 0.5 s, in 0.1 ms buckets
    assert result.read_latency.quantile(0.5) == 0.5021  # 0.5 s and 2 ms of lag
    assert result.read_lag.total == 2
    assert result.read_lag.quantile(1.0) == 0.004  # the exact maximum


def test_a_socket_read_is_stamped_by_the_kernel() -> None:
    """SO_TIMESTAMPNS gives each read the time its bytes reached the socket, on the clock
    the publisher writes into the events."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    with a, b:
        b.setsockopt(socket.SOL_SOCKET, loadgen.SO_TIMESTAMPNS, 1)
        before = time.time()
        a.sendall(b"x")
        _, ancillary, _, _ = b.recvmsg(16, loadgen._ANCILLARY)
        stamps = [v for _, kind, v in ancillary if kind == loadgen.SO_TIMESTAMPNS]
        assert len(stamps) == 1
        seconds, nanoseconds = loadgen._TIMESPEC.unpack_from(stamps[0])
        assert before <= seconds + nanoseconds * 1e-9 <= time.time()


async def test_the_gateways_share_is_each_deliverys_lead_over_the_bare_consumer() -> None:
    """Matched by topic and seq: a subscriber's receipt less a bare stream consumer's
    receipt of the same event; one the bare consumer had later counts as 0, and apart."""
    sub, pool = await subscriber()
    sub.data_received(frame(1, 1_000.0) + frame(2, 1_000.0), 1_000.010)
    sub.data_received(frame(3, 1_000.0), 1_000.020)
    arrivals = {("t", 1): 1_000.002, ("t", 2): 1_000.012, ("t", 3): 1_000.015, ("u", 3): 0.0}
    result = pool.result([0.01], failed=0, errors=[], arrivals=arrivals)
    assert result.share.total == 3
    assert result.share_negative == 1  # seq 2: 2 ms ahead of the bare consumer
    assert result.share.maximum == pytest.approx(0.008)  # seq 1
    assert result.share.quantile(0.5) == pytest.approx(0.005, abs=1e-4)  # seq 3: 5 ms


async def test_without_a_bare_consumer_no_share_is_measured() -> None:
    sub, pool = await subscriber()
    sub.data_received(frame(1, 1_000.0), 1_000.010)
    result = pool.result([0.01], failed=0, errors=[])
    assert result.share.total == 0
    assert result.latency.total == 1
