"""The rounds of a benchmark run: each scenario against each chosen target in turn.

One server runs at a time (`running`), against the same RabbitMQ; what each
round measures is in `bench.scenarios` and `bench.backlog`.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench import profile
from bench.backlog import catch_up, fill_backlog, ingest, ingest_reference
from bench.ladder import saturation
from bench.nodeclient import NODE, node_client_missing
from bench.queues import queue_scenario
from bench.scenarios import LOADGEN, Run, Step, brief, fanout
from bench.sizes import Sizes
from bench.targets import (
    ASGI_SERVERS,
    BASELINES,
    HOPCAST,
    HOPCAST_W2,
    NCHAN,
    Hopcast,
    Target,
    make_target,
)
from bench.workers import Comparison, compare_workers


def run_rounds(
    run: Run, sizes: Sizes, scenarios: list[str], targets: list[str], profile_to: Path | None
) -> dict[str, Any]:
    """Run each of ``scenarios`` over ``targets``; the results by scenario."""
    results: dict[str, Any] = {}
    if "standard" in scenarios:
        print("== standard", flush=True)
        results["standard"] = standard(run, sizes, targets, profile_to)
    if "per-id" in scenarios:
        print(f"== per-id: {sizes.per_id:,} clients, each on a topic of its own", flush=True)
        results["per-id"] = per_id(run, sizes, targets, results.setdefault("cross-check", []))
    if "saturation" in scenarios:
        print("== saturation", flush=True)
        cross_check = results.setdefault("cross-check", [])
        results["saturation"] = saturate(run, sizes, targets, cross_check)
    if "workers" in scenarios and {HOPCAST, HOPCAST_W2} <= set(targets):
        print("== workers: --workers 2 against one process, in turn", flush=True)
        results["workers"] = workers(run, sizes)
    if "scale" in scenarios:
        print(f"== scale, one process, {sizes.scale:,} subscribers", flush=True)
        scale_rounds(run, sizes, targets, results)
    which = {s for s in scenarios if s in ("ingest", "catch-up")}
    if which and HOPCAST in targets:
        print("== " + " and ".join(sorted(which)), flush=True)
        try:
            backlog_scenarios(run, sizes, which, results)
        except RuntimeError as exc:
            run.failures.append(f"ingest/catch-up: {exc}")
            print(f"  failed: {exc}", flush=True)
    if "queues" in scenarios and HOPCAST in targets:
        print(
            f"== queues: {sizes.queue_tasks:,} tasks a drain, {sizes.queue_consumers} consumers"
            " a side, aio-pika between gateway rows",
            flush=True,
        )
        results["queues"] = queue_scenario(
            run,
            sizes.queue_tasks,
            sizes.queue_consumers,
            sizes.queue_prefetches,
            sizes.lease_tasks,
        )
    return results


@contextmanager
def running(name: str, run: Run) -> Iterator[Target | None]:
    """A started target, or None (and a note in ``run.failures``) when it would not start."""
    target = make_target(name, run.broker, run.run_id)
    try:
        try:
            target.start()
        except RuntimeError as exc:
            run.failures.append(f"{name} did not start: {exc}")
            print(f"  {name} did not start: {exc}", flush=True)
            yield None
            return
        yield target
    finally:
        target.stop()


def standard(run: Run, sizes: Sizes, targets: list[str], profile_to: Path | None) -> list[Step]:
    steps = []
    for name in targets:
        with running(name, run) as target:
            if target is None:
                continue
            step = fanout(
                run,
                target,
                "standard",
                subscribers=sizes.subscribers,
                topics=sizes.topics,
                rate=sizes.rate,
                seconds=sizes.seconds,
            )
            steps.append(step)
            print(f"  {name}: {brief(step)}", flush=True)
            if name in (HOPCAST, HOPCAST_W2) and profile_to is not None:
                profile_under_load(run, sizes, target, profile_to)
    return steps


def profile_under_load(run: Run, sizes: Sizes, target: Target, out: Path) -> None:
    """The standard load once more, with py-spy sampling the gateway (not measured)."""
    spies: list[subprocess.Popen[bytes] | None] = []
    fanout(
        run,
        target,
        "profile",
        subscribers=sizes.subscribers,
        topics=sizes.topics,
        rate=sizes.rate,
        seconds=sizes.profile_seconds,
        on_publish=lambda: spies.append(profile.start(target.pid, sizes.profile_seconds, out)),
    )
    spy = spies[0] if spies else None
    if spy is None:
        print("  py-spy is missing: no profile", flush=True)
        return
    spy.wait(60)
    for _ in range(10):  # py-spy may still be writing its output
        summary = profile.summarize(out) if out.exists() else None
        if summary is not None and summary["self"]:
            print(profile.render(summary), flush=True)
            return
        time.sleep(0.5)


SMOKE_CROSS_CHECK = (HOPCAST, NCHAN)


def _stream_of(name: str, target: Target) -> str | None:
    """The stream a bare consumer reads beside ``target``: hopcast's own (one process)."""
    return target.stream if isinstance(target, Hopcast) and name == HOPCAST else None


def _node_steps(run: Run, cross_check: list[Step]) -> list[Step] | None:
    """Where the Node client's steps go, or None (and a note) when it cannot run here."""
    missing = node_client_missing()
    if missing is None:
        return cross_check
    note = f"the Node latency client cannot run: missing {missing} (run bench/setup)"
    if note not in run.failures:
        run.failures.append(note)
        print(f"  {note}", flush=True)
    return None


def saturate(
    run: Run, sizes: Sizes, targets: list[str], cross_check: list[Step]
) -> dict[str, list[Step]]:
    ladders = {}
    for name in targets:
        with running(name, run) as target:
            if target is None:
                continue
            ladders[name] = saturation(
                run,
                target,
                list(sizes.ladder),
                subscribers=sizes.subscribers,
                topics=sizes.topics,
                seconds=sizes.step_seconds,
                probe_at=sizes.cross_check_at,
                probe_stream=_stream_of(name, target),
                node_steps=_node_steps(run, cross_check),
            )
    return ladders


def per_id(run: Run, sizes: Sizes, targets: list[str], cross_check: list[Step]) -> list[Step]:
    """One client per topic, ``sizes.per_id_rate`` events/s over all of them: every event
    goes to one client. The load generator measures it (with a bare stream consumer beside
    hopcast), then the Node client, in a step of its own on the same server."""
    steps: list[Step] = []
    # The smoke run checks the Node client on two servers, to stay short.
    node_on = set(SMOKE_CROSS_CHECK if run.smoke else targets)
    if _node_steps(run, cross_check) is None:
        node_on = set()
    for name in targets:
        with running(name, run) as target:
            if target is None:
                continue
            for client in (LOADGEN, NODE) if name in node_on else (LOADGEN,):
                step = fanout(
                    run,
                    target,
                    "per-id",
                    subscribers=sizes.per_id,
                    topics=sizes.per_id,
                    rate=sizes.per_id_rate,
                    seconds=sizes.seconds,
                    probe_stream=_stream_of(name, target),
                    client=client,
                )
                (steps if client == LOADGEN else cross_check).append(step)
                label = " (Node client)" if client == NODE else ""
                print(f"  {name}{label}: {brief(step)}", flush=True)
    return steps


def workers(run: Run, sizes: Sizes) -> list[Comparison]:
    with running(HOPCAST, run) as one, running(HOPCAST_W2, run) as two:
        if one is None or two is None:
            return []
        return compare_workers(
            run,
            one,
            two,
            list(sizes.compare_loads),
            repeats=sizes.repeats,
            subscribers=sizes.subscribers,
            topics=sizes.topics,
            seconds=sizes.step_seconds,
        )


def scale(run: Run, sizes: Sizes, targets: list[str], subscribers: int) -> list[Step]:
    steps = []
    processes = max(2, -(-subscribers // 10_000))
    for name in targets:
        with running(name, run) as target:
            if target is None:
                continue
            step = fanout(
                run,
                target,
                "scale",
                subscribers=subscribers,
                topics=1,
                rate=1,
                seconds=sizes.broadcasts,
                processes=processes,
                idle=sizes.scale_idle,
            )
            steps.append(step)
            print(f"  {name}: {step.connected:,} connected; {brief(step)}", flush=True)
            print(f"    RSS {step.rss_kb_per_connection} KB per connection", flush=True)
    return steps


def backlog_scenarios(run: Run, sizes: Sizes, which: set[str], results: dict[str, Any]) -> None:
    backlog = fill_backlog(run, sizes.backlog_head, sizes.backlog_behind)
    total = sizes.backlog_head + sizes.backlog_behind
    print(f"  stream filled: {total:,} events, resume from offset {backlog.resume_from}")
    figures, gateway = ingest(run, backlog, ring_size=total + 1000)
    try:
        print(f"  hopcast ingest: {figures.events_per_s:,.0f} events/s", flush=True)
        if "catch-up" in which:
            gateway._wait_ready()
            ring = catch_up(run, gateway, backlog, "ring")
            results.setdefault("catch-up", []).append(ring)
            print(f"  catch-up from the ring: {ring.events_per_s:,.0f} events/s", flush=True)
    finally:
        gateway.stop()
    if "ingest" in which:
        ingest_reference(run, backlog, figures)
        results["ingest"] = figures
        print(f"  aio-pika consumer: {figures.reference_events_per_s:,.0f} events/s", flush=True)
    if "catch-up" in which:
        small = Hopcast(
            "hopcast-catchup",
            run.broker,
            run.run_id,
            exchange=backlog.exchange,
            stream=backlog.stream,
            extra=("--ring-size", "1000"),
        )
        with small:
            from_stream = catch_up(run, small, backlog, "stream")
        results.setdefault("catch-up", []).append(from_stream)
        print(f"  catch-up from the stream: {from_stream.events_per_s:,.0f} events/s", flush=True)


def scale_rounds(run: Run, sizes: Sizes, targets: list[str], results: dict[str, Any]) -> None:
    """The scale scenario with one process per server, then with two workers where it can."""
    single = [t for t in targets if t in (HOPCAST, *BASELINES, *ASGI_SERVERS)]
    results["scale"] = scale(run, sizes, single, sizes.scale)
    several = [HOPCAST_W2] if HOPCAST in targets or HOPCAST_W2 in targets else []
    if NCHAN in targets:
        several.append(f"{NCHAN}-w2")
    if several:
        print(f"== scale, 2 worker processes, {sizes.scale_w2:,} subscribers", flush=True)
        results["scale-w2"] = scale(run, sizes, several, sizes.scale_w2)
