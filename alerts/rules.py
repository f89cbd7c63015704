"""The alerts and recording rules, as PromQL templates over alerts/config.yml's keys.

Placeholders are %(key)s: sel, agent_sel, server_sel, ksm_sel, agent_pod_sel,
agent_container_sel, node (the Alertmanager template naming the node), node_label, cached,
objective, and each alert's own keys in config.yml. alerts/generate.py fills them, either with
the values (the plain rule files) or with the chart's value expressions (its PrometheusRule).
"""

from __future__ import annotations

from dataclasses import dataclass

# The round trip measures the server path; its failures have their own meaning (see the runbook).
CACHED = 'rpc!="fetch_jwt_svid_roundtrip"'
# Failures with a cause of their own, each the `reason` its alert counts: the agent rate-limited
# the probe (its figures then say nothing of the agent), or workload attestation failed.
OWN_REASON = {
    "SpireHealthExporterRateLimited": "rate_limited",
    "SpireAgentWorkloadAttestationFailing": "workload_attestation_failed",
}
OWN_CAUSE = '"%s"' % "|".join(OWN_REASON.values())
# The SLO's windows, the SRE workbook's multiwindow multi-burn-rate pairs: (long, short, burn).
FAST_BURN = (("1h", "5m", 14.4), ("6h", "30m", 6))
SLOW_BURN = (("1d", "2h", 3), ("3d", "6h", 1))
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# Names the cluster where series carry a cluster label (a Thanos or Mimir ruler, or relabeling).
CLUSTER = '{{ with $labels.cluster }}cluster "{{ . }}"{{ else }}this cluster{{ end }}'
EXPIRY = "{{ if gt $value 0.0 }}expires in {{ $value | humanizeDuration }}{{ else }}has expired{{ end }}"


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str
    # node: one alert per node, named in the description. cluster: a cause shared by the whole
    # cluster (the server, the SLO); Alertmanager groups these by cluster, one notification each.
    scope: str
    expr: str
    summary: str
    description: str  # a Go template for Alertmanager, plus the placeholders


ALERTS = [
    Alert(
        "SpireAgentWorkloadAPIProbeFailing",
        "critical",
        "node",
        # From the counters, not the latest result: attempts made and none OK in the window, so
        # one lucky or unlucky probe neither hides nor fakes an outage. health_check is the
        # agent's liveness (SpireAgentNotServing's); a missing entry is NoRegistrationEntry's.
        "(%(attempts)s > 0) unless (%(attempts_ok)s > 0) unless on (job, instance) (%(denied)s > 0)",
        "SPIRE agent Workload API probe failing",
        'The {{ $labels.rpc }} probe on node %(node)s made {{ printf "%%.0f" $value }} attempts in the last '
        "%(window)s and none succeeded: workloads there cannot get this identity call answered.",
    ),
    Alert(
        "SpireAgentWorkloadAttestationFailing",
        "critical",
        "node",
        # SPIRE v1.15.2+ answers UNAVAILABLE "workload attestation failed" when every workload
        # attestor fails (a kubelet it cannot reach, say): nothing on the node gets an identity,
        # yet the agent is up, so the runbook differs from ProbeFailing's.
        "%(failed)s > 0 unless %(succeeded)s > 0",
        "SPIRE agent workload attestation failing",
        'The SPIRE agent on node %(node)s answered the {{ $labels.rpc }} probe "workload attestation failed" '
        "{{ $value | humanize }} times in the last %(window)s and never succeeded: every workload attestor "
        "fails, so no workload there gets an identity.",
    ),
    Alert(
        "SpireHealthExporterRateLimited",
        "warning",
        "node",
        # The agent's experimental.ratelimit keys on the caller's selectors: the exporter's own
        # bucket, not the agent's health. Its other figures hold; this one is the exporter's.
        "%(failed)s > 0",
        "The SPIRE agent rate-limits the exporter",
        "The SPIRE agent on node %(node)s rejected {{ $value | humanize }} {{ $labels.rpc }} probes in the last "
        '%(window)s with "rate limit exceeded" (experimental.ratelimit): the exporter\'s selector set is over '
        "its limit, so this probe no longer measures the agent. Raise the limit or the probe interval.",
    ),
    Alert(
        "SpireAgentWorkloadAPIDeadlineExceeded",
        "critical",
        "node",
        # A share of the attempts, so that it means the same at any probe interval.
        "sum without (rpc, code, reason) (increase("
        'spire_health_probes_total{%(sel)s, code="DEADLINE_EXCEEDED", %(cached)s}[%(window)s]'
        ")) / sum without (rpc, code, reason) (increase(spire_health_probes_total{%(sel)s, %(cached)s}[%(window)s])) "
        "> %(ratio)s",
        "Workload API calls hit their deadline",
        "{{ $value | humanizePercentage }} of Workload API probes on node %(node)s ran into their deadline "
        "in the last %(window)s (context deadline exceeded).",
    ),
    Alert(
        "SpireAgentWorkloadAPIErrorRatioHigh",
        "warning",
        "node",
        # Intermittent only: a ratio of 1 is an outage, which SpireAgentWorkloadAPIProbeFailing pages.
        "spire:workload_api_probe_errors:ratio_rate%(window)s{%(sel)s} > %(threshold)s < 1",
        "Workload API probes failing intermittently",
        "{{ $value | humanizePercentage }} of Workload API probes on node %(node)s failed over the last %(window)s.",
    ),
    Alert(
        "SpireAgentWorkloadAPILatencyHigh",
        "warning",
        "node",
        "spire:workload_api_probe_duration_seconds:p99_rate%(window)s{%(sel)s, %(cached)s} > %(threshold_seconds)s",
        "Workload API p99 latency high",
        "p99 latency of {{ $labels.rpc }} on node %(node)s is {{ $value | humanizeDuration }} "
        "over the last %(window)s.",
    ),
    Alert(
        "SpireWorkloadAPIErrorBudgetBurnFast",
        "critical",
        "cluster",
        "%(burn_fast)s",
        "Workload API error budget burning fast",
        "Workload API probes in " + CLUSTER + " fail at {{ $value | humanizePercentage }} "
        "over the last hours: at this rate the month's error budget of the %(objective)s objective is "
        "gone within days.",
    ),
    Alert(
        "SpireWorkloadAPIErrorBudgetBurnSlow",
        "warning",
        "cluster",
        "%(burn_slow)s",
        "Workload API error budget burning",
        "Workload API probes in " + CLUSTER + " fail at {{ $value | humanizePercentage }} "
        "over the last days: more than the %(objective)s objective allows, so the budget runs out "
        "before the month does.",
    ),
    Alert(
        "SpireX509SVIDNotRotated",
        "warning",
        "node",
        '(spire_health_svid_expiry_timestamp_seconds{%(sel)s, kind="x509"} - time()) / '
        '(spire_health_svid_expiry_timestamp_seconds{%(sel)s, kind="x509"} - '
        'spire_health_svid_issued_timestamp_seconds{%(sel)s, kind="x509"}) < %(remaining_fraction)s',
        "X.509-SVID not rotated on time",
        "The X.509-SVID {{ $labels.spiffe_id }} on node %(node)s has only {{ $value | humanizePercentage }} "
        "of its lifetime left; the agent renews at about half, so rotation is stuck.",
    ),
    Alert(
        "SpireSVIDExpiringSoon",
        "critical",
        "node",
        # A share of the SVID's own lifetime, so that short TTLs don't page all day.
        "(spire_health_svid_expiry_timestamp_seconds{%(sel)s} - time()) and ("
        "(spire_health_svid_expiry_timestamp_seconds{%(sel)s} - time()) / (spire_health_svid_expiry_timestamp_seconds{%(sel)s} - "
        "spire_health_svid_issued_timestamp_seconds{%(sel)s}) < %(remaining_fraction)s)",
        "SVID about to expire",
        "The {{ $labels.kind }} SVID {{ $labels.spiffe_id }} on node %(node)s " + EXPIRY + ": "
        "less than {{ %(remaining_fraction)s | humanizePercentage }} of its lifetime was left and the agent "
        "served no new one.",
    ),
    Alert(
        "SpireTrustBundleCAExpiringSoon",
        "critical",
        "node",
        # The newest CA, not the earliest nor a count: SPIRE keeps an expired CA in the bundle
        # for a while, so "two certificates" can be one expired and one about to.
        "spire_health_trust_bundle_latest_expiry_timestamp_seconds{%(sel)s} - time() < %(seconds)s",
        "Trust bundle CA expiring without a successor",
        "The newest CA in the {{ $labels.trust_domain }} bundle seen on node %(node)s " + EXPIRY + " "
        "and no successor CA has been published.",
    ),
    Alert(
        "SpireServerCAExpiringSoon",
        "critical",
        "cluster",
        # SPIRE sets both gauges when it activates a CA, the TTL to what is left then; it
        # activates the next one at half the lifetime, so a quarter left means rotation is stuck.
        "(spire_server_manager_x509_ca_rotate_expiration{%(server_sel)s} - time()) and ("
        "(spire_server_manager_x509_ca_rotate_expiration{%(server_sel)s} - time()) / "
        "spire_server_manager_x509_ca_rotate_ttl{%(server_sel)s} < %(remaining_fraction)s)",
        "SPIRE server CA not rotated",
        "The active X.509 CA of SPIRE server {{ $labels.instance }} in "
        + CLUSTER
        + " "
        + EXPIRY
        + " and no new CA was activated: when it expires, no agent can get an SVID signed.",
    ),
    Alert(
        "SpireAgentServerSyncFailing",
        "critical",
        "cluster",
        # Every node at once when the server is the cause, so Alertmanager groups it by cluster.
        'sum without (status) (increase(spire_agent_manager_sync_fetch_entries_updates{%(agent_sel)s, status!="OK"}'
        "[%(window)s])) > 0 unless sum without (status) (increase("
        'spire_agent_manager_sync_fetch_entries_updates{%(agent_sel)s, status="OK"}[%(window)s])) > 0',
        "SPIRE agent cannot sync with the server",
        "The SPIRE agent on node %(node)s failed {{ $value | humanize }} syncs with the SPIRE server in the "
        "last %(window)s and none succeeded: it serves cached SVIDs until they expire, and new "
        "workloads and rotations get nothing.",
    ),
    Alert(
        "SpireAgentMemoryNearLimit",
        "warning",
        "node",
        # The working set, as the kubelet counts it: page cache the kernel can drop is no pressure.
        "spire_health_agent_cgroup_memory_working_set_bytes{%(sel)s} / spire_health_agent_cgroup_memory_limit_bytes{%(sel)s} "
        "> %(fraction)s",
        "SPIRE agent memory near its cgroup limit",
        "The SPIRE agent on node %(node)s has a working set of {{ $value | humanizePercentage }} "
        "of its memory limit.",
    ),
    Alert(
        "SpireAgentMemoryPeakNearLimit",
        "info",
        "node",
        # The peak never falls while the process lives, so it fires only while the peak is new.
        "spire_health_agent_process_peak_resident_memory_bytes{%(sel)s} / spire_health_agent_cgroup_memory_limit_bytes{%(sel)s} "
        "> %(fraction)s and changes(spire_health_agent_process_peak_resident_memory_bytes{%(sel)s}[%(window)s]) > 0",
        "SPIRE agent memory peak came close to its limit",
        "The SPIRE agent on node %(node)s peaked at {{ $value | humanizePercentage }} of its memory limit "
        "in the last %(window)s (startup and attestation bursts); a larger burst will be OOM-killed.",
    ),
    Alert(
        "SpireAgentOOMKilled",
        "critical",
        "node",
        "increase(spire_health_agent_cgroup_oom_kills_total{%(sel)s}[%(window)s]) > 0",
        "SPIRE agent OOM-killed",
        "The OOM killer killed a process in the SPIRE agent's cgroup on node %(node)s "
        "{{ $value | humanize }} times in the last %(window)s.",
    ),
    Alert(
        "SpireAgentContainerOOMKilled",
        "critical",
        "node",
        # kube-state-metrics, for Kubernetes: the kill goes with the old container's cgroup, so the
        # exporter's counter in the new one starts at 0. The restart bounds the alert in time.
        '(kube_pod_container_status_last_terminated_reason{%(ksm_sel)s, %(agent_container_sel)s, reason="OOMKilled"} '
        "and on (namespace, pod, container) increase(kube_pod_container_status_restarts_total{%(ksm_sel)s, "
        "%(agent_container_sel)s}[%(window)s]) > 0) * on (namespace, pod) group_left (node) "
        "max by (namespace, pod, node) (kube_pod_info{%(ksm_sel)s, %(agent_pod_sel)s})",
        "SPIRE agent container OOM-killed",
        "The {{ $labels.container }} container of pod {{ $labels.pod }} on node {{ $labels.node }} was "
        "OOM-killed and restarted in the last %(window)s (kube-state-metrics): its memory limit is "
        "below its peak.",
    ),
    Alert(
        "SpireAgentRestarting",
        "warning",
        "node",
        "changes(spire_health_agent_process_start_time_seconds{%(sel)s}[%(window)s]) >= %(restarts)s",
        "SPIRE agent restarting repeatedly",
        "The SPIRE agent on node %(node)s restarted {{ $value | humanize }} times in the last %(window)s.",
    ),
    Alert(
        "SpireAgentDown",
        "critical",
        "node",
        "spire_health_agent_process_up{%(sel)s} == 0",
        "SPIRE agent down",
        "No spire-agent process is running on node %(node)s: nothing there can get an identity.",
    ),
    Alert(
        "SpireAgentNotServing",
        "warning",
        "node",
        "spire_health_agent_grpc_health_serving{%(sel)s} == 0",
        "SPIRE agent socket not serving",
        "The SPIRE agent socket on node %(node)s does not answer its gRPC health check with SERVING "
        "(the agent is hung, overloaded, still starting, or gone).",
    ),
    # The seed's third cause, from SPIRE's own telemetry (v1.13.3 to v1.15.3): its workload_api
    # "connection" counter and "connections" gauge count Workload API RPCs started and in
    # flight, each started RPC with a workload attestation of its own.
    Alert(
        "SpireAgentWorkloadAPIChurnHigh",
        "warning",
        "node",
        "%(churn)s > %(min_rate)s and ((%(churn)s > %(factor)s * %(baseline)s) or (%(churn)s unless %(baseline)s))",
        "Workload API calls far above the node's baseline",
        "Workloads on node %(node)s start {{ $value | humanize }} Workload API calls a second, each "
        "attested anew: more than %(factor)s times the previous %(baseline_window)s. A client is "
        "likely creating a source or channel per request.",
    ),
    Alert(
        "SpireAgentWorkloadAPIStreamsGrowing",
        "warning",
        "node",
        "%(growing_agent)s or (%(growing_socket)s unless on (%(node_label)s) "
        "spire_agent_workload_api_connections{%(agent_sel)s})",
        "Open Workload API streams only grow",
        "Open Workload API streams or connections on node %(node)s grew by at least %(growth)s "
        "over %(window)s to {{ $value | humanize }} and never fell: a client is likely leaking "
        "sources (opened and never closed).",
    ),
    Alert(
        "SpireHealthExporterNoRegistrationEntry",
        "warning",
        "node",
        'increase(spire_health_probes_total{%(sel)s, rpc="fetch_x509_svid", code="PERMISSION_DENIED"}'
        '[%(window)s]) > 0 and ignoring (code) spire_health_probe_success{%(sel)s, rpc="fetch_x509_svid"} == 0',
        "The exporter has no registration entry",
        'The SPIRE agent on node %(node)s answers the exporter "no identity issued" (PERMISSION_DENIED): '
        "its registration entry is missing or its selectors do not match.",
    ),
    Alert(
        "SpireHealthExporterProbesStuck",
        "warning",
        "node",
        # The exporter serves its last values while a probe loop hangs; the attempt time shows it.
        "time() - spire_health_probe_last_attempt_timestamp_seconds{%(sel)s} > %(periods)s * "
        "(spire_health_probe_interval_seconds{%(sel)s} + spire_health_probe_timeout_seconds{%(sel)s})",
        "spire-health-exporter probe loop stuck",
        "The {{ $labels.rpc }} probe on node %(node)s last finished {{ $value | humanizeDuration }} ago, "
        "more than %(periods)s probe periods: its loop is stuck and its metrics are stale.",
    ),
    Alert(
        "SpireHealthExporterDown",
        "warning",
        "node",
        "up{%(sel)s} == 0",
        "spire-health-exporter down",
        "Prometheus cannot scrape spire-health-exporter on node %(node)s ({{ $labels.instance }}).",
    ),
    Alert(
        "SpireHealthExporterMissingOnNode",
        "warning",
        "node",
        # absent() sees only every target gone; kube-state-metrics knows the nodes with an agent.
        "(count by (cluster, node) (kube_pod_info{%(ksm_sel)s, %(agent_pod_sel)s}) unless on (cluster, node) "
        "count by (cluster, %(node_label)s) (up{%(sel)s})) and on (cluster) count by (cluster) (up{%(sel)s}) > 0",
        "spire-health-exporter missing on a node",
        "Node {{ $labels.node }} runs a SPIRE agent pod but Prometheus has no spire-health-exporter target "
        "there, while other nodes have one: the DaemonSet does not select or tolerate the node, or its pod "
        "is not running.",
    ),
    Alert(
        "SpireHealthExporterAbsent",
        "warning",
        "cluster",
        "absent(up{%(sel)s})",
        "spire-health-exporter absent",
        "Prometheus has no spire-health-exporter target at all: SPIRE agents are not being watched.",
    ),
]


def error_ratio(sel: str, by: str, window: str) -> str:
    """The SLI's failed share: cached probes, a missing registration entry and a rate-limited
    probe left out (the exporter's configuration and its own selectors' bucket, not the agent's
    availability; NoRegistrationEntry and RateLimited say so)."""
    probes = 'spire_health_probes_total{%s, %s, code!~%s, reason!="rate_limited"}[%s]'
    failed = probes % (sel, CACHED, '"OK|PERMISSION_DENIED"', window)
    answered = probes % (sel, CACHED, '"PERMISSION_DENIED"', window)
    return f"sum by ({by}) (rate({failed})) / sum by ({by}) (rate({answered}))"


def burn(pairs: tuple[tuple[str, str, float], ...], objective: str) -> str:
    """Both windows over the burn rate: the long one says it matters, the short one that it's now."""
    record = "cluster:spire_health_probe_errors:ratio_rate%s"
    return " or ".join(
        f"({record % long} > ({rate} * (1 - {objective})) and {record % short} > ({rate} * (1 - {objective})))"
        for long, short, rate in pairs
    )
