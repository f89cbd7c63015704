"""Probe series: counts by code, latency, the latest result, schedule, and each probe's own series."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from exporter.probes import registered
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
        last_ok = GaugeMetricFamily(
            "spire_health_probe_last_success_timestamp_seconds",
            "Unix time of the latest successful probe.",
            labels=by_rpc,
        )
        last_duration = GaugeMetricFamily(
            "spire_health_probe_last_duration_seconds",
            "Time the latest probe took, whatever its result; for streams, to the first message or "
            "the failure.",
            labels=by_rpc,
        )
        timeout = GaugeMetricFamily(
            "spire_health_probe_timeout_seconds",
            "Deadline each probe is given, from the configuration.",
            labels=by_rpc,
        )
        interval = GaugeMetricFamily(
            "spire_health_probe_interval_seconds",
            "Time between probes, from the configuration.",
            labels=by_rpc,
        )
        last_attempt = GaugeMetricFamily(
            "spire_health_probe_last_attempt_timestamp_seconds",
            "Unix time at which the latest probe finished, whatever its result.",
            labels=by_rpc,
        )
        for rpc, stats in sorted(rpcs.items()):
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
                last_duration.add_metric([rpc], stats.last.duration)
                last_attempt.add_metric([rpc], stats.last.finished_at)
            if stats.last_success is not None:
                last_ok.add_metric([rpc], stats.last_success)
            if stats.timeout is not None:
                timeout.add_metric([rpc], stats.timeout)
            if stats.interval is not None:
                interval.add_metric([rpc], stats.interval)
        yield from (duration, total, success, last_ok, last_duration, timeout, interval, last_attempt)
        for spec in registered():
            if spec.series is not None:
                own = rpcs.get(spec.name)
                yield from spec.series(own.last if own else None)
