"""Agent series: HTTP health, and the process and cgroup samples when process sampling is on."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.collect.families import Family, by_label, one
from exporter.store.agent import AgentStore, CgroupSample, ProcessSample

G, C = GaugeMetricFamily, CounterMetricFamily

# (kind, name, help, the sample's field)
PROCESS: tuple[tuple[Family, str, str, str], ...] = (
    (G, "spire_health_agent_process_resident_memory_bytes", "Resident memory of the agent process.", "rss"),
    (G, "spire_health_agent_process_peak_resident_memory_bytes",
     "Peak resident memory of the agent process since it started (VmHWM).", "peak_rss"),
    (G, "spire_health_agent_process_open_fds", "Open file descriptors of the agent process.", "open_fds"),
    (G, "spire_health_agent_process_threads", "OS threads of the agent process.", "threads"),
    (G, "spire_health_agent_socket_connections",
     "Connections to the agent's Workload API socket from its own network namespace.", "socket_connections"),
    (G, "spire_health_agent_process_start_time_seconds",
     "Unix time at which the agent process started.", "start_time"),
    (C, "spire_health_agent_process_cpu_seconds",
     "User and system CPU time of the agent process.", "cpu_seconds"),
)  # fmt: skip
CGROUP: tuple[tuple[Family, str, str, str], ...] = (
    (G, "spire_health_agent_cgroup_memory_usage_bytes", "Memory charged to the agent's cgroup.", "usage"),
    (G, "spire_health_agent_cgroup_memory_working_set_bytes",
     "Memory charged to the agent's cgroup less inactive file cache, as the kubelet counts it.",
     "working_set"),
    (G, "spire_health_agent_cgroup_memory_limit_bytes",
     "Memory limit that applies to the agent's cgroup; absent if none.", "limit"),
    (G, "spire_health_agent_cgroup_memory_peak_bytes", "Peak memory charged to the agent's cgroup.", "peak"),
    (C, "spire_health_agent_cgroup_oom_kills",
     "Processes in the agent's cgroup killed by the OOM killer.", "oom_kills"),
)  # fmt: skip


class AgentCollector(Collector):
    def __init__(self, store: AgentStore, process_enabled: bool = True) -> None:
        self.store = store
        self.process_enabled = process_enabled

    def collect(self) -> Iterator[Metric]:
        snap = self.store.snapshot()
        yield by_label(
            G,
            "spire_health_agent_http_health_status",
            "Whether the agent's HTTP health check answered 200 (1) or not (0).",
            "check",
            {check: int(ok) for check, ok in snap.http_health.items()},
        )
        if not self.process_enabled:
            return
        up = None if snap.process_up is None else int(snap.process_up)
        yield one(
            G,
            "spire_health_agent_process_up",
            "Whether the spire-agent process was found (1) or not (0).",
            up,
        )
        yield from _sampled(PROCESS, snap.process)
        yield from _sampled(CGROUP, snap.cgroup)


def _sampled(
    families: tuple[tuple[Family, str, str, str], ...], sample: ProcessSample | CgroupSample | None
) -> Iterator[Metric]:
    """Each family of a sample; all of them empty when there is no sample."""
    for kind, name, help_text, attribute in families:
        yield one(kind, name, help_text, None if sample is None else getattr(sample, attribute))
