"""hopcast's fan-out benchmark: a load generator, the baselines, and the scenarios.

Run it with ``python -m bench.run`` (``make bench``), or ``--smoke`` for the
seconds-long check CI runs (``make bench-smoke``); ``docs/benchmarks.md`` says
what it measures and holds the latest figures.
"""
