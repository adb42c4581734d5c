"""A row of the benchmark's table: one measure, each server's value, and which way is better."""

from __future__ import annotations

from dataclasses import dataclass

LOWER = "lower"
HIGHER = "higher"
SAME = "same"


@dataclass
class Row:
    """One measure: each server's value, and an optional figure to compare with."""

    measure: str
    better: str
    values: dict[str, float | None]
    compared: tuple[str, float | None] | None = None
    unit: str = ""
