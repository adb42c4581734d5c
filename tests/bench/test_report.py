"""The benchmark's table: a column for each server that ran, and the rows each scenario adds."""

from __future__ import annotations

from typing import Any

from bench.nodeclient import NODE
from bench.report import build_rows
from bench.scenarios import Step
from bench.table import Row, columns, render_table


def step(target: str, scenario: str, **figures: Any) -> Step:
    defaults: dict[str, Any] = {"received": 100, "deliveries_per_s": 1000.0, "p99_ms": 5.0}
    offered = figures.pop("offered", 20_000.0)
    return Step(target, scenario, 1000, 10, offered / 100, offered, **{**defaults, **figures})


def row(rows: list[Row], measure: str) -> Row:
    found = [r for r in rows if r.measure == measure]
    assert len(found) == 1, [r.measure for r in rows]
    return found[0]


def test_servers_other_than_hopcast_get_columns_of_their_own() -> None:
    """The smoke run's second command runs only the gateway under uvicorn and granian:
    their figures show, the first of them the one the others are compared with."""
    results = {
        "standard": [
            step("hopcast-uvicorn", "standard", p99_ms=4.0),
            step("hopcast-granian", "standard", p99_ms=8.0),
        ]
    }
    rows = build_rows(results)
    assert columns(rows) == ["hopcast-uvicorn", "hopcast-granian"]
    table = render_table(rows)
    header, _, *lines = table.splitlines()
    assert header.split()[1:3] == ["hopcast-uvicorn", "hopcast-granian"]
    p99 = next(line for line in lines if line.startswith("standard: p99 latency"))
    assert p99.split()[-3:] == ["4", "8", "x2.00"]


def test_the_per_id_rows_put_both_clients_p99_each_with_its_bare_consumer_side_by_side() -> None:
    per_id = [
        step("hopcast", "per-id", p99_ms=6.0, bare_p99_ms=2.5, share_p99_ms=3.0),
        step("nchan", "per-id", p99_ms=2.0),
        step("hopcast-w2", "per-id", p99_ms=7.0, cpu_us_per_delivery=9.0),
    ]
    node = [
        step("hopcast", "per-id", p99_ms=6.5, bare_p99_ms=4.0, client=NODE),
        step("nchan", "per-id", p99_ms=2.5, client=NODE),
    ]
    rows = build_rows({"per-id": per_id, "cross-check": node})
    p99 = row(rows, "per-id: p99 latency")
    assert p99.values == {"hopcast": 6.0, "nchan": 2.0}
    assert p99.compared == ("bare stream consumer", 2.5)
    node_p99 = row(rows, "per-id: p99 latency, Node client")
    assert node_p99.values == {"hopcast": 6.5, "nchan": 2.5}
    assert node_p99.compared == ("bare stream consumer", 4.0)  # the one beside the Node client
    share = row(rows, "per-id: gateway's own share at p99 (vs a bare stream consumer, per event)")
    assert share.values == {"hopcast": 3.0}
    assert share.compared == ("p99 minus the bare consumer's p99", 3.5)
    cpu = row(rows, "per-id: server CPU per delivery")
    assert cpu.compared == ("--workers 2", 9.0)


def test_the_saturation_rows_give_each_servers_share_of_the_reference() -> None:
    def ladder(target: str, *best: float) -> list[Step]:
        return [step(target, "saturation", offered=d, deliveries_per_s=d) for d in best]

    ladders = {
        "hopcast": ladder("hopcast", 20_000, 300_000),
        "nchan": ladder("nchan", 20_000, 60_000),
        "reference": ladder("reference", 20_000, 600_000),
    }
    ladders["hopcast"][0].share_p99_ms = 1.5
    ladders["hopcast"][0].bare_p99_ms = 2.0
    node = [step("nchan", "saturation", p99_ms=3.0, client=NODE)]
    rows = build_rows({"saturation": ladders, "cross-check": node})
    share = row(rows, "saturation: share of the reference figure")
    assert share.values == {"hopcast": 50.0, "nchan": 10.0}
    assert row(rows, "20k deliveries/s: p99 latency").compared == ("bare stream consumer", 2.0)
    assert row(rows, "20k deliveries/s: p99 latency, Node client").values == {"nchan": 3.0}
    assert row(
        rows, "20k deliveries/s: gateway's own share at p99 (vs a bare stream consumer, per event)"
    ).values == {"hopcast": 1.5}


def test_a_run_without_the_reference_or_the_node_client_leaves_their_rows_out() -> None:
    ladders = {"hopcast": [step("hopcast", "saturation", deliveries_per_s=20_000.0)]}
    measures = [r.measure for r in build_rows({"saturation": ladders})]
    assert not [m for m in measures if "reference" in m or "Node" in m or "share" in m]
