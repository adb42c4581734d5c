"""The benchmark's subscriber: what it counts while a step runs, and the tally after it."""

from __future__ import annotations

import random
import time
from types import SimpleNamespace

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
    sub.data_received(HEAD)
    return sub, pool


async def test_events_split_anywhere_across_reads_count_once_each() -> None:
    sub, pool = await subscriber()
    stream = b"".join(frame(seq, 1_000.0 + seq / 1000) + b": ping\n\n" for seq in range(500))
    rng = random.Random(7)
    pos = 0
    while pos < len(stream):  # pieces of 1 to 300 bytes: some cut inside '{"seq"'
        step = rng.randint(1, 300)
        sub.data_received(stream[pos : pos + step])
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
        sub.data_received(frame(seq, 1_000.0))
    result = pool.result([0.01], failed=0, errors=[])
    assert (result.received, result.duplicates) == (6, 2)
    assert result.topics["t"].unique == 4
    assert result.lost({"t": 4}) == 0


async def test_latency_runs_from_the_send_time_to_the_read_that_completed_the_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = iter([2_000.5, 2_001.0])
    fake = SimpleNamespace(
        time=lambda: next(clock), perf_counter=time.perf_counter, process_time=time.process_time
    )
    monkeypatch.setattr(loadgen, "time", fake)
    sub, pool = await subscriber()
    whole = frame(1, 2_000.0) + frame(2, 2_000.25)
    sub.data_received(whole[:-60])  # the first event whole, the second cut: read at 2000.5
    sub.data_received(whole[-60:])  # the second completed: read at 2001.0
    result = pool.result([0.01], failed=0, errors=[])
    assert result.latency.total == 2
    assert result.latency.maximum == 0.75
    assert result.latency.quantile(0.5) == 0.5001  # the first: 0.5 s, in 0.1 ms buckets
