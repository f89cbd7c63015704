"""The alerts and recording rules, as PromQL templates over alerts/config.yml's keys.

Placeholders are %(key)s: sel, agent_sel, server_sel, ksm_sel, agent_pod_sel,
agent_container_sel, node (the Alertmanager template naming the node), node_label, cached,
objective, each alert's own keys in config.yml, and the shared fragments that alerts/generate.py
builds (the recorded series, and each page's condition, which the alerts it explains leave out).
alerts/generate.py fills them, either with the values (the plain rule files) or with the chart's
value expressions (its PrometheusRule).

The model, for a fleet of thousands of nodes: a node's own trouble is a warning about that node.
A cause that many nodes share pages once, from a cluster's share of nodes or from the trust
domain, and the node alerts it explains stay silent (`unless on (cluster)`), so that any
Alertmanager configuration gets one page, not one per node.
"""

from __future__ import annotations

from dataclasses import dataclass

# What workloads wait for, from the agent's cache: not the round trip, which measures the server
# path (its failures have their own meaning, see the runbook), nor the agent's Debug API, which
# no workload calls (its answers have alerts of their own).
CACHED = 'rpc!~"fetch_jwt_svid_roundtrip|debug_get_info"'
ROUND_TRIP = 'rpc="fetch_jwt_svid_roundtrip"'
# Failures with a cause of their own, each the `reason` its alert counts: the agent rate-limited
# the probe (its figures then say nothing of the agent), or workload attestation failed.
OWN_REASON = {
    "SpireHealthExporterRateLimited": "rate_limited",
    "SpireAgentWorkloadAttestationFailing": "workload_attestation_failed",
}
# Not errors of the agent: no registration entry for the exporter (PERMISSION_DENIED, and then
# NO_TOKEN for validation, which had no token to validate), or its own rate-limit bucket.
NOT_AN_ERROR = 'code!~"PERMISSION_DENIED|NO_TOKEN", reason!="rate_limited"'
# The SLO's windows, the SRE workbook's multiwindow multi-burn-rate pairs: (long, short, burn).
FAST_BURN = (("1h", "5m", 14.4), ("6h", "30m", 6))
SLOW_BURN = (("1d", "2h", 3), ("3d", "6h", 1))
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# SPIRE's CA schedule (pkg/server/ca/manager, v1.10 to v1.15): the next CA is prepared and
# published in the bundle when min(lifetime / 2, 30 d) is left, and activated when
# min(lifetime / 6, 7 d) is left.
PREPARE_CAP_SECONDS = 30 * 86400
ACTIVATE_CAP_SECONDS = 7 * 86400
# Names the cluster where series carry a cluster label (a Thanos or Mimir ruler, or relabeling).
CLUSTER = '{{ with $labels.cluster }}cluster "{{ . }}"{{ else }}this cluster{{ end }}'
EXPIRY = "{{ if gt $value 0.0 }}expires in {{ $value | humanizeDuration }}{{ else }}has expired{{ end }}"
SHARE = "{{ $value | humanizePercentage }} of the nodes in " + CLUSTER


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    summary: str
    description: str  # a Go template for Alertmanager, plus the placeholders


ALERTS = [
    # -- pages: one per cluster or trust domain ------------------------------------------------
    Alert(
        "SpireAgentsFailing",
        # A server the agents cannot reach fails FetchJWTSVID everywhere once cached tokens
        # expire: the server's own page says that better, where there is one.
        "%(failing_share)s unless on (cluster) (%(not_syncing_share)s) unless on (cluster) (%(server_path_share)s)",
        "Workload API failing on many nodes",
        SHARE + " have a Workload API call that every probe in the last %(failing_window)s failed "
        "(at least %(min_nodes)s nodes): a shared cause, such as an agent release, a node image, the "
        "kubelet the attestors ask, or the trust bundle. The per-node alerts are held back while this fires.",
    ),
    Alert(
        "SpireSVIDsNotRotated",
        "%(not_rotated_share)s unless on (cluster) (%(server_path_share)s) unless on (cluster) (%(not_syncing_share)s) "
        "unless on (cluster) (%(failing_share)s)",
        "X.509-SVIDs not rotated across the cluster",
        SHARE + " hold an X.509-SVID with less than %(remaining_fraction)s of its lifetime left (at "
        "least %(min_nodes)s nodes): agents cannot renew, so the SPIRE server or the path to it is the "
        "cause. Served SVIDs expire when their lifetime runs out.",
    ),
    Alert(
        "SpireServerPathFailing",
        "%(server_path_share)s unless on (cluster) (%(not_syncing_share)s) unless on (cluster) (%(server_side)s)",
        "SPIRE server path failing for many nodes",
        SHARE + " running the round-trip probe could not get a new JWT-SVID signed by the SPIRE server in "
        "the last %(round_trip_window)s (at least %(min_nodes)s nodes): the server, its datastore or the "
        "network to it. Cached SVIDs still work until they need renewal.",
    ),
    Alert(
        "SpireAgentsNotSyncing",
        "%(not_syncing_share)s unless on (cluster) (%(server_side)s)",
        "SPIRE agents cannot sync with the server",
        SHARE + " failed every sync with the SPIRE server in the last %(sync_window)s, or have not "
        "synced in %(stale_intervals)s sync intervals (at least %(min_nodes)s nodes, from the agents' own "
        "telemetry or their Debug API): they serve cached SVIDs until those expire, and new workloads "
        "and rotations get nothing.",
    ),
    Alert(
        "SpireTrustBundleCAExpiringSoon",
        # The newest CA against SPIRE's own schedule: its successor is published when
        # min(lifetime / 2, 30 d) is left, so less than that (times the share) means it is overdue.
        "%(bundle_rotation)s < %(share)s unless on (cluster) (%(server_ca_overdue)s) "
        # A federated trust domain's bundle is SpireFederatedBundleStale's.
        "unless on (cluster, trust_domain) (%(federated)s)",
        "Trust bundle CA has no successor on time",
        "The newest CA in the {{ $labels.trust_domain }} bundle, as nodes of " + CLUSTER + " see it, has "
        "{{ $value | humanizePercentage }} of the time left at which SPIRE publishes its successor "
        "(half its lifetime, at most 30 days): CA rotation is stuck. When it expires, nothing in the "
        "trust domain verifies.",
    ),
    Alert(
        "SpireFederatedBundleStale",
        # A federated trust domain's bundle as SPIRE's schedule says it must change: its successor
        # CA is published at min(lifetime / 2, 30 d) left, and the server fetches it within a
        # refresh hint. A bundle that only looks valid is one whose refresh has stopped.
        "%(federated_overdue)s",
        "Federated trust bundle not refreshed",
        "The {{ $labels.trust_domain }} bundle that nodes of " + CLUSTER + " hold should have gained "
        "the successor of its newest CA {{ $value | humanizeDuration }} ago (more than %(intervals)s "
        "refresh hints of %(refresh_hint)ss): the SPIRE server no longer refreshes it from that trust "
        "domain's bundle endpoint, or that trust domain's CA rotation is stuck. It still looks valid; "
        "once that trust domain activates a new CA, nothing here verifies its SVIDs.",
    ),
    Alert(
        "SpireServerCAExpiringSoon",
        "%(server_ca_overdue)s",
        "SPIRE server CA not rotated on time",
        "The active X.509 CA of SPIRE server {{ $labels.instance }} in " + CLUSTER + " " + EXPIRY + ", "
        "past the point at which SPIRE activates the next CA (a sixth of its lifetime, at most 7 "
        "days): rotation is stuck. When it expires, no agent can get an SVID signed.",
    ),
    # -- the SPIRE server and its datastore, from SPIRE's own server telemetry -----------------
    # Each names the cause that node-side pages (the round trip, agent syncs) would only show as
    # a symptom; those leave out a cluster where one of these holds (`server_side`).
    Alert(
        "SpireServerDown",
        "%(servers_down)s",
        "Every SPIRE server down",
        "Prometheus cannot scrape any of the {{ $value }} SPIRE servers of " + CLUSTER + ": no agent "
        "can sync, attest or get an SVID signed. Cached SVIDs are served until they expire.",
    ),
    Alert(
        "SpireServerInstanceDown",
        "up{%(server_sel)s} == 0 unless on (cluster) (%(servers_down)s)",
        "SPIRE server down",
        "Prometheus cannot scrape SPIRE server {{ $labels.instance }} in " + CLUSTER + ", while other "
        "servers there answer: agents whose connection it held reconnect to them, and the cluster has "
        "one server fewer of headroom.",
    ),
    Alert(
        "SpireServerDatastoreUnresponsive",
        "%(datastore_stuck)s",
        "SPIRE server datastore not answering",
        "SPIRE server {{ $labels.instance }} in " + CLUSTER + " is up but has completed no datastore call "
        "in the last %(window)s: its database, or the path to it, has stopped answering. Agent syncs "
        "and SVID signing wait on it until their deadlines.",
    ),
    Alert(
        "SpireServerDatastoreErrors",
        "%(datastore_errors)s",
        "SPIRE server datastore calls failing",
        "{{ $value | humanizePercentage }} of the datastore calls of SPIRE server {{ $labels.instance }} in "
        + CLUSTER
        + " failed in the last %(window)s: the database is down, refusing connections or "
        "failing queries. Agent syncs, attestation and SVID signing fail with it.",
    ),
    Alert(
        "SpireServerDatastoreSlow",
        "%(datastore_slow)s",
        "SPIRE server datastore slow",
        "The datastore operation {{ $labels.operation }} takes {{ $value | humanizeDuration }} at the "
        "99th percentile on the slowest SPIRE server of " + CLUSTER + " (over %(seconds)ss in the last "
        "%(window)s): the database or the network to it. Agents' calls that need the server (new "
        "SVIDs, syncs, the round trip) slow down with it; cached SVIDs are not affected.",
    ),
    Alert(
        "SpireServerSigningFailing",
        "%(signing_failing)s",
        "SPIRE server failing to sign SVIDs",
        "{{ $value | humanizePercentage }} of the X.509- and JWT-SVID signing calls to SPIRE server "
        "{{ $labels.instance }} in " + CLUSTER + " failed in the last %(window)s, with the datastore "
        "healthy: its CA, its KeyManager or its upstream authority. Agents cannot renew SVIDs there.",
    ),
    Alert(
        "SpireServerSigningSlow",
        "%(signing_slow)s",
        "SPIRE server slow to sign SVIDs",
        "{{ $labels.method }} takes {{ $value | humanizeDuration }} at the 99th percentile on the slowest "
        "SPIRE server of " + CLUSTER + " (over %(seconds)ss in the last %(window)s), with the datastore "
        "fast: the server's CPU, its KeyManager or its upstream authority.",
    ),
    Alert(
        "SpireServerNodeAttestationFailing",
        "%(attestation_failing)s",
        "SPIRE agents failing node attestation",
        "{{ $value | humanize }} node attestations failed with {{ $labels.status }} on the SPIRE servers "
        "of " + CLUSTER + " in the last %(window)s: new or restarted agents there get no identity. "
        "The server's log names each agent and why.",
    ),
    Alert(
        "SpireServerFederationFetchFailing",
        "%(federation_failing)s",
        "SPIRE server cannot fetch a federated bundle",
        "Every fetch of the federated bundle of {{ $labels.trust_domain_id }} by the SPIRE servers of "
        + CLUSTER
        + " failed in the last %(window)s: its bundle endpoint is down or unreachable, or "
        "its certificate no longer verifies. The bundle held goes stale.",
    ),
    Alert(
        "SpireServerEntryCacheBehind",
        "%(entry_cache_behind)s",
        "SPIRE server entry cache falling behind",
        "The registration entry cache of SPIRE server {{ $labels.instance }} in " + CLUSTER + " falls "
        "behind the datastore: a full reload took longer than its %(reload_seconds)ss interval, or "
        "more than %(skipped)s event IDs stayed skipped for %(window)s. Agents get new and changed "
        "entries late.",
    ),
    Alert(
        "SpireWorkloadAPIErrorBudgetBurnFast",
        "(%(burn_fast)s) unless on (cluster) (%(failing_share)s)",
        "Workload API error budget burning fast",
        "Workload API probes in " + CLUSTER + " fail at {{ $value | humanizePercentage }} "
        "over the last hours: at this rate the month's error budget of the %(objective)s objective is "
        "gone within days.",
    ),
    Alert(
        "SpireWorkloadAPIErrorBudgetBurnSlow",
        "(%(burn_slow)s) unless on (cluster) (%(failing_share)s)",
        "Workload API error budget burning",
        "Workload API probes in " + CLUSTER + " fail at {{ $value | humanizePercentage }} "
        "over the last days: more than the %(objective)s objective allows, so the budget runs out "
        "before the month does.",
    ),
    # -- one node --------------------------------------------------------------------------------
    Alert(
        "SpireAgentWorkloadAPIProbeFailing",
        # From the counters, not the latest result: attempts made and none OK in the window, so
        # one lucky or unlucky probe neither hides nor fakes an outage. A stopped agent, failed
        # workload attestation and a shared cause each have their own alert.
        "%(failing)s unless on (job, instance) (%(agent_down)s) unless on (job, instance, rpc) "
        "(%(attestation_failed)s > 0) unless on (cluster) (%(failing_share)s)",
        "SPIRE agent Workload API probe failing",
        'The {{ $labels.rpc }} probe on node %(node)s made {{ printf "%%.0f" $value }} attempts in the last '
        "%(window)s and none succeeded: workloads there cannot get this identity call answered.",
    ),
    Alert(
        "SpireAgentWorkloadAttestationFailing",
        # SPIRE v1.15.2+ answers UNAVAILABLE "workload attestation failed" when every workload
        # attestor fails (a kubelet it cannot reach, say): nothing on the node gets an identity,
        # yet the agent is up, so the runbook differs from ProbeFailing's.
        "%(attestation_failed)s > 0 unless %(succeeded)s > 0 unless on (cluster) (%(failing_share)s)",
        "SPIRE agent workload attestation failing",
        'The SPIRE agent on node %(node)s answered the {{ $labels.rpc }} probe "workload attestation failed" '
        "{{ $value | humanize }} times in the last %(window)s and never succeeded: every workload attestor "
        "fails, so no workload there gets an identity.",
    ),
    Alert(
        "SpireHealthExporterRateLimited",
        # The agent's experimental.ratelimit keys on the caller's selectors: the exporter's own
        # bucket, not the agent's health. Its other figures hold; this one is the exporter's.
        "%(rate_limited)s > 0",
        "The SPIRE agent rate-limits the exporter",
        "The SPIRE agent on node %(node)s rejected {{ $value | humanize }} {{ $labels.rpc }} probes in the last "
        '%(window)s with "rate limit exceeded" (experimental.ratelimit): the exporter\'s selector set is over '
        "its limit, so this probe no longer measures the agent. Raise the limit or the probe interval.",
    ),
    Alert(
        "SpireAgentWorkloadAPIDeadlineExceeded",
        # A share of the attempts, so that it means the same at any probe interval. An outage
        # (every attempt failing) is ProbeFailing's.
        "sum without (rpc, code, reason) (increase("
        'spire_health_probes_total{%(sel)s, code="DEADLINE_EXCEEDED", %(cached)s}[%(window)s]'
        ")) / sum without (rpc, code, reason) (increase(spire_health_probes_total{%(sel)s, %(cached)s}[%(window)s])) "
        "> %(ratio)s unless on (job, instance) (%(failing)s) unless on (job, instance) (%(no_entry)s) "
        "unless on (cluster) (%(failing_share)s)",
        "Workload API calls hit their deadline",
        "{{ $value | humanizePercentage }} of Workload API probes on node %(node)s ran into their deadline "
        "in the last %(window)s (context deadline exceeded).",
    ),
    Alert(
        "SpireAgentWorkloadAPIErrorRatioHigh",
        # Intermittent only: a ratio of 1 is an outage, which SpireAgentWorkloadAPIProbeFailing says.
        "%(error_ratio)s > %(threshold)s < 1 unless on (cluster) (%(failing_share)s)",
        "Workload API probes failing intermittently",
        "{{ $value | humanizePercentage }} of Workload API probes on node %(node)s failed over the last %(window)s.",
    ),
    Alert(
        "SpireAgentWorkloadAPILatencyHigh",
        # The share of successful probes slower than the threshold, not a p99: over a window's
        # few dozen probes a p99 is just their maximum, and one slow probe would flap it.
        "%(slow)s > %(share)s and on (job, instance, rpc) %(observed)s >= %(min_probes)s",
        "Workload API answers slow",
        "{{ $value | humanizePercentage }} of successful {{ $labels.rpc }} probes on node %(node)s took "
        "longer than %(le)s s over the last %(window)s.",
    ),
    Alert(
        "SpireAgentServerRoundTripFailing",
        # The opt-in round trip (agent -> server -> datastore): the server path's own signal.
        "%(round_trip_failing)s unless on (job, instance) (%(agent_down)s) "
        "unless on (cluster) (%(server_path_share)s) unless on (cluster) (%(not_syncing_share)s) "
        "unless on (cluster) (%(server_side)s)",
        "SPIRE agent cannot get a new SVID signed",
        'The round-trip probe on node %(node)s made {{ printf "%%.0f" $value }} attempts in the last '
        "%(window)s and none got a new JWT-SVID from the SPIRE server: this agent's path to the server, "
        "or the server itself.",
    ),
    Alert(
        "SpireX509SVIDNotRotated",
        "%(svid_left)s < %(remaining_fraction)s unless on (job, instance) (%(agent_down)s) "
        "unless on (cluster) (%(not_rotated_share)s)",
        "X.509-SVID not rotated on time",
        "The X.509-SVID {{ $labels.spiffe_id }} on node %(node)s has only {{ $value | humanizePercentage }} "
        "of its lifetime left; the agent renews at about half, so rotation is stuck.",
    ),
    Alert(
        "SpireSVIDExpiringSoon",
        # A share of the SVID's own lifetime, so that short TTLs don't alert all day.
        "(spire_health_svid_expiry_timestamp_seconds{%(sel)s} - time()) and ("
        "(spire_health_svid_expiry_timestamp_seconds{%(sel)s} - time()) / (spire_health_svid_expiry_timestamp_seconds{%(sel)s} - "
        "spire_health_svid_issued_timestamp_seconds{%(sel)s}) < %(remaining_fraction)s) "
        "unless on (cluster) (%(not_rotated_share)s)",
        "SVID about to expire",
        "The {{ $labels.kind }} SVID {{ $labels.spiffe_id }} on node %(node)s " + EXPIRY + ": "
        "less than {{ %(remaining_fraction)s | humanizePercentage }} of its lifetime was left and the agent "
        "served no new one.",
    ),
    Alert(
        "SpireAgentServerSyncFailing",
        "%(sync_failing)s unless on (cluster) (%(not_syncing_share)s) unless on (cluster) (%(server_side)s)",
        "SPIRE agent cannot sync with the server",
        "The SPIRE agent on node %(node)s failed {{ $value | humanize }} syncs with the SPIRE server in the "
        "last %(window)s and none succeeded: it serves cached SVIDs until they expire, and new "
        "workloads and rotations get nothing.",
    ),
    Alert(
        "SpireAgentNotSynced",
        # The agent's own word (its Debug API, opt-in): a healthy agent syncs every few seconds.
        "%(sync_age)s unless on (job, instance) (%(agent_down)s) unless on (cluster) (%(not_syncing_share)s)",
        "SPIRE agent has not synced with the server",
        "The SPIRE agent on node %(node)s last synced with the SPIRE server {{ $value | humanizeDuration }} "
        "ago (more than %(intervals)s of its %(sync_interval)ss sync intervals): it serves cached SVIDs until they "
        "expire, and new workloads and rotations get nothing.",
    ),
    Alert(
        "SpireAgentSVIDNotRenewed",
        "%(agent_svid_left)s < %(remaining_fraction)s unless on (job, instance) (%(agent_down)s) "
        "unless on (cluster) (%(not_syncing_share)s)",
        "SPIRE agent's own SVID not renewed on time",
        "The SPIRE agent on node %(node)s holds its own SVID with {{ $value | humanizePercentage }} of "
        "its lifetime left; the agent renews it at about half. When it expires the agent cannot talk "
        "to the server and must attest again.",
    ),
    Alert(
        "SpireAgentMemoryNearLimit",
        # The working set, as the kubelet counts it: page cache the kernel can drop is no pressure.
        "spire_health_agent_cgroup_memory_working_set_bytes{%(sel)s} / spire_health_agent_cgroup_memory_limit_bytes{%(sel)s} "
        "> %(fraction)s",
        "SPIRE agent memory near its cgroup limit",
        "The SPIRE agent on node %(node)s has a working set of {{ $value | humanizePercentage }} "
        "of its memory limit.",
    ),
    Alert(
        "SpireAgentMemoryPeakNearLimit",
        # The peak never falls while the process lives, so it fires only while the peak is new.
        "spire_health_agent_process_peak_resident_memory_bytes{%(sel)s} / spire_health_agent_cgroup_memory_limit_bytes{%(sel)s} "
        "> %(fraction)s and changes(spire_health_agent_process_peak_resident_memory_bytes{%(sel)s}[%(window)s]) > 0",
        "SPIRE agent memory peak came close to its limit",
        "The SPIRE agent on node %(node)s peaked at {{ $value | humanizePercentage }} of its memory limit "
        "in the last %(window)s (startup and attestation bursts); a larger burst will be OOM-killed.",
    ),
    Alert(
        "SpireAgentOOMKilled",
        # The cgroup's own count: on a host, and in Kubernetes on cgroup v2 when the exporter can
        # read the agent's cgroup. On cgroup v1 in Kubernetes it cannot fire (docs/deploy.md);
        # SpireAgentContainerOOMKilled covers that, and says it first when both can.
        "increase(spire_health_agent_cgroup_oom_kills_total{%(sel)s}[%(window)s]) > 0 "
        "unless on (cluster, %(node_label)s) (%(container_oom)s)",
        "SPIRE agent OOM-killed",
        "The OOM killer killed a process in the SPIRE agent's cgroup on node %(node)s "
        "{{ $value | humanize }} times in the last %(window)s.",
    ),
    Alert(
        "SpireAgentContainerOOMKilled",
        # kube-state-metrics, for Kubernetes: the kill goes with the old container's cgroup, so the
        # exporter's counter in the new one starts at 0. The restart bounds the alert in time.
        "%(container_oom)s",
        "SPIRE agent container OOM-killed",
        "The {{ $labels.container }} container of pod {{ $labels.pod }} on node {{ $labels.node }} was "
        "OOM-killed and restarted in the last %(window)s (kube-state-metrics): its memory limit is "
        "below its peak.",
    ),
    Alert(
        "SpireAgentRestarting",
        # The exporter sees a restart only if the new process lives until its next sample; an
        # agent OOM-killed within seconds of starting is seen by the kubelet alone (the incident
        # replay saw 2 of 5). So kube-state-metrics' restart count too, where there is one.
        "(%(restarts_seen)s) or ((%(restarts_ksm)s) unless on (cluster, node) (%(restarts_seen)s)) "
        "unless on (cluster, node) (%(container_oom)s)",
        "SPIRE agent restarting repeatedly",
        "The SPIRE agent on node %(node)s restarted {{ $value | humanize }} times in the last %(window)s.",
    ),
    Alert(
        "SpireAgentDown",
        # Missing most of the window, not missing throughout: a crash loop brings the process
        # back for seconds between kills, which would reset a `for:` on `== 0` every time.
        "avg_over_time(spire_health_agent_process_up{%(sel)s}[%(window)s]) <= %(up_share)s "
        "unless on (cluster) (%(failing_share)s)",
        "SPIRE agent down",
        "No spire-agent process ran on node %(node)s for most of the last %(window)s (a crash loop "
        "counts): nothing there can get an identity.",
    ),
    Alert(
        "SpireAgentNotServing",
        # A hung agent fails its probes too: ProbeFailing says so once.
        "spire_health_agent_grpc_health_serving{%(sel)s} == 0 unless on (job, instance) (%(agent_down)s) "
        "unless on (job, instance) (%(failing)s) unless on (cluster) (%(failing_share)s)",
        "SPIRE agent socket not serving",
        "The SPIRE agent socket on node %(node)s does not answer its gRPC health check with SERVING "
        "(the agent is hung, overloaded, still starting, or gone).",
    ),
    # The seed's third cause, from SPIRE's own telemetry (v1.13.3 to v1.15.3): its workload_api
    # "connection" counter and "connections" gauge count Workload API RPCs started and in
    # flight, each started RPC with a workload attestation of its own.
    Alert(
        "SpireAgentWorkloadAPIChurnHigh",
        "%(churn)s > %(min_rate)s and ((%(churn)s > %(factor)s * %(baseline)s) or (%(churn)s unless %(baseline)s))",
        "Workload API calls far above the node's baseline",
        "Workloads on node %(node)s start {{ $value | humanize }} Workload API calls a second, each "
        "attested anew: more than %(factor)s times the previous %(baseline_window)s. A client is "
        "likely creating a source or channel per request.",
    ),
    Alert(
        "SpireAgentWorkloadAPIStreamsGrowing",
        "%(growing_agent)s or (%(growing_socket)s unless on (cluster, %(node_label)s) %(agent_connections)s)",
        "Open Workload API streams only grow",
        "Open Workload API streams or connections on node %(node)s grew by at least %(growth)s "
        "over %(window)s to {{ $value | humanize }} and never fell: a client is likely leaking "
        "sources (opened and never closed).",
    ),
    Alert(
        "SpireHealthExporterNoRegistrationEntry",
        '%(denied)s > 0 and ignoring (code) spire_health_probe_success{%(sel)s, rpc="fetch_x509_svid"} == 0',
        "The exporter has no registration entry",
        'The SPIRE agent on node %(node)s answers the exporter "no identity issued" (PERMISSION_DENIED): '
        "its registration entry is missing or its selectors do not match.",
    ),
    Alert(
        "SpireHealthExporterProbesStuck",
        # The exporter serves its last values while a probe loop hangs; the attempt time shows it.
        "time() - spire_health_probe_last_attempt_timestamp_seconds{%(sel)s} > %(seconds)s",
        "spire-health-exporter probe loop stuck",
        "The {{ $labels.rpc }} probe on node %(node)s last finished {{ $value | humanizeDuration }} ago, "
        "longer than any probe's interval and deadline: its loop is stuck and its metrics are stale.",
    ),
    Alert(
        "SpireHealthExporterDown",
        "up{%(sel)s} == 0",
        "spire-health-exporter down",
        "Prometheus cannot scrape spire-health-exporter on node %(node)s ({{ $labels.instance }}).",
    ),
    Alert(
        "SpireHealthExporterMissingOnNode",
        # absent() sees only every target gone; kube-state-metrics knows the nodes with an agent.
        "(count by (cluster, node) (kube_pod_info{%(ksm_sel)s, %(agent_pod_sel)s}) unless on (cluster, node) "
        "count by (cluster, %(node_label)s) (up{%(sel)s})) and on (cluster) count by (cluster) (up{%(sel)s}) > 0",
        "spire-health-exporter missing on a node",
        "Node {{ $labels.node }} runs a SPIRE agent pod but Prometheus has no spire-health-exporter target "
        "there, while other nodes have one: the DaemonSet does not select or tolerate the node, or its pod "
        "is not running.",
    ),
    # -- SPIRE's own telemetry, which the alerts above it read, missing ------------------------
    Alert(
        "SpireAgentTelemetryMissing",
        # Nodes the exporter watches whose agent's telemetry is not scraped, or not placed on its
        # node (no node label and no kube_pod_info for its pod). A stopped agent is AgentDown's.
        "count by (cluster) (group by (cluster, %(node_label)s) (up{%(sel)s} == 1) "
        "unless on (cluster, %(node_label)s) (%(agent_node)s and on (cluster, job, instance) up{%(agent_sel)s} == 1) "
        "unless on (cluster, %(node_label)s) (%(agent_down)s))",
        "SPIRE agent telemetry missing",
        "{{ $value }} nodes in " + CLUSTER + " run the exporter, but Prometheus scrapes no SPIRE agent "
        "telemetry it can place on them: the alerts and panels over SPIRE's own agent series "
        "(server sync, Workload API churn and streams) are blind there.",
    ),
    Alert(
        "SpireServerTelemetryMissing",
        "count by (cluster) (up{%(sel)s} == 1) "
        "unless on (cluster) count by (cluster) (spire_server_uptime_in_ms{%(server_sel)s}) "
        "unless on (cluster) (%(servers_down)s)",
        "SPIRE server telemetry missing",
        "Prometheus has no SPIRE server telemetry in " + CLUSTER + ", where {{ $value }} nodes run the "
        "exporter: SpireServerCAExpiringSoon and the server panels are blind.",
    ),
    Alert(
        "SpireHealthExporterAbsent",
        "absent(up{%(sel)s})",
        "spire-health-exporter absent",
        "Prometheus has no spire-health-exporter target at all: SPIRE agents are not being watched.",
    ),
]


def burn(pairs: tuple[tuple[str, str, float], ...], objective: str) -> str:
    """Both windows over the burn rate: the long one says it matters, the short one that it's now."""
    record = "cluster:spire_health_probe_errors:ratio_rate%s"
    return " or ".join(
        f"({record % long} > ({rate} * (1 - {objective})) and {record % short} > ({rate} * (1 - {objective})))"
        for long, short, rate in pairs
    )


def share(count: str, nodes: str, fraction: str, min_nodes: str) -> str:
    """A cluster's share of nodes, from recorded counts per cluster, when over `fraction` and
    at least `min_nodes`: one series per cluster, whatever the number of nodes."""
    return f"({count} / {nodes} > {fraction}) and on (cluster) ({count} >= {min_nodes})"
