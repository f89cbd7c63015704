"""Grafana dashboards, generated with grafana-foundation-sdk (python -m dashboards.generate)."""
