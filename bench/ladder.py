"""The saturation scenario: the standard fan-out at rising loads, until p99 passes 100 ms."""

from __future__ import annotations

from bench.nodeclient import NODE
from bench.scenarios import LOADGEN, Run, Step, brief, fanout
from bench.targets import Target

P99_LIMIT = 0.100
"""Saturation: the p99 latency a load step must stay under."""
REFINE = 2
"""Saturation: steps that halve the gap between the ladder's last step under the limit
and the first over it. With two, the figure is found to within a quarter of a ladder
step (at most a twelfth of the load: no step of the ladder is a third above the last)."""


def saturation(
    run: Run,
    target: Target,
    ladder: list[float],
    *,
    subscribers: int,
    topics: int,
    seconds: float,
    probe_at: float | None = None,
    probe_stream: str | None = None,
    node_steps: list[Step] | None = None,
    refine: int = REFINE,
) -> list[Step]:
    """Climb ``ladder`` (deliveries/s offered) until p99 passes 100 ms twice in a row at a
    step, or events go missing; then bisect between that step and the one before it,
    ``refine`` times (each step over the limit run twice too). At ``probe_at``
    a bare consumer of ``probe_stream`` measures too, and when ``node_steps`` is given, the
    Node client measures the same load in a step of its own, right after (kept there)."""
    steps = []
    per_topic = max(1, subscribers // topics)

    def step_at(deliveries: float, client: str = LOADGEN) -> Step:
        step = fanout(
            run,
            target,
            "saturation",
            subscribers=subscribers,
            topics=topics,
            rate=deliveries / per_topic,
            seconds=seconds,
            probe_stream=probe_stream if deliveries == probe_at else None,
            drain=seconds + 10,
            client=client,
        )
        print(f"  {target.name}{' (Node client)' if client == NODE else ''}: {brief(step)}")
        return step

    def climb(deliveries: float) -> bool:
        step = step_at(deliveries)
        steps.append(step)
        if deliveries == probe_at and node_steps is not None:
            node_steps.append(step_at(deliveries, NODE))
        if step.clean and not under_limit(step):
            # Once more: one p99 spike from other work on the machine ends no climb.
            step = step_at(deliveries)
            steps.append(step)
        return under_limit(step)

    below: float | None = None  # the last offered load under the limit, and the first over
    above: float | None = None
    for deliveries in ladder:
        if not climb(deliveries):
            above = deliveries
            break
        below = deliveries
    if below is None or above is None:
        return steps
    for _ in range(refine):
        middle = round((below + above) / 2, -2)
        if climb(middle):
            below = middle
        else:
            above = middle
    return steps


def under_limit(step: Step) -> bool:
    """A clean step (nothing lost or repeated) with its p99 under 100 ms."""
    return step.clean and step.p99_ms is not None and step.p99_ms <= P99_LIMIT * 1000


def best_under_limit(steps: list[Step]) -> Step | None:
    """The step with the most deliveries/s among the clean ones with p99 under 100 ms."""
    good = [s for s in steps if under_limit(s)]
    return max(good, key=lambda s: s.deliveries_per_s, default=None)
