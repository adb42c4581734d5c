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
import sys
import time
from pathlib import Path
from typing import Any

from bench.broker import Broker
from bench.outputs import machine, write_chart, write_json
from bench.report import build_rows
from bench.rounds import run_rounds
from bench.scenarios import Run, Step, brief
from bench.sizes import FULL, SMOKE, Sizes
from bench.table import render_table
from bench.targets import (
    ASGI_SERVERS,
    BENCH_DIR,
    HOPCAST,
    HOPCAST_W2,
    NCHAN,
    REFERENCE,
    REFERENCE_HELD,
    ROOT,
    SEED_NODE,
    SEED_PYTHON,
    missing_baselines,
)

SCENARIOS = (
    "standard",
    "per-id",
    "saturation",
    "workers",
    "scale",
    "ingest",
    "catch-up",
    "queues",
)
TARGETS = (HOPCAST, HOPCAST_W2, SEED_NODE, SEED_PYTHON, NCHAN, REFERENCE, REFERENCE_HELD)
"""What ``make bench`` runs; ``--target`` also takes the ASGI servers (`ASGI_SERVERS`)."""
DEFAULT_AMQP_URL = "amqp://guest:guest@localhost:5672/"
CHART = ROOT / "docs" / "benchmarks.png"
RESULTS = BENCH_DIR / "results"


def problems(run: Run, results: dict[str, Any]) -> list[str]:
    """What a smoke run treats as broken."""
    found = list(run.failures)
    steps: list[Step] = [*results.get("standard", []), *results.get("scale", [])]
    steps += [*results.get("scale-w2", []), *results.get("per-id", [])]
    steps += results.get("cross-check", [])
    for ladder in results.get("saturation", {}).values():
        steps += ladder[:1]
    for comparison in results.get("workers", []):
        steps += [*comparison.one, *comparison.two]
    for step in steps:
        if not step.clean:
            found.append(f"{step.scenario} on {step.target} ({step.client}): {brief(step)}")
    ingest_figures = results.get("ingest")
    if ingest_figures is not None and (not ingest_figures.events or ingest_figures.errors):
        found.append(f"ingest: {ingest_figures}")
    for catchup in results.get("catch-up", []):
        if catchup.received < catchup.expected or catchup.lost or catchup.duplicates:
            found.append(f"catch-up from the {catchup.source}: {catchup}")
    queues = results.get("queues")
    if queues is not None:
        found += queues.failures()
    return found


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = _sizes(args)
    if args.scenario is None:
        args.scenario = [s for s in SCENARIOS if not (args.smoke and s == "saturation")]
    if args.target is None:
        args.target = [t for t in TARGETS if not (args.smoke and t == REFERENCE_HELD)]
    missing = missing_baselines()
    targets = [t for t in args.target if t not in missing]
    for name, what in missing.items():
        print(f"{name} cannot run: missing {what} (run bench/setup)", file=sys.stderr)
    if args.smoke and missing:
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run = Run(Broker(args.broker), f"{stamp}.{secrets.token_hex(3)}", args.smoke)
    began = time.monotonic()
    profile_to = RESULTS / f"{stamp}-profile.txt" if args.profile else None
    try:
        results = run_rounds(run, sizes, args.scenario, targets, profile_to)
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
    _write(args, stamp, sizes, payload)
    if args.smoke:
        found = problems(run, results)
        for problem in found:
            print(f"BROKEN: {problem}", file=sys.stderr)
        print(f"smoke run took {time.monotonic() - began:.0f} s")
        return 1 if found else 0
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny loads; fail on any loss")
    parser.add_argument(
        "--scenario",
        nargs="+",
        choices=SCENARIOS,
        help="scenarios to run (default: all; with --smoke, all but saturation)",
    )
    parser.add_argument(
        "--target",
        nargs="+",
        choices=TARGETS + ASGI_SERVERS,
        help="servers to run (default: all but the ASGI servers; with --smoke, also but "
        f"{REFERENCE_HELD}, the same code as {REFERENCE} with a timer)",
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
    return parser


def _sizes(args: argparse.Namespace) -> Sizes:
    """The smoke or full sizes, with the loads the command line gives instead."""
    sizes = SMOKE if args.smoke else FULL
    if args.ladder:
        sizes = dataclasses.replace(sizes, ladder=tuple(args.ladder))
    if args.loads:
        sizes = dataclasses.replace(sizes, compare_loads=tuple(args.loads))
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats)
    return sizes


def _write(args: argparse.Namespace, stamp: str, sizes: Sizes, payload: dict[str, Any]) -> None:
    """The run's JSON (its own and ``latest.json``) and its chart."""
    write_json(RESULTS / f"{stamp}.json", payload)
    write_json(RESULTS / "latest.json", payload)
    # Only a run that climbed the saturation ladder redraws the documented chart.
    full = not args.smoke and "saturation" in args.scenario and "standard" in args.scenario
    chart: Path = CHART if full else RESULTS / f"{stamp}.png"
    title = (
        f"Fan-out: {sizes.subscribers:,} subscribers over {sizes.topics} topics, 100-byte events"
    )
    if write_chart(chart, payload["results"], title):
        print(f"\nchart: {chart.relative_to(ROOT)}")
    print(f"results: {(RESULTS / f'{stamp}.json').relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
