"""The ``workers`` scenario: ``--workers 2`` against one process, CPU per delivery at equal loads.

One step's CPU per delivery moves by a fifth from run to run on this machine, more
than the difference being measured. So both gateways run side by side, each on its
own exchange and stream (the idle one reads nothing), and every load is offered to
one and then to the other, in alternating order, ``repeats`` times. The ratio
reported is of the two medians; each pair's own ratio is kept beside it, so the
spread shows.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from bench.ladder import under_limit
from bench.scenarios import Run, Step, brief, fanout
from bench.targets import Target


@dataclass
class Comparison:
    """One load offered ``repeats`` times to each of one process and two workers."""

    offered_deliveries_per_s: float
    one: list[Step] = field(default_factory=list)
    two: list[Step] = field(default_factory=list)

    @property
    def one_us(self) -> float | None:
        """Median CPU per delivery of one process over its clean steps."""
        return _median_cpu(self.one)

    @property
    def two_us(self) -> float | None:
        """Median CPU per delivery of two workers over their clean steps."""
        return _median_cpu(self.two)

    @property
    def ratio(self) -> float | None:
        """Two workers' median CPU per delivery over one process's (below 1: workers cheaper)."""
        one, two = self.one_us, self.two_us
        return round(two / one, 3) if one and two else None

    @property
    def pair_ratios(self) -> list[float]:
        """The ratio of each pair of steps run one after the other, both clean."""
        return [
            round(b.cpu_us_per_delivery / a.cpu_us_per_delivery, 3)
            for a, b in zip(self.one, self.two, strict=False)
            if a.clean and b.clean and a.cpu_us_per_delivery and b.cpu_us_per_delivery
        ]

    @property
    def under_limit(self) -> bool:
        """Every step of both clean, with its p99 under 100 ms."""
        return all(under_limit(s) for s in (*self.one, *self.two))


def _median_cpu(steps: list[Step]) -> float | None:
    values = [s.cpu_us_per_delivery for s in steps if s.clean and s.cpu_us_per_delivery]
    return round(statistics.median(values), 3) if values else None


def compare_workers(
    run: Run,
    one: Target,
    two: Target,
    loads: list[float],
    *,
    repeats: int,
    subscribers: int,
    topics: int,
    seconds: float,
) -> list[Comparison]:
    """Offer each of ``loads`` (deliveries/s) to ``one`` and ``two`` in turn, ``repeats`` times."""
    per_topic = max(1, subscribers // topics)
    comparisons = []
    for load in loads:
        comparison = Comparison(load)
        for n in range(repeats):
            order = (one, two) if n % 2 == 0 else (two, one)
            for target in order:
                step = fanout(
                    run,
                    target,
                    "workers",
                    subscribers=subscribers,
                    topics=topics,
                    rate=load / per_topic,
                    seconds=seconds,
                    drain=seconds + 10,
                )
                (comparison.one if target is one else comparison.two).append(step)
                print(f"  {target.name}: {brief(step)}", flush=True)
        late = "" if comparison.under_limit else "; not every step clean under 100 ms p99"
        print(
            f"  at {load:,.0f}/s: {comparison.two_us} us against {comparison.one_us}"
            f" (x{comparison.ratio}; pairs {comparison.pair_ratios}{late})",
            flush=True,
        )
        comparisons.append(comparison)
    return comparisons


__all__ = ["Comparison", "compare_workers"]
