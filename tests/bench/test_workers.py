"""The workers scenario's comparison of two workers against one process."""

from __future__ import annotations

from bench.scenarios import Step
from bench.workers import Comparison


def test_the_workers_comparison_takes_medians_of_clean_steps_and_keeps_each_pair() -> None:
    """Two workers against one process: the ratio of the medians, over clean steps only
    (a step that lost an event measures nothing), with each clean pair's own ratio."""

    def step(target: str, us: float, lost: int = 0) -> Step:
        return Step(
            target,
            "workers",
            1000,
            10,
            1000.0,
            100_000.0,
            received=1,
            lost=lost,
            p99_ms=50.0,
            cpu_us_per_delivery=us,
        )

    comparison = Comparison(100_000.0)
    comparison.one = [step("hopcast", 2.0), step("hopcast", 3.0), step("hopcast", 2.5)]
    comparison.two = [
        step("hopcast-w2", 2.2),
        step("hopcast-w2", 9.9, lost=1),
        step("hopcast-w2", 2.4),
    ]
    assert comparison.one_us == 2.5
    assert comparison.two_us == 2.3
    assert comparison.ratio == round(2.3 / 2.5, 3)
    assert comparison.pair_ratios == [1.1, 0.96]
    assert not comparison.under_limit  # the step that lost an event
    comparison.two.pop(1)
    assert comparison.under_limit
