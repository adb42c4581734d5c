"""Run the benchmark: ``python -m bench.run [--smoke] [--scenario NAME ...]``.

Every scenario runs hopcast and the baselines side by side in one run, one
server at a time, against the same RabbitMQ; the run prints one table, writes
its results as JSON under ``bench/results/`` and, unless ``--smoke``, the chart
``docs/benchmarks.png``. ``--smoke`` runs tiny loads in well under a minute and
exits non-zero when something is broken (an event lost at trivial load, a
server that does not start), which is what CI runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import profile
from bench.backlog import catch_up, fill_backlog, ingest, ingest_reference
from bench.broker import Broker
from bench.report import build_rows, machine, render_table, write_chart, write_json
from bench.scenarios import Run, Step, brief, fanout, saturation
from bench.targets import (
    ASGI_SERVERS,
    BENCH_DIR,
    HOPCAST,
    HOPCAST_W2,
    NCHAN,
    ROOT,
    SEED_NODE,
    SEED_PYTHON,
    Hopcast,
    HopcastAsgi,
    Nchan,
    SeedNode,
    SeedPython,
    Target,
    missing_baselines,
)
from bench.workers import Comparison, compare_workers

SCENARIOS = ("standard", "saturation", "workers", "scale", "ingest", "catch-up")
TARGETS = (HOPCAST, HOPCAST_W2, SEED_NODE, SEED_PYTHON, NCHAN)
"""What ``make bench`` runs; ``--target`` also takes the ASGI servers (`ASGI_SERVERS`)."""
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
CHART = ROOT / "docs" / "benchmarks.png"
RESULTS = BENCH_DIR / "results"


@dataclass(frozen=True)
class Sizes:
    """The loads of a run: the issue's figures, or tiny ones for the smoke run."""

    subscribers: int
    topics: int
    rate: float
    seconds: float
    ladder: tuple[float, ...]
    """Saturation: deliveries/s offered, step by step."""
    step_seconds: float
    scale: int
    scale_w2: int
    scale_idle: float
    broadcasts: int
    backlog_head: int
    backlog_behind: int
    profile_seconds: float
    compare_loads: tuple[float, ...]
    """Workers: the deliveries/s offered in turn to one process and to two workers."""
    repeats: int
    """Workers: times each load is offered to each."""


FULL = Sizes(
    subscribers=1000,
    topics=10,
    rate=1000,
    seconds=15,
    ladder=(
        10_000,
        20_000,
        30_000,
        40_000,
        50_000,
        60_000,
        75_000,
        100_000,
        125_000,
        150_000,
        175_000,
        200_000,
        250_000,
        300_000,
        350_000,
        400_000,
        500_000,
        600_000,
        700_000,
        800_000,
        1_000_000,
        1_200_000,
        1_400_000,
        1_600_000,
        1_800_000,
        2_000_000,
    ),
    step_seconds=6,
    scale=15_000,
    scale_w2=30_000,
    scale_idle=5,
    broadcasts=5,
    backlog_head=10_000,
    backlog_behind=100_000,
    profile_seconds=10,
    compare_loads=(100_000, 200_000, 300_000, 400_000),
    repeats=3,
)
SMOKE = Sizes(
    subscribers=20,
    topics=2,
    rate=50,
    seconds=2,
    ladder=(500, 1000),
    step_seconds=1,
    scale=200,
    scale_w2=400,
    scale_idle=0.5,
    broadcasts=2,
    backlog_head=300,
    backlog_behind=2000,
    profile_seconds=2,
    compare_loads=(1000,),
    repeats=1,
)


def make_target(name: str, run: Run) -> Target:
    if name == HOPCAST:
        return Hopcast(HOPCAST, run.broker, run.run_id)
    if name == HOPCAST_W2:
        return Hopcast(HOPCAST_W2, run.broker, run.run_id, workers=2)
    if name in ASGI_SERVERS:
        return HopcastAsgi(name, run.broker, run.run_id)
    if name == SEED_NODE:
        return SeedNode(run.broker, run.run_id)
    if name == SEED_PYTHON:
        return SeedPython(run.broker, run.run_id)
    if name == NCHAN:
        return Nchan(run.broker, run.run_id)
    if name == f"{NCHAN}-w2":
        return Nchan(run.broker, run.run_id, workers=2)
    raise ValueError(f"no such target: {name}")


@contextmanager
def running(name: str, run: Run) -> Iterator[Target | None]:
    """A started target, or None (and a note in ``run.failures``) when it would not start."""
    target = make_target(name, run)
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


def saturate(run: Run, sizes: Sizes, targets: list[str]) -> dict[str, list[Step]]:
    ladders = {}
    for name in targets:
        with running(name, run) as target:
            if target is None:
                continue
            stream = target.stream if isinstance(target, Hopcast) and name == HOPCAST else None
            ladders[name] = saturation(
                run,
                target,
                list(sizes.ladder),
                subscribers=sizes.subscribers,
                topics=sizes.topics,
                seconds=sizes.step_seconds,
                probe_at=20_000 if not run.smoke else sizes.ladder[0],
                probe_stream=stream,
            )
    return ladders


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


def problems(run: Run, results: dict[str, Any]) -> list[str]:
    """What a smoke run treats as broken."""
    found = list(run.failures)
    steps: list[Step] = [*results.get("standard", []), *results.get("scale", [])]
    steps += results.get("scale-w2", [])
    for ladder in results.get("saturation", {}).values():
        steps += ladder[:1]
    for comparison in results.get("workers", []):
        steps += [*comparison.one, *comparison.two]
    for step in steps:
        if not step.clean:
            found.append(f"{step.scenario} on {step.target}: {brief(step)}")
    ingest_figures = results.get("ingest")
    if ingest_figures is not None and (not ingest_figures.events or ingest_figures.errors):
        found.append(f"ingest: {ingest_figures}")
    for catchup in results.get("catch-up", []):
        if catchup.received < catchup.expected or catchup.lost or catchup.duplicates:
            found.append(f"catch-up from the {catchup.source}: {catchup}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny loads; fail on any loss")
    parser.add_argument(
        "--scenario",
        nargs="+",
        choices=SCENARIOS,
        help="scenarios to run (default: all; with --smoke, all but saturation)",
    )
    parser.add_argument(
        "--target", nargs="+", choices=TARGETS + ASGI_SERVERS, default=list(TARGETS)
    )
    parser.add_argument("--profile", action="store_true", help="py-spy the gateway under load")
    parser.add_argument(
        "--ladder",
        nargs="+",
        type=float,
        metavar="DELIVERIES",
        help="saturation: the deliveries/s offered, step by step (default: the issue's ladder)",
    )
    parser.add_argument(
        "--loads",
        nargs="+",
        type=float,
        metavar="DELIVERIES",
        help="workers: the deliveries/s offered in turn to one process and to two workers",
    )
    parser.add_argument(
        "--repeats", type=int, metavar="N", help="workers: times each load is offered to each"
    )
    parser.add_argument(
        "--broker",
        default=os.environ.get("BENCH_AMQP_URL", DEFAULT_AMQP_URL),
        help="RabbitMQ URL (env BENCH_AMQP_URL)",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.ladder:
        sizes = dataclasses.replace(sizes, ladder=tuple(args.ladder))
    if args.loads:
        sizes = dataclasses.replace(sizes, compare_loads=tuple(args.loads))
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    if args.scenario is None:
        args.scenario = [s for s in SCENARIOS if not (args.smoke and s == "saturation")]
    missing = missing_baselines()
    targets = [t for t in args.target if t not in missing]
    for name, what in missing.items():
        print(f"{name} cannot run: missing {what} (run bench/setup)", file=sys.stderr)
    if args.smoke and missing:
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = Run(Broker(args.broker), f"{stamp}.{secrets.token_hex(3)}", args.smoke)
    results: dict[str, Any] = {}
    began = time.monotonic()
    profile_to = RESULTS / f"{stamp}-profile.txt" if args.profile else None
    try:
        if "standard" in args.scenario:
            print("== standard", flush=True)
            results["standard"] = standard(run, sizes, targets, profile_to)
        if "saturation" in args.scenario:
            print("== saturation", flush=True)
            results["saturation"] = saturate(run, sizes, targets)
        if "workers" in args.scenario and {HOPCAST, HOPCAST_W2} <= set(targets):
            print("== workers: --workers 2 against one process, in turn", flush=True)
            results["workers"] = workers(run, sizes)
        if "scale" in args.scenario:
            print(f"== scale, one process, {sizes.scale:,} subscribers", flush=True)
            _scale(run, sizes, targets, results)
        which = {s for s in args.scenario if s in ("ingest", "catch-up")}
        if which and HOPCAST in targets:
            print("== " + " and ".join(sorted(which)), flush=True)
            try:
                backlog_scenarios(run, sizes, which, results)
            except RuntimeError as exc:
                run.failures.append(f"ingest/catch-up: {exc}")
                print(f"  failed: {exc}", flush=True)
    finally:
        run.broker.cleanup()
    rows = build_rows(results)
    print()
    print(render_table(rows))
    payload = {
        "command": "python -m bench.run " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started": stamp,
        "seconds": round(time.monotonic() - began, 1),
        "machine": machine(),
        "sizes": sizes,
        "results": results,
        "table": rows,
        "failures": run.failures,
    }
    write_json(RESULTS / f"{stamp}.json", payload)
    write_json(RESULTS / "latest.json", payload)
    # Only a run that climbed the saturation ladder redraws the documented chart.
    full = not args.smoke and "saturation" in args.scenario and "standard" in args.scenario
    chart = CHART if full else RESULTS / f"{stamp}.png"
    title = (
        f"Fan-out: {sizes.subscribers:,} subscribers over {sizes.topics} topics, 100-byte events"
    )
    if write_chart(chart, results, title):
        print(f"\nchart: {chart.relative_to(ROOT)}")
    print(f"results: {(RESULTS / f'{stamp}.json').relative_to(ROOT)}")
    if args.smoke:
        found = problems(run, results)
        for problem in found:
            print(f"BROKEN: {problem}", file=sys.stderr)
        print(f"smoke run took {time.monotonic() - began:.0f} s")
        return 1 if found else 0
    return 0


def _scale(run: Run, sizes: Sizes, targets: list[str], results: dict[str, Any]) -> None:
    single = [t for t in targets if t in (HOPCAST, SEED_NODE, SEED_PYTHON, NCHAN, *ASGI_SERVERS)]
    results["scale"] = scale(run, sizes, single, sizes.scale)
    several = [HOPCAST_W2] if HOPCAST in targets or HOPCAST_W2 in targets else []
    if NCHAN in targets:
        several.append(f"{NCHAN}-w2")
    if several:
        print(f"== scale, 2 worker processes, {sizes.scale_w2:,} subscribers", flush=True)
        results["scale-w2"] = scale(run, sizes, several, sizes.scale_w2)


if __name__ == "__main__":
    sys.exit(main())
