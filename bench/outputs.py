"""The benchmark's outputs besides the table: the machine it ran on, the JSON, the chart."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from bench.scenarios import Step


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
