"""alerts/tests.yml again at another scrape interval, with the labels a chart target carries.

Each input series is resampled to the new interval: counters linearly (their rates stay the
same), gauges by holding the last value. The exporter's series and the expected alerts on them
get the labels prometheus-operator gives the chart's targets, so every alert is checked firing
and silent as it would run on a real install.
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any

from harness.promtext import duration_seconds

EXPORTER_JOB = "spire-health-exporter"
# Counters without a counter suffix: SPIRE's own telemetry names them so.
SPIRE_COUNTERS = {"spire_agent_workload_api_connection", "spire_agent_manager_sync_fetch_entries_updates"}
_NUMBER = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_TOKEN = re.compile(rf"^(?P<a>{_NUMBER}|_)(?:(?P<op>[-+])(?P<b>{_NUMBER}))?x(?P<n>\d+)$")


def expand(values: str) -> list[float | None]:
    """promtool's series notation: 'a', '_', 'axn' (n+1 values), 'a+bxn', 'a-bxn', '_xn' (n)."""
    out: list[float | None] = []
    for token in values.split():
        match = _TOKEN.match(token)
        if token == "_":
            out.append(None)
        elif not match:
            out.append(float(token))
        elif match["a"] == "_":
            out.extend([None] * int(match["n"]))
        else:
            a, n = float(match["a"]), int(match["n"])
            b = float(match["b"] or 0) * (-1 if match["op"] == "-" else 1)
            out.extend(a + i * b for i in range(n + 1))
    return out


def resample(values: list[float | None], step: int, new_step: int, counter: bool) -> list[float | None]:
    last = (len(values) - 1) * step
    out: list[float | None] = []
    for j in range(last // new_step + 1):
        t = j * new_step
        k, rest = divmod(t, step)
        here = values[k]
        after = values[k + 1] if k + 1 < len(values) else None
        if counter and rest and here is not None and after is not None and after >= here:
            out.append(here + (after - here) * rest / step)
        else:
            out.append(here)
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "_"
    return repr(int(value)) if value == math.floor(value) and abs(value) < 1e15 else repr(value)


def _is_counter(series: str) -> bool:
    name = series.split("{", 1)[0]
    return name.endswith(("_total", "_bucket", "_count", "_sum")) or name in SPIRE_COUNTERS


def target_labels(instance: str, extra: dict[str, str]) -> dict[str, str]:
    host = re.sub(r"[^a-z0-9]", "", instance.split(":")[0])
    return {"namespace": "spire-system", "pod": f"spire-health-exporter-{host}", **extra}


def _relabel_series(series: str, extra: dict[str, str]) -> str:
    if f'job="{EXPORTER_JOB}"' not in series:
        return series
    instance = re.search(r'instance="([^"]+)"', series)
    if not instance:
        return series
    added = target_labels(instance.group(1), extra)
    return series[:-1] + "".join(f',{k}="{v}"' for k, v in added.items()) + "}"


def variant(doc: dict[str, Any], scrape_interval: str, extra: dict[str, str]) -> dict[str, Any]:
    """`doc` (a promtool test file) at `scrape_interval`, the exporter's series labelled as a
    chart target with `extra` (container, endpoint, and service for a ServiceMonitor)."""
    out = copy.deepcopy(doc)
    new_step = int(duration_seconds(scrape_interval))
    for group in out["tests"]:
        step = int(duration_seconds(group["interval"]))
        group["interval"] = scrape_interval
        for item in group["input_series"]:
            values = resample(expand(str(item["values"])), step, new_step, _is_counter(item["series"]))
            item["values"] = " ".join(_fmt(v) for v in values)
            item["series"] = _relabel_series(item["series"], extra)
        for check in group.get("alert_rule_test", []):
            for alert in check["exp_alerts"]:
                labels = alert["exp_labels"]
                if labels.get("job") == EXPORTER_JOB and "instance" in labels:
                    labels.update(target_labels(labels["instance"], extra))
    return out
