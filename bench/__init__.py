"""Benchmarks, one command each (python -m bench.NAME); results in docs/benchmarks.md."""
