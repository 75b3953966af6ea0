"""Benchmark and quality commands: `python -m bench.speed` and `python -m bench.quality`.

They take corpus paths, run the real pipeline next to plain-library baselines, and write JSON
results plus markdown tables (see docs/benchmarks.md). Nothing here is imported by textmill.
"""
