"""The benchmarks: scripts run as `python -m benchmarks.<name>`, their data sets and reports."""
