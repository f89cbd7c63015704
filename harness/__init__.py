"""The test and benchmark harness: a real local SPIRE, a one-node cluster, Prometheus and
Alertmanager, a fake Workload API for fault injection, and the repository's generated files.

Tests, benchmarks and scripts import it; it imports nothing of theirs, and `exporter/` never
imports it.
"""
