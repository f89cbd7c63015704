"""Reading what Prometheus speaks: the text exposition format, its durations, and dashboard
queries with their variables filled in."""

from __future__ import annotations

import re

import yaml
from prometheus_client.parser import text_string_to_metric_families

from harness.paths import ROOT

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse(text: str) -> Samples:
    """Every sample of a /metrics page, by name and sorted labels. A label with an empty value
    is dropped, as Prometheus drops it: `reason=""` and no reason are the same series."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if v)))] = s.value
    return samples


def get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def duration_seconds(text: str) -> float:
    """A Prometheus duration such as 30s, 1m30s or 1d, in seconds."""
    parts = re.findall(r"(\d+)(ms|[smhdw])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a Prometheus duration")
    return sum(int(n) * _DURATION_UNITS[u] for n, u in parts)


def fill_dashboard_variables(expr: str, node: str, rate_interval: str = "1m", range_: str = "5m") -> str:
    """A dashboard query as Grafana sends it for every cluster, the exporter's job and `node`
    (and every agent target, which the query's own join narrows to that node), with the SLO
    objective the rules use."""
    objective = str(yaml.safe_load((ROOT / "alerts" / "config.yml").read_text())["slo_objective"])
    return (
        expr.replace("$cluster", ".*").replace("$job", "spire-health-exporter").replace("$node", node)
        .replace("$agent", ".*")
        .replace("$__rate_interval", rate_interval).replace("$__range", range_)
        .replace("$slo_objective", objective)
    )  # fmt: skip
