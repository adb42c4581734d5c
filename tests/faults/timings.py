"""How long each phase of a fault scenario took, for the report."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Timings:
    """Phase durations of a scenario, printed for the report (``pytest -s`` or ``-rA``)."""

    marks: dict[str, float] = field(default_factory=dict)
    began: float = field(default_factory=time.monotonic)

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.monotonic() - self.began, 2)
        print(f"  {self.marks[name]:7.2f}s {name}")  # shown with -s, and for a failing test

    def show(self, title: str) -> None:
        print(f"{title}: " + ", ".join(f"{k} at {v}s" for k, v in self.marks.items()))
