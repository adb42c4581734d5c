"""The second latency client (``bench/latency/client.js``): its parsing fed cut-up input,
and its answer read back as a fleet's result."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from typing import Any

import pytest

from bench.nodeclient import NODE_CLIENT_DIR, result_of
from bench.publisher import make_body

# Feeds the client's Stream the pieces read from stdin (JSON: [[text, receipt ms], ...])
# and prints what it counted.
FEED = """
const { Stream, Tally, summarize } = require("./client.js");
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const { pieces, marker } = JSON.parse(input);
  const tally = new Tally();
  const stream = new Stream("t", tally, marker);
  let liveAt = -1;
  stream.onLive = () => (liveAt = tally.received);
  pieces.forEach(([text, at]) => stream.feed(text, at));
  const part = { connected: 1, failed: 0, disconnects: 0, received: tally.received,
    perTopic: { t: { connections: 1, unique: stream.unique, duplicates: stream.duplicates } },
    samples: tally.samples.values.slice(0, tally.samples.length), firstAt: tally.firstAt,
    lastAt: tally.lastAt, cpu: 0, errors: [] };
  console.log(JSON.stringify({ live: stream.live, liveAt, summary: summarize([part]) }));
});
"""


@pytest.fixture(scope="module")
def node() -> str:
    """node, with the client's pinned packages (installed from the lock file when missing)."""
    found = shutil.which("node")
    if found is None:
        pytest.skip("node is missing (bench/setup)")
    if not (NODE_CLIENT_DIR / "node_modules" / "eventsource-parser").is_dir():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is missing (bench/setup)")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_CLIENT_DIR,
            check=True,
            timeout=300,
        )
    return found


def feed(node: str, pieces: list[tuple[str, float]], marker: str | None = None) -> Any:
    done = subprocess.run(
        [node, "-e", FEED],
        cwd=NODE_CLIENT_DIR,
        input=json.dumps({"pieces": pieces, "marker": marker}),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(done.stdout)


def event(seq: int, ts: float) -> str:
    return f"id: {seq}\ndata: {make_body(seq, ts).decode()}\n\n"


def test_events_cut_anywhere_are_each_counted_once_with_their_latency(node: str) -> None:
    """500 events and heartbeat comments, cut into pieces of 1 to 300 characters (some
    inside a field name, some between the two newlines that end an event)."""
    text = "".join(event(seq, 1_000.0) + ": ping\n\n" for seq in range(500))
    rng = random.Random(7)
    pieces, pos = [], 0
    while pos < len(text):
        step = rng.randint(1, 300)
        pieces.append((text[pos : pos + step], 1_000_250.0))  # received at 1000.25 s
        pos += step
    summary = feed(node, pieces)["summary"]
    assert summary["received"] == 500
    assert summary["duplicates"] == 0
    assert summary["per_topic"]["t"]["unique"] == 500
    assert summary["latency_s"]["p50"] == pytest.approx(0.25)
    assert summary["latency_s"]["max"] == pytest.approx(0.25)


def test_an_event_is_timed_by_the_piece_that_completed_it(node: str) -> None:
    whole = event(1, 2_000.0) + event(2, 2_000.25)
    cut = len(event(1, 2_000.0)) + 30  # the second event's data line cut
    pieces = [(whole[:cut], 2_000_500.0), (whole[cut:], 2_001_000.0)]
    summary = feed(node, pieces)["summary"]
    assert summary["received"] == 2
    assert summary["latency_s"]["p50"] == pytest.approx(0.5)  # nearest rank: the first
    assert summary["latency_s"]["max"] == pytest.approx(0.75)


def test_a_repeat_or_a_step_back_counts_as_a_duplicate(node: str) -> None:
    pieces = [(event(seq, 1_000.0), 1_000_000.0) for seq in (1, 2, 2, 3, 1, 4)]
    summary = feed(node, pieces)["summary"]
    assert (summary["received"], summary["duplicates"]) == (6, 2)
    assert summary["per_topic"]["t"]["unique"] == 4


def test_a_stream_is_live_at_its_ready_marker_and_not_before(node: str) -> None:
    """hopcast's subscription is live at its first ``id:`` line, which carries no data."""
    assert not feed(node, [(": hello\n\n", 0.0)], marker="id: ")["live"]
    answer = feed(node, [(": hello\n\n", 0.0), ("id: 41\n\n", 0.0)], marker="id: ")
    assert answer["live"]
    assert answer["summary"]["received"] == 0


def test_the_clients_answer_reads_back_as_a_fleet_result() -> None:
    answer = {
        "client": "node",
        "connected": 2,
        "failed": 1,
        "disconnects": 0,
        "received": 10,
        "duplicates": 1,
        "per_topic": {"a": {"connections": 2, "unique": 9, "duplicates": 1}},
        "latency_s": {"p50": 0.001, "p90": 0.002, "p99": 0.004, "p999": 0.005, "max": 0.006},
        "first_event_at": 1.0,
        "last_event_at": 2.0,
        "cpu_s": 0.1,
        "errors": ["ECONNREFUSED"],
    }
    result = result_of(answer)
    assert result.quantile(0.5) == 0.001
    assert result.quantile(0.99) == 0.004
    assert result.maximum == 0.006
    assert result.duplicates == 1
    assert result.lost({"a": 5}) == 1  # 2 connections x 5 events, 9 distinct
    assert result.latency.total == 0  # the client's own quantiles, not a histogram
