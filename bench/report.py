"""The benchmark's outputs: one table (hopcast beside each baseline), the JSON, the chart.

In the table, ``x`` says how many times better hopcast does than the column
before it (above 1: hopcast better, below 1: worse), whichever way "better"
points for that row.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from bench.backlog import CatchUp, Ingest
from bench.scenarios import Step, best_under_limit
from bench.targets import BASELINES, HOPCAST, HOPCAST_W2
from bench.workers import Comparison

LOWER = "lower"
HIGHER = "higher"
SAME = "same"


@dataclass
class Row:
    """One measure: hopcast's value, each baseline's, and an optional reference."""

    measure: str
    better: str
    hopcast: float | None
    baselines: dict[str, float | None]
    reference: tuple[str, float | None] | None = None
    unit: str = ""


def advantage(hopcast: float | None, other: float | None, better: str) -> float | None:
    """How many times better hopcast is than ``other`` on a measure."""
    if hopcast is None or other is None or better == SAME:
        return None
    if better == HIGHER:
        return hopcast / other if other else None
    return other / hopcast if hopcast else None


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100 or value == int(value):
        return f"{value:.0f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def _times(value: float | None) -> str:
    return "" if value is None else f"x{value:.2f}"


def render_table(rows: list[Row]) -> str:
    """A fixed-width text table; one line per measure."""
    header = ["measure", "hopcast"]
    for name in BASELINES:
        header += [name, "x"]
    header += ["reference", "x"]
    lines = [header]
    for row in rows:
        cells = [f"{row.measure}{' (' + row.unit + ')' if row.unit else ''}", _fmt(row.hopcast)]
        for name in BASELINES:
            other = row.baselines.get(name)
            cells += [_fmt(other), _times(advantage(row.hopcast, other, row.better))]
        if row.reference is not None:
            label, value = row.reference
            cells += [f"{label}: {_fmt(value)}", _times(advantage(row.hopcast, value, row.better))]
        else:
            cells += ["", ""]
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _by_target(steps: list[Step]) -> dict[str, Step]:
    return {s.target: s for s in steps}


def _row(
    measure: str,
    better: str,
    steps: dict[str, Step],
    get: Callable[[Step], float | None],
    unit: str = "",
    *,
    reference: tuple[str, float | None] | None = None,
) -> Row:
    def value(name: str) -> float | None:
        step = steps.get(name)
        return None if step is None else get(step)

    return Row(measure, better, value(HOPCAST), {b: value(b) for b in BASELINES}, reference, unit)


def build_rows(results: dict[str, Any]) -> list[Row]:
    """The table's rows from a run's results (scenarios that did not run are left out)."""
    ingest = results.get("ingest")
    return [
        *_standard_rows(results.get("standard", [])),
        *_saturation_rows(results.get("saturation", {})),
        *_workers_rows(results.get("workers", [])),
        *_scale_rows(results.get("scale", []), "scale"),
        *_scale_rows(results.get("scale-w2", []), "scale --workers 2"),
        *_ingest_rows(ingest),
        *_catchup_rows(results.get("catch-up", []), ingest),
    ]


def _standard_rows(steps: list[Step]) -> list[Row]:
    standard = _by_target(steps)
    if not standard:
        return []
    w2 = standard.get(HOPCAST_W2)
    return [
        _row("standard: deliveries/s", HIGHER, standard, lambda s: s.deliveries_per_s),
        _row("standard: lost", SAME, standard, lambda s: s.lost),
        _row("standard: duplicates", SAME, standard, lambda s: s.duplicates),
        _row("standard: p50 latency", LOWER, standard, lambda s: s.p50_ms, "ms"),
        _row("standard: p99 latency", LOWER, standard, lambda s: s.p99_ms, "ms"),
        _row(
            "standard: server CPU per delivery",
            LOWER,
            standard,
            lambda s: s.cpu_us_per_delivery,
            "us",
            reference=("--workers 2", w2.cpu_us_per_delivery) if w2 else None,
        ),
        _row("standard: server RSS", LOWER, standard, lambda s: s.rss_mb, "MB"),
        _row("standard: connect p99", LOWER, standard, lambda s: s.connect_p99_ms, "ms"),
    ]


def _saturation_rows(ladders: dict[str, list[Step]]) -> list[Row]:
    if not ladders:
        return []
    best = {name: best_under_limit(steps) for name, steps in ladders.items()}
    found = {name: step for name, step in best.items() if step is not None}
    w2 = found.get(HOPCAST_W2)
    rows = [
        _row(
            "saturation: deliveries/s with p99 < 100 ms",
            HIGHER,
            found,
            lambda s: s.deliveries_per_s,
            reference=("--workers 2", w2.deliveries_per_s) if w2 else None,
        ),
        _row(
            "saturation: CPU per delivery at that load",
            LOWER,
            found,
            lambda s: s.cpu_us_per_delivery,
            "us",
            reference=("--workers 2", w2.cpu_us_per_delivery) if w2 else None,
        ),
    ]
    return rows + _at_20k_rows(ladders)


def _at_20k_rows(ladders: dict[str, list[Step]]) -> list[Row]:
    """The p99 at 20k deliveries/s, beside a bare stream consumer's, and the gateway's share."""
    at_20k = {
        name: step
        for name, steps in ladders.items()
        for step in steps
        if step.offered_deliveries_per_s == 20_000
    }
    bare = at_20k.get(HOPCAST)
    bare_p99 = bare.bare_p99_ms if bare else None
    rows = [
        _row(
            "20k deliveries/s: p99 latency",
            LOWER,
            at_20k,
            lambda s: s.p99_ms,
            "ms",
            reference=("bare stream consumer", bare_p99),
        )
    ]
    if bare is not None and bare.p99_ms is not None and bare_p99 is not None:
        share = round(bare.p99_ms - bare_p99, 2)
        rows.append(
            _row(
                "20k deliveries/s: gateway's share of p99 (vs the baselines' p99)",
                LOWER,
                {**at_20k, HOPCAST: Step(**{**asdict(bare), "p99_ms": share})},
                lambda s: s.p99_ms,
                "ms",
            )
        )
    return rows


def _workers_rows(comparisons: list[Comparison]) -> list[Row]:
    return [
        Row(
            f"{comparison.offered_deliveries_per_s / 1000:,.0f}k deliveries/s:"
            " CPU per delivery, one process (median)",
            LOWER,
            comparison.one_us,
            {},
            ("--workers 2", comparison.two_us),
            "us",
        )
        for comparison in comparisons
    ]


def _scale_rows(steps: list[Step], label: str) -> list[Row]:
    scale = _by_target(steps)
    if not scale:
        return []
    # With two workers, hopcast-w2 and nchan-w2 stand in hopcast's and nchan's columns.
    scale = {k.split("-w")[0]: v for k, v in scale.items()}
    return [
        _row(f"{label}: subscribers connected", HIGHER, scale, lambda s: s.connected),
        _row(f"{label}: broadcast received", HIGHER, scale, lambda s: s.received),
        _row(f"{label}: lost", SAME, scale, lambda s: s.lost),
        _row(
            f"{label}: RSS growth per connection",
            LOWER,
            scale,
            lambda s: s.rss_kb_per_connection,
            "KB",
        ),
        _row(f"{label}: broadcast p99 latency", LOWER, scale, lambda s: s.p99_ms, "ms"),
        _row(f"{label}: connect p99", LOWER, scale, lambda s: s.connect_p99_ms, "ms"),
    ]


def _ingest_rows(ingest: Ingest | None) -> list[Row]:
    if ingest is None:
        return []
    return [
        Row(
            "ingest from the stream, one process (events/s)",
            HIGHER,
            ingest.events_per_s,
            {},
            ("aio-pika, ack per message", ingest.reference_events_per_s or None),
        ),
        Row(
            "ingest: CPU per event (us)",
            LOWER,
            ingest.cpu_us_per_event,
            {},
            ("aio-pika, ack per message", ingest.reference_cpu_us_per_event),
        ),
    ]


def _catchup_rows(catchups: list[CatchUp], ingest: Ingest | None) -> list[Row]:
    return [
        Row(
            f"catch-up of {catchup.expected:,} events from the {catchup.source} (events/s)",
            HIGHER,
            catchup.events_per_s,
            {},
            ("ingest", ingest.events_per_s if ingest is not None else None)
            if catchup.source == "stream"
            else ("target", 50_000),
        )
        for catchup in catchups
    ]


def _version(argv: list[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "missing"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if (done.stdout or done.stderr) else ""
    )


def machine() -> dict[str, str]:
    """What the run ran on, for the record."""
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kb = 0
    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "memory_gib": f"{mem_kb / 2**20:.1f}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": _version(["node", "--version"]),
        "nginx": _version(["nginx", "-v"]),
        "rabbitmq": _version(["rabbitmqctl", "version"]),
    }


def to_json(value: Any) -> Any:
    """Results as plain JSON values (dataclasses become dicts)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: to_json(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(payload), indent=2) + "\n")


def write_chart(path: Path, results: dict[str, Any], title: str) -> bool:
    """Deliveries/s and p99 latency against offered load, one line per server."""
    ladders: dict[str, list[Step]] = dict(results.get("saturation", {}))
    for step in results.get("standard", []):
        ladders.setdefault(step.target, [])
        if all(
            s.offered_deliveries_per_s != step.offered_deliveries_per_s
            for s in ladders[step.target]
        ):
            ladders[step.target] = [*ladders[step.target], step]
    if not any(ladders.values()):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 8), sharex=True)
    for name, unordered in sorted(ladders.items()):
        steps = sorted(unordered, key=lambda s: s.offered_deliveries_per_s)
        offered = [s.offered_deliveries_per_s / 1000 for s in steps]
        top.plot(offered, [s.deliveries_per_s / 1000 for s in steps], marker="o", label=name)
        p99 = [s.p99_ms if s.p99_ms is not None else float("nan") for s in steps]
        bottom.plot(offered, p99, marker="o", label=name)
    most = max(s.offered_deliveries_per_s for steps in ladders.values() for s in steps) / 1000
    top.plot([0, most], [0, most], color="grey", linestyle=":", label="offered")
    top.set_ylabel("deliveries/s delivered (thousands)")
    top.set_title(title)
    top.legend(loc="upper left", fontsize="small")
    top.grid(alpha=0.3)
    bottom.axhline(100, color="red", linestyle="--", linewidth=1, label="100 ms")
    bottom.set_yscale("log")
    bottom.set_ylabel("p99 latency, publish to client (ms)")
    bottom.set_xlabel("deliveries/s offered (thousands)")
    bottom.legend(loc="upper left", fontsize="small")
    bottom.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
