"""Probe series: counts by code, latency, the latest result, schedule, and each probe's own series."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter.probes import registered, spec
from exporter.store.probes import ProbeStore
from exporter.unavailable import REASONS


class ProbeCollector(Collector):
    def __init__(self, store: ProbeStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        rpcs = self.store.snapshot()
        by_rpc = ["rpc"]
        duration = HistogramMetricFamily(
            "spire_health_probe_duration_seconds",
            "Time a successful probe waited for its answer; for streams, the time to the first message.",
            labels=by_rpc,
        )
        total = CounterMetricFamily(
            "spire_health_probes",
            "Probes run, by result code (gRPC code name, OK, or a malformed-answer code) and, for "
            f"UNAVAILABLE, the reason: {', '.join(REASONS)}.",
            labels=["rpc", "code"],
        )
        success = GaugeMetricFamily(
            "spire_health_probe_success", "Whether the latest probe succeeded (1) or not (0).", labels=by_rpc
        )
        last_attempt = GaugeMetricFamily(
            "spire_health_probe_last_attempt_timestamp_seconds",
            "Unix time at which the latest probe finished, whatever its result.",
            labels=by_rpc,
        )
        for rpc, stats in sorted(rpcs.items()):
            if spec(rpc).latency:
                cumulative, buckets = 0, []
                for bound, count in zip(self.store.buckets, stats.buckets, strict=True):
                    cumulative += count
                    buckets.append((repr(float(bound)), cumulative))
                buckets.append(("+Inf", stats.observations))
                duration.add_metric([rpc], buckets, stats.duration_sum)
            for (code, reason), count in sorted(stats.counts.items()):
                # The reason label only where there is one: an empty label is no label to
                # Prometheus, so it would only lengthen every other line.
                labels = {"rpc": rpc, "code": code, **({"reason": reason} if reason else {})}
                total.samples.append(Sample("spire_health_probes_total", labels, count))
            if stats.last is not None:
                success.add_metric([rpc], 1 if stats.last.ok else 0)
                last_attempt.add_metric([rpc], stats.last.finished_at)
        yield from (duration, total, success, last_attempt)
        for each in registered():
            if each.series is not None:
                own = rpcs.get(each.name)
                yield from each.series(own.last if own else None)
