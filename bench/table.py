"""The benchmark's table: one row per measure, one column per server that ran.

The first column is hopcast when it ran (else the first server that did); ``x``
after each other column says how many times better the first column does than
that one (above 1: better, below 1: worse), whichever way "better" points for
that row. The last column holds a figure to compare with (two workers, a bare
stream consumer, a target), with its own ``x``. The rows come from each
scenario's results (`bench.report`, `bench.queue_report`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.targets import ASGI_SERVERS, BASELINES, HOPCAST

LOWER = "lower"
HIGHER = "higher"
SAME = "same"
COLUMNS = (HOPCAST, *ASGI_SERVERS, *BASELINES)
"""The servers' columns, in this order, each shown when any row has a figure for it."""


@dataclass
class Row:
    """One measure: each server's value, and an optional figure to compare with."""

    measure: str
    better: str
    values: dict[str, float | None]
    compared: tuple[str, float | None] | None = None
    unit: str = ""


def advantage(first: float | None, other: float | None, better: str) -> float | None:
    """How many times better ``first`` is than ``other`` on a measure.

    >>> advantage(2.0, 4.0, LOWER), advantage(2.0, 4.0, HIGHER)
    (2.0, 0.5)
    """
    if first is None or other is None or better == SAME:
        return None
    if better == HIGHER:
        return first / other if other else None
    return other / first if first else None


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


def columns(rows: list[Row]) -> list[str]:
    """The servers with a figure in any row: `COLUMNS` first, in order, then any other."""
    present = {name for row in rows for name, value in row.values.items() if value is not None}
    return [c for c in COLUMNS if c in present] + sorted(present - set(COLUMNS))


def render_table(rows: list[Row]) -> str:
    """A fixed-width text table; one line per measure."""
    names = columns(rows)
    header = ["measure"]
    for i, name in enumerate(names):
        header += [name] if i == 0 else [name, "x"]
    header += ["compared with", "x"]
    lines = [header]
    for row in rows:
        first = row.values.get(names[0]) if names else None
        cells = [f"{row.measure}{' (' + row.unit + ')' if row.unit else ''}"]
        for i, name in enumerate(names):
            value = row.values.get(name)
            cells += [_fmt(value)]
            if i:
                cells += [_times(advantage(first, value, row.better))]
        if row.compared is not None:
            label, value = row.compared
            cells += [f"{label}: {_fmt(value)}", _times(advantage(first, value, row.better))]
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
