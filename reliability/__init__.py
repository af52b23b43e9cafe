"""Reliability campaign scripts (issue 6): load test, crash safety, long runs.

Each script is a long run (`python -m reliability.<name> ...`) that prints what it measured and writes
JSON + markdown under `benchmarks/results/reliability/`; the test suite runs a short version of each.
"""
