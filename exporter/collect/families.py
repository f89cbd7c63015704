"""Small builders of metric families that every collector uses."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

Family = type[GaugeMetricFamily] | type[CounterMetricFamily]


def one(kind: Family, name: str, help_text: str, value: float | None) -> Metric:
    """A family of one unlabelled sample; with no value, a family without samples."""
    family = kind(name, help_text)
    if value is not None:
        family.add_metric([], value)
    return family


def by_label(kind: Family, name: str, help_text: str, label: str, values: Mapping[str, float]) -> Metric:
    family = kind(name, help_text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family
