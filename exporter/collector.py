"""Turns a probe-state snapshot into Prometheus metrics. It reads state and nothing else."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.config import HEALTH_PROBE
from exporter.probes.health_check import SERVING_CODES
from exporter.state import BUCKETS, ProbeState, Snapshot

P = "spire_workload_api_"
A = "spire_agent_"


class ExporterCollector(Collector):
    def __init__(self, state: ProbeState, process_enabled: bool = True) -> None:
        self.state = state
        self.process_enabled = process_enabled

    def collect(self) -> Iterator[Metric]:
        snap = self.state.snapshot()
        yield from self._probes(snap)
        yield from self._identities(snap)
        yield from self._agent(snap)
        info = GaugeMetricFamily(
            "spire_exporter_build_info", "Build of this exporter; always 1.", labels=["version"]
        )
        info.add_metric([__version__], 1)
        yield info
        dropped = GaugeMetricFamily(
            "spire_exporter_spiffe_ids_over_limit",
            "Distinct SPIFFE IDs seen but not exported because of limits.max_spiffe_ids.",
        )
        dropped.add_metric([], snap.dropped_spiffe_ids)
        yield dropped

    def _probes(self, snap: Snapshot) -> Iterator[Metric]:
        duration = HistogramMetricFamily(
            P + "probe_duration_seconds",
            "Time a successful probe waited for its answer; for streams, the time to the first message.",
            labels=["rpc"],
        )
        total = CounterMetricFamily(
            P + "probes",
            "Probes run, by result code (gRPC code name, OK, or a malformed-answer code).",
            labels=["rpc", "code"],
        )
        success = GaugeMetricFamily(
            P + "probe_success", "Whether the latest probe succeeded (1) or not (0).", labels=["rpc"]
        )
        last_ok = GaugeMetricFamily(
            P + "last_success_timestamp_seconds", "Unix time of the latest successful probe.", labels=["rpc"]
        )
        for rpc, stats in sorted(snap.rpcs.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(BUCKETS, stats.buckets, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            buckets.append(("+Inf", stats.observations))
            duration.add_metric([rpc], buckets, stats.duration_sum)
            for code, count in sorted(stats.counts.items()):
                total.add_metric([rpc, code], count)
            if stats.last is not None:
                success.add_metric([rpc], 1 if stats.last.ok else 0)
            if stats.last_success is not None:
                last_ok.add_metric([rpc], stats.last_success)
        yield from (duration, total, success, last_ok)

        serving = GaugeMetricFamily(
            A + "grpc_health_serving",
            "Whether the agent socket's grpc.health.v1 Check says SERVING (1) or not (0).",
        )
        health = snap.rpcs.get(HEALTH_PROBE)
        if health is not None and health.last is not None:
            serving.add_metric([], 1 if health.last.code in SERVING_CODES else 0)
        yield serving

    def _identities(self, snap: Snapshot) -> Iterator[Metric]:
        expiry = GaugeMetricFamily(
            "spire_svid_expiry_timestamp_seconds",
            "Unix time at which the exporter's SVID expires.",
            labels=["kind", "spiffe_id"],
        )
        issued = GaugeMetricFamily(
            "spire_svid_issued_timestamp_seconds",
            "Unix time at which the exporter's SVID was issued.",
            labels=["kind", "spiffe_id"],
        )
        for (kind, spiffe_id), svid in sorted(snap.svids.items()):
            expiry.add_metric([kind, spiffe_id], svid.expiry)
            issued.add_metric([kind, spiffe_id], svid.issued)
        rotations = CounterMetricFamily(
            "spire_x509_svid_rotations",
            "X.509-SVID rotations seen on the long-lived FetchX509SVID stream.",
            labels=["spiffe_id"],
        )
        for spiffe_id, count in sorted(snap.rotations.items()):
            rotations.add_metric([spiffe_id], count)
        certs = GaugeMetricFamily(
            "spire_trust_bundle_certificates",
            "CA certificates in the X.509 trust bundle.",
            labels=["trust_domain"],
        )
        ca_expiry = GaugeMetricFamily(
            "spire_trust_bundle_expiry_timestamp_seconds",
            "Unix time at which the earliest CA certificate in the X.509 trust bundle expires.",
            labels=["trust_domain"],
        )
        keys = GaugeMetricFamily(
            "spire_jwt_bundle_keys", "Keys in the JWT bundle (JWKS).", labels=["trust_domain"]
        )
        for (kind, td), bundle in sorted(snap.bundles.items()):
            if kind == "x509":
                certs.add_metric([td], bundle.items)
                if bundle.earliest_expiry is not None:
                    ca_expiry.add_metric([td], bundle.earliest_expiry)
            else:
                keys.add_metric([td], bundle.items)
        yield from (expiry, issued, rotations, certs, ca_expiry, keys)

    def _agent(self, snap: Snapshot) -> Iterator[Metric]:
        http = GaugeMetricFamily(
            A + "http_health_status",
            "Whether the agent's HTTP health check answered 200 (1) or not (0).",
            labels=["check"],
        )
        for check, ok in sorted(snap.http_health.items()):
            http.add_metric([check], 1 if ok else 0)
        yield http
        if not self.process_enabled:
            return
        up = GaugeMetricFamily(A + "process_up", "Whether the spire-agent process was found (1) or not (0).")
        if snap.process_up is not None:
            up.add_metric([], 1 if snap.process_up else 0)
        yield up
        proc, group = snap.process, snap.cgroup
        G, C = GaugeMetricFamily, CounterMetricFamily
        families = [
            (G, "process_resident_memory_bytes", "Resident memory of the agent process.", proc and proc.rss),
            (
                G,
                "process_peak_resident_memory_bytes",
                "Peak resident memory of the agent process since it started (VmHWM).",
                proc and proc.peak_rss,
            ),
            (G, "process_open_fds", "Open file descriptors of the agent process.", proc and proc.open_fds),
            (G, "process_threads", "OS threads of the agent process.", proc and proc.threads),
            (
                G,
                "process_start_time_seconds",
                "Unix time at which the agent process started.",
                proc and proc.start_time,
            ),
            (
                C,
                "process_cpu_seconds",
                "User and system CPU time of the agent process.",
                proc and proc.cpu_seconds,
            ),
            (G, "cgroup_memory_usage_bytes", "Memory charged to the agent's cgroup.", group and group.usage),
            (
                G,
                "cgroup_memory_limit_bytes",
                "Memory limit that applies to the agent's cgroup; absent if none.",
                group and group.limit,
            ),
            (
                G,
                "cgroup_memory_peak_bytes",
                "Peak memory charged to the agent's cgroup.",
                group and group.peak,
            ),
            (
                C,
                "cgroup_oom_kills",
                "Processes in the agent's cgroup killed by the OOM killer.",
                group and group.oom_kills,
            ),
        ]
        for kind, name, help_text, value in families:
            family = kind(A + name, help_text)
            if value is not None:
                family.add_metric([], value)
            yield family


def _le(bound: float) -> str:
    return repr(float(bound))
