"""Benchmark harness for logdispatch: ``python -m benchmarks [--quick] [--out FILE]``."""
