"""Benchmarks for the DiffRes classifier: `python -m tools.bench` writes reports/bench.json and BENCHMARKS.md.

Scripts that write a report, never timed tests: timings are medians of interleaved repeats and
comparisons are paired ratios, so machine noise hits both sides of every ratio alike.
"""
