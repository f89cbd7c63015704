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
from exporter.names import HEALTH_CHECK
from exporter.state import ProbeState, Snapshot

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
        yield from self._own_health(snap)

    def _own_health(self, snap: Snapshot) -> Iterator[Metric]:
        G, C = GaugeMetricFamily, CounterMetricFamily
        yield _one(
            G,
            "spire_exporter_spiffe_ids_over_limit",
            "SPIFFE IDs in the agent's latest answers that are not exported because of "
            "limits.max_spiffe_ids.",
            snap.dropped_spiffe_ids,
        )
        yield _one(
            G,
            "spire_exporter_trust_domains_over_limit",
            "Trust domains in the agent's latest bundles that are not exported because of "
            "limits.max_trust_domains.",
            snap.dropped_trust_domains,
        )
        yield _by_label(
            C,
            "spire_exporter_job_errors",
            "Exceptions that escaped one of the exporter's own jobs; each is a bug, logged with its type.",
            "job",
            snap.job_errors,
        )
        if snap.watch_up is not None:
            yield _one(
                G,
                "spire_exporter_watch_up",
                "Whether the long-lived FetchX509SVID stream that counts rotations is open and answering "
                "(1) or not (0).",
                int(snap.watch_up),
            )
            yield _one(
                C,
                "spire_exporter_watch_reconnects",
                "Times the rotation watch opened a new FetchX509SVID stream after the previous one broke.",
                snap.watch_reconnects,
            )

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
        last_duration = GaugeMetricFamily(
            P + "probe_last_duration_seconds",
            "Time the latest probe took, whatever its result; for streams, to the first message or "
            "the failure.",
            labels=["rpc"],
        )
        timeout = GaugeMetricFamily(
            P + "probe_timeout_seconds",
            "Deadline each probe is given, from the configuration.",
            labels=["rpc"],
        )
        interval = GaugeMetricFamily(
            P + "probe_interval_seconds",
            "Time between probes, from the configuration.",
            labels=["rpc"],
        )
        last_attempt = GaugeMetricFamily(
            "spire_exporter_probe_last_attempt_timestamp_seconds",
            "Unix time at which the latest probe finished, whatever its result.",
            labels=["rpc"],
        )
        for rpc, stats in sorted(snap.rpcs.items()):
            cumulative, buckets = 0, []
            for bound, count in zip(snap.buckets, stats.buckets, strict=True):
                cumulative += count
                buckets.append((_le(bound), cumulative))
            buckets.append(("+Inf", stats.observations))
            duration.add_metric([rpc], buckets, stats.duration_sum)
            for code, count in sorted(stats.counts.items()):
                total.add_metric([rpc, code], count)
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

        serving = GaugeMetricFamily(
            A + "grpc_health_serving",
            "Whether the agent socket's grpc.health.v1 Check says SERVING (1) or not (0).",
        )
        health = snap.rpcs.get(HEALTH_CHECK)
        if health is not None and health.last is not None and health.last.serving is not None:
            serving.add_metric([], 1 if health.last.serving else 0)
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
        rotations = _by_label(
            CounterMetricFamily,
            "spire_x509_svid_rotations",
            "X.509-SVID rotations seen on the long-lived FetchX509SVID stream.",
            "spiffe_id",
            snap.rotations,
        )
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
        ca_latest = GaugeMetricFamily(
            "spire_trust_bundle_latest_expiry_timestamp_seconds",
            "Unix time at which the newest CA certificate in the X.509 trust bundle expires.",
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
                if bundle.latest_expiry is not None:
                    ca_latest.add_metric([td], bundle.latest_expiry)
            else:
                keys.add_metric([td], bundle.items)
        yield from (expiry, issued, rotations, certs, ca_expiry, ca_latest, keys)

    def _agent(self, snap: Snapshot) -> Iterator[Metric]:
        G, C = GaugeMetricFamily, CounterMetricFamily
        yield _by_label(
            G,
            A + "http_health_status",
            "Whether the agent's HTTP health check answered 200 (1) or not (0).",
            "check",
            {check: int(ok) for check, ok in snap.http_health.items()},
        )
        if not self.process_enabled:
            return
        up = None if snap.process_up is None else int(snap.process_up)
        yield _one(G, A + "process_up", "Whether the spire-agent process was found (1) or not (0).", up)
        proc, group = snap.process, snap.cgroup
        families = [
            (
                G,
                "process_resident_memory_bytes",
                "Resident memory of the agent process.",
                proc.rss if proc else None,
            ),
            (
                G,
                "process_peak_resident_memory_bytes",
                "Peak resident memory of the agent process since it started (VmHWM).",
                proc.peak_rss if proc else None,
            ),
            (
                G,
                "process_open_fds",
                "Open file descriptors of the agent process.",
                proc.open_fds if proc else None,
            ),
            (G, "process_threads", "OS threads of the agent process.", proc.threads if proc else None),
            (
                G,
                "socket_connections",
                "Connections to the agent's Workload API socket from its own network namespace.",
                proc.socket_connections if proc else None,
            ),
            (
                G,
                "process_start_time_seconds",
                "Unix time at which the agent process started.",
                proc.start_time if proc else None,
            ),
            (
                C,
                "process_cpu_seconds",
                "User and system CPU time of the agent process.",
                proc.cpu_seconds if proc else None,
            ),
            (
                G,
                "cgroup_memory_usage_bytes",
                "Memory charged to the agent's cgroup.",
                group.usage if group else None,
            ),
            (
                G,
                "cgroup_memory_working_set_bytes",
                "Memory charged to the agent's cgroup less inactive file cache, as the kubelet counts it.",
                group.working_set if group else None,
            ),
            (
                G,
                "cgroup_memory_limit_bytes",
                "Memory limit that applies to the agent's cgroup; absent if none.",
                group.limit if group else None,
            ),
            (
                G,
                "cgroup_memory_peak_bytes",
                "Peak memory charged to the agent's cgroup.",
                group.peak if group else None,
            ),
            (
                C,
                "cgroup_oom_kills",
                "Processes in the agent's cgroup killed by the OOM killer.",
                group.oom_kills if group else None,
            ),
        ]
        for kind, name, help_text, value in families:
            yield _one(kind, A + name, help_text, value)


Family = type[GaugeMetricFamily] | type[CounterMetricFamily]


def _one(kind: Family, name: str, help_text: str, value: float | None) -> Metric:
    """A family of one unlabelled sample; with no value, a family without samples."""
    family = kind(name, help_text)
    if value is not None:
        family.add_metric([], value)
    return family


def _by_label(kind: Family, name: str, help_text: str, label: str, values: dict[str, int]) -> Metric:
    family = kind(name, help_text, labels=[label])
    for key, value in sorted(values.items()):
        family.add_metric([key], value)
    return family


def _le(bound: float) -> str:
    return repr(float(bound))
