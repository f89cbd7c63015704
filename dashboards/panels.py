"""The dashboards' panels, as grafana-foundation-sdk builders, and the queries behind them.

Selectors: the exporter's series carry cluster, job and node (SEL); SPIRE's own agent telemetry
comes from its own scrape job, whose targets may carry no node (SPIRE's hardened chart's
PodMonitor): it is selected by cluster and by the hidden `$agent` variable, the agent targets the
rules' instance:spire_agent_node:info places on the chosen nodes (AGENT_SEL), and gets its node
from that recording (on_agent_node). The server's by cluster (SERVER_SEL). The recording rules of
alerts/ carry cluster, and node where they are per node.

The fleet dashboard reads only recording rules: one series per cluster for its stats and
trends, and for its worst-node tables the per-node recordings at this moment. At 5,000 nodes a
raw per-node query over days would load more samples than Prometheus allows one query
(docs/benchmarks.md, the fleet section). The SLO objective is the dashboard variable
`$slo_objective`, which the chart sets from prometheusRule.sloObjective.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as pm

from alerts import generate, server

ALERTS = yaml.safe_load((Path(__file__).resolve().parent.parent / "alerts" / "config.yml").read_text())
RUNBOOKS: str = ALERTS["runbook_url"]
OBJECTIVE: float = ALERTS["slo_objective"]
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
SEL = 'cluster=~"$cluster", job=~"$job", node=~"$node"'
AGENT_SEL = 'cluster=~"$cluster", instance=~"$agent"'
AGENT_NODE = generate.AGENT_NODE  # the rules' recording that places agent targets on nodes
SERVER_SEL = 'cluster=~"$cluster"'
RULE_SEL = 'cluster=~"$cluster", node=~"$node"'
CACHED = 'rpc!~"fetch_jwt_svid_roundtrip|debug_get_info"'
OK = ', code="OK"'
SLO = "$slo_objective"
NODE_DASHBOARD = "/d/spire-health-node/spire-agent-node-drill-down"
PROBES = "spire_health_probes_total"
BUCKETS = "spire_health_probe_duration_seconds_bucket"

Panel = timeseries.Panel | stat.Panel | table.Panel | bargauge.Panel


def node_link() -> Any:
    """A worst-node table's link to the node dashboard, for the row's cluster and node."""
    return (
        db.DashboardLink("Open the node")
        .type(dm.DashboardLinkType.LINK)
        .url(
            NODE_DASHBOARD
            + "?var-cluster=${__data.fields.cluster}&var-node=${__data.fields.node}&${__url_time_range}"
        )
    )


Rows = list[tuple[str, list[Panel]]]
Thresholds = list[tuple[str, float | None]]


def panel(
    kind: type[Panel],
    title: str,
    queries: list[tuple[str, str]],
    unit: str,
    description: str,
    runbook: str | None = None,
    w: int = 12,
    h: int = 8,
    thresholds: Thresholds | None = None,
) -> Any:
    """One panel: queries as (expr, legend); stat, table and bar gauge panels ask for one instant
    value, tables as a table."""
    instant = kind is not timeseries.Panel
    builder: Any = (
        kind()
        .title(title)
        .description(description)
        .datasource(DS)
        .unit(unit)
        .span(w)
        .height(h)
        .thresholds(
            db.ThresholdsConfig()
            .mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(value=v, color=c) for c, v in (thresholds or [("green", None)])])
        )
    )
    for i, (expr, legend) in enumerate(queries):
        query = prom.Dataquery().expr(expr).legend_format(legend).ref_id(chr(ord("A") + i))
        if kind is table.Panel:
            query = query.format(pm.PromQueryFormat.TABLE)
            builder = builder.data_links([node_link()])
        builder = builder.with_target(query.instant() if instant else query.range())
    if runbook:
        builder = builder.links(
            [
                db.DashboardLink("Runbook")
                .type(dm.DashboardLinkType.LINK)
                .url(f"{RUNBOOKS}#{runbook.lower()}")
                .target_blank(True)
            ]
        )
    if kind is timeseries.Panel:
        builder = builder.legend(
            cb.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
    elif kind is table.Panel:
        builder = builder.transformations(
            [dm.DataTransformerConfig(id_val="organize", options={"excludeByName": {"Time": True}})]
        ).sort_by([cb.TableSortByFieldState().display_name("Value").desc(True)])
    elif kind is stat.Panel:
        builder = builder.reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"])).color_mode(
            cm.BigValueColorMode.BACKGROUND
        )
    elif kind is bargauge.Panel:
        builder = (
            builder.orientation(cm.VizOrientation.HORIZONTAL)
            .display_mode(cm.BarGaugeDisplayMode.GRADIENT)
            .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]))
        )
    return builder


def on_agent_node(expr: str) -> str:
    """SPIRE agent series (AGENT_SEL) with the node their agent runs on; only agent targets match."""
    return f'({expr}) * on (cluster, job, instance) group_left (node) {AGENT_NODE}{{cluster=~"$cluster", node=~"$node"}}'


def rate(metric: str, sel: str, window: str = "$__rate_interval") -> str:
    return f"rate({metric}{{{sel}}}[{window}])"


def success_ratio(by: str, window: str = "$__rate_interval", fn: str = "rate") -> str:
    ok = f"{fn}({PROBES}{{{SEL}, {CACHED}{OK}}}[{window}])"
    every = f"{fn}({PROBES}{{{SEL}, {CACHED}}}[{window}])"
    return f"sum by ({by}) ({ok}) / sum by ({by}) ({every})"


def quantile(q: float, by: str, window: str = "$__rate_interval") -> str:
    return f"histogram_quantile({q}, sum by (le, {by}) ({rate(BUCKETS, SEL + ', ' + CACHED, window)}))"


def svid_lifetime_left(by: str) -> str:
    expiry = f'spire_health_svid_expiry_timestamp_seconds{{{SEL}, kind="x509"}}'
    issued = f'spire_health_svid_issued_timestamp_seconds{{{SEL}, kind="x509"}}'
    return f"min by ({by}) (({expiry} - time()) / ({expiry} - {issued}))"


def memory_share(by: str) -> str:
    return (
        f"max by ({by}) (spire_health_agent_cgroup_memory_working_set_bytes{{{SEL}}} "
        f"/ spire_health_agent_cgroup_memory_limit_bytes{{{SEL}}})"
    )


LIFETIME_STEPS: Thresholds = [("red", None), ("orange", 0.4), ("green", 0.45)]
FAILING_STEPS: Thresholds = [("green", None), ("red", 1)]


# -- the fleet ---------------------------------------------------------------------------------


def fleet_rows() -> Rows:
    def per_cluster(record: str, fn: str = "sum") -> str:
        return f"{fn}({record}{{{SERVER_SEL}}})"

    summary = [
        panel(
            stat.Panel,
            "Nodes watched",
            [(per_cluster("cluster:spire_health_nodes:count"), "")],
            "short",
            "Nodes with a spire-health-exporter target in the selected clusters.",
            "SpireHealthExporterMissingOnNode",
            w=4,
            h=4,
        ),
        panel(
            stat.Panel,
            "Nodes failing",
            [(per_cluster("cluster:spire_health_nodes_failing:count") + " or vector(0)", "")],
            "short",
            "Nodes where a Workload API call failed on every probe of the last minutes (a missing "
            "registration entry left out); SpireAgentsFailing pages when a cluster's share is too high.",
            "SpireAgentsFailing",
            w=4,
            h=4,
            thresholds=FAILING_STEPS,
        ),
        panel(
            stat.Panel,
            "Agents down",
            [(per_cluster("cluster:spire_health_agents_down:count") + " or vector(0)", "")],
            "short",
            "Nodes where no spire-agent process runs.",
            "SpireAgentDown",
            w=4,
            h=4,
            thresholds=FAILING_STEPS,
        ),
        panel(
            stat.Panel,
            "Lowest SVID lifetime left",
            [(per_cluster("cluster:spire_health_x509_svid_lifetime_left:min", "min"), "")],
            "percentunit",
            "The smallest share of its lifetime any node's X.509-SVID still has. The agent renews at about "
            "half; below 40 % rotation is stuck somewhere.",
            "SpireSVIDsNotRotated",
            w=4,
            h=4,
            thresholds=LIFETIME_STEPS,
        ),
        panel(
            stat.Panel,
            "CA successor due",
            [
                (
                    per_cluster(
                        "cluster_trust_domain:spire_health_trust_bundle_successor_due:min_ratio", "min"
                    ),
                    "",
                )
            ],
            "percentunit",
            "The newest trust bundle CA's time left against the time at which SPIRE publishes its successor "
            "(half its lifetime, at most 30 days), in the trust domain where it is least: above 100 % the "
            "successor is not due yet; a healthy rotation never lets it fall below 100 % for long.",
            "SpireTrustBundleCAExpiringSoon",
            w=4,
            h=4,
            thresholds=[("red", None), ("orange", 0.8), ("green", 1)],
        ),
        panel(
            stat.Panel,
            "SLO budget left (30 days)",
            [
                (
                    f"min(1 - avg_over_time(cluster:spire_health_probe_errors:ratio_rate1h{{{SERVER_SEL}}}[30d]) "
                    f"/ (1 - {SLO}))",
                    "",
                )
            ],
            "percentunit",
            "Share of the 30-day error budget of the SLO objective left, in the worst cluster: one minus the "
            "average hourly failed share of cached probes over the budget. Below 0: spent.",
            "SpireWorkloadAPIErrorBudgetBurnSlow",
            w=4,
            h=4,
            thresholds=[("red", None), ("orange", 0), ("green", 0.25)],
        ),
    ]
    worst = [
        panel(
            table.Panel,
            "Failing now",
            [(f"topk(10, node_rpc:spire_health_probes_failed:increase2m{{{RULE_SEL}}})", "")],
            "short",
            "Nodes and RPCs whose every probe failed in the last 2 minutes, with the number of attempts. "
            "Click a row for the node.",
            "SpireAgentWorkloadAPIProbeFailing",
            w=8,
        ),
        panel(
            table.Panel,
            "Highest error ratio (15 m)",
            [(f"topk(10, node:spire_health_probe_errors:ratio_rate15m{{{RULE_SEL}}})", "")],
            "percentunit",
            "The ten nodes whose cached Workload API probes failed most over the last 15 minutes (a missing "
            "registration entry left out).",
            "SpireAgentWorkloadAPIErrorRatioHigh",
            w=8,
        ),
        panel(
            table.Panel,
            "Most slow answers (10 m)",
            [(f"topk(10, node_rpc:spire_health_probe_slow:ratio_rate10m{{{RULE_SEL}}})", "")],
            "percentunit",
            "The ten node and RPC pairs with the largest share of successful probes slower than 0.5 s over "
            "the last 10 minutes.",
            "SpireAgentWorkloadAPILatencyHigh",
            w=8,
        ),
        panel(
            table.Panel,
            "Highest memory against the limit",
            [(f"topk(10, node:spire_health_agent_memory_working_set:ratio{{{RULE_SEL}}})", "")],
            "percentunit",
            "The ten agents whose working set is closest to their cgroup's memory limit now.",
            "SpireAgentMemoryNearLimit",
            w=8,
        ),
        panel(
            table.Panel,
            "Least SVID lifetime left",
            [(f"bottomk(10, node:spire_health_x509_svid_lifetime_left:ratio{{{RULE_SEL}}})", "")],
            "percentunit",
            "The ten nodes whose X.509-SVID has the smallest share of its lifetime left.",
            "SpireX509SVIDNotRotated",
            w=8,
        ),
        panel(
            table.Panel,
            "Most agent restarts (1 h)",
            [(f"topk(10, node:spire_health_agent_restarts:changes1h{{{RULE_SEL}}})", "")],
            "short",
            "The ten nodes whose agent restarted most often in the last hour.",
            "SpireAgentRestarting",
            w=8,
        ),
    ]
    trends = [
        panel(
            timeseries.Panel,
            "Error ratio by cluster",
            [(f"cluster:spire_health_probe_errors:ratio_rate5m{{{SERVER_SEL}}}", "{{cluster}}")],
            "percentunit",
            "Share of cached Workload API probes that failed over 5 minutes, in each cluster (a missing "
            "registration entry left out): the SLO's error ratio.",
            "SpireWorkloadAPIErrorBudgetBurnFast",
            w=8,
            thresholds=[("green", None), ("red", 0.001)],
        ),
        panel(
            timeseries.Panel,
            "Error budget burn rate by cluster",
            [
                (
                    f"cluster:spire_health_probe_errors:ratio_rate5m{{{SERVER_SEL}}} / (1 - {SLO})",
                    "{{cluster}} 5m",
                ),
                (
                    f"cluster:spire_health_probe_errors:ratio_rate1h{{{SERVER_SEL}}} / (1 - {SLO})",
                    "{{cluster}} 1h",
                ),
            ],
            "short",
            "How many times faster than the objective allows each cluster spends its error budget; the fast "
            "burn alert pages at 14.4 over both 1 h and 5 m.",
            "SpireWorkloadAPIErrorBudgetBurnFast",
            w=8,
            thresholds=[("green", None), ("orange", 1), ("red", 14.4)],
        ),
        panel(
            timeseries.Panel,
            "Failures by code",
            [
                (
                    f"sum by (code, reason) (cluster_rpc_code:spire_health_probes_failed:rate5m{{{SERVER_SEL}, {CACHED}}})",
                    "{{code}} {{reason}}",
                )
            ],
            "ops",
            "Failed probes per second over all selected clusters, by gRPC code (INVALID_RESPONSE: an answer a "
            "workload could not use) and, for UNAVAILABLE, its reason (agent_unreachable, "
            "workload_attestation_failed, rate_limited, ...).",
            "SpireAgentsFailing",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "Latency by RPC (p50, p95, p99)",
            [
                (
                    f"histogram_quantile({q}, sum by (le, rpc) "
                    f"(cluster_rpc_le:spire_health_probe_duration_seconds_bucket:rate5m{{{SERVER_SEL}}}))",
                    f"{{{{rpc}}}} p{int(q * 100)}",
                )
                for q in (0.5, 0.95, 0.99)
            ],
            "s",
            "Time to the first answer of successful probes over all selected nodes: thousands of probes a "
            "minute, where a p99 is sound.",
            "SpireAgentWorkloadAPILatencyHigh",
            w=24,
        ),
    ]
    return [
        ("Summary", summary),
        ("Worst nodes now", worst),
        ("Fleet trends", trends),
        ("SPIRE's own telemetry", spire_panels("cluster", fleet=True)),
    ]


def spire_panels(by: str, fleet: bool) -> list[Panel]:
    """SPIRE's own agent (:9988) and server telemetry, by names every release in docs/compatibility.md emits."""
    legend = "{{%s}}" % by
    uptime: Panel
    if fleet:
        uptime = panel(
            table.Panel,
            "Agents started most recently",
            [
                (
                    f"bottomk(10, max by (cluster, node) ({on_agent_node(f'spire_agent_uptime_in_ms{{{AGENT_SEL}}}')})) / 1000",
                    "",
                )
            ],
            "s",
            "The ten agents with the shortest uptime, from SPIRE's spire_agent_uptime_in_ms.",
            "SpireAgentRestarting",
            w=6,
        )
    else:
        uptime = panel(
            timeseries.Panel,
            "Agent uptime",
            [
                (
                    f"max by (node) ({on_agent_node(f'spire_agent_uptime_in_ms{{{AGENT_SEL}}}')}) / 1000",
                    "uptime",
                )
            ],
            "s",
            "Time since the agent started, from SPIRE's spire_agent_uptime_in_ms.",
            "SpireAgentRestarting",
            w=6,
        )
    # The fleet reads per-cluster recordings of the agents' telemetry, the node its raw series.
    if fleet:
        syncs = f"cluster_status:spire_agent_manager_sync_fetch_entries_updates:rate5m{{{SERVER_SEL}}}"
        cached = f"cluster:spire_agent_lru_cache_svid_map_size:sum{{{SERVER_SEL}}}"
        expiring = f"cluster:spire_agent_cache_manager_expiring_svids_sum:rate5m{{{SERVER_SEL}}}"
    else:
        syncs = f"sum by ({by}, status) ({on_agent_node(rate('spire_agent_manager_sync_fetch_entries_updates', AGENT_SEL))})"
        cached = f"sum by ({by}) ({on_agent_node(f'spire_agent_lru_cache_svid_map_size{{{AGENT_SEL}}}')})"
        expiring = f"sum by ({by}) ({on_agent_node(rate('spire_agent_cache_manager_expiring_svids_sum', AGENT_SEL))})"
    return [
        panel(
            timeseries.Panel,
            "Agent syncs with the server",
            [(syncs, legend + " {{status}}")],
            "ops",
            "The agents' entry syncs with the SPIRE server per second, by status (every 5 s per agent when "
            "healthy). Anything but OK without OK is the agent cut off from the server.",
            "SpireAgentServerSyncFailing",
            w=6,
        ),
        panel(
            timeseries.Panel,
            "SVIDs in agent caches",
            [(cached, legend + " cached"), (expiring, legend + " found expiring/s")],
            "short",
            "SVIDs the agents hold for workloads, and how many each sync finds due for renewal (per second). "
            "Expiring SVIDs that stay high mean renewals are not getting through.",
            "SpireSVIDExpiringSoon",
            w=6,
        ),
        uptime,
        panel(
            stat.Panel,
            "Server CA time left",
            [(f"min(spire_server_manager_x509_ca_rotate_expiration{{{SERVER_SEL}}}) - time()", "")],
            "s",
            "Time until the SPIRE server's active X.509 CA expires, from its own telemetry. SPIRE activates "
            "the next CA at half the lifetime.",
            "SpireServerCAExpiringSoon",
            w=3,
        ),
        panel(
            timeseries.Panel,
            "Server rate limiter wait",
            [
                (
                    f"sum(rate(spire_server_rateLimit_{call}_elapsed_time_sum{{{SERVER_SEL}}}[$__rate_interval])) / "
                    f"sum(rate(spire_server_rateLimit_{call}_elapsed_time_count{{{SERVER_SEL}}}[$__rate_interval]))",
                    legend_,
                )
                # The two calls SPIRE rate-limits per agent (v1.13.3 to v1.15.3), each one series:
                # a regular expression over metric names would collide once rate() drops them.
                for call, legend_ in (
                    ("agent_v1_agent_attest_agent", "agent attestation"),
                    ("svid_v1_svid_batch_new_x509svid", "X.509-SVID signing"),
                )
            ],
            "ms",
            "Mean time the server's calls wait in its rate limiters (SPIRE's spire_server_rateLimit_* timers, "
            "in ms). Rising waits mean agents are being held back.",
            "SpireAgentServerSyncFailing",
            w=3,
        ),
    ]


# -- one node ------------------------------------------------------------------------------------


def node_rows() -> Rows:
    workload_api = [
        panel(
            stat.Panel,
            "Latest probe results",
            [(f"min by (rpc) (spire_health_probe_success{{{SEL}}})", "{{rpc}}")],
            "bool_yes_no",
            "Whether the latest probe of each RPC on this node succeeded.",
            "SpireAgentWorkloadAPIProbeFailing",
            w=24,
            h=4,
            thresholds=[("red", None), ("green", 1)],
        ),
        panel(
            timeseries.Panel,
            "Success ratio by RPC",
            [(success_ratio("rpc"), "{{rpc}}")],
            "percentunit",
            "Share of each RPC's probes that succeeded.",
            "SpireAgentWorkloadAPIErrorRatioHigh",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "Error ratio against the SLO",
            [
                (f"node:spire_health_probe_errors:ratio_rate15m{{{RULE_SEL}}}", "15m"),
                (f"(1 - {SLO}) + 0 * node:spire_health_probe_errors:ratio_rate15m{{{RULE_SEL}}}", "budget"),
            ],
            "percentunit",
            "This node's failed share of cached probes over 15 minutes (a missing registration entry and "
            "validation without a token left out), against the SLO objective's error budget.",
            "SpireWorkloadAPIErrorBudgetBurnFast",
            w=8,
            thresholds=[("green", None), ("red", round(1 - OBJECTIVE, 6))],
        ),
        panel(
            timeseries.Panel,
            "Failures by RPC and code",
            [
                (
                    f'sum by (rpc, code, reason) (rate({PROBES}{{{SEL}, code!="OK"}}[$__rate_interval]))',
                    "{{rpc}} {{code}} {{reason}}",
                )
            ],
            "ops",
            "Failed probes per second by RPC and gRPC code (with UNAVAILABLE's reason), including the server "
            "round trip when enabled.",
            "SpireAgentWorkloadAPIProbeFailing",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "Latency p99 by RPC",
            [(f"histogram_quantile(0.99, sum by (le, rpc) ({rate(BUCKETS, SEL)}))", "{{rpc}}")],
            "s",
            "p99 time to the first answer per RPC; fetch_jwt_svid_roundtrip, when enabled, is the agent -> "
            "server -> datastore path.",
            "SpireAgentWorkloadAPILatencyHigh",
        ),
        panel(
            timeseries.Panel,
            "Latest result by RPC",
            [(f"max by (rpc) (spire_health_probe_success{{{SEL}}})", "{{rpc}}")],
            "short",
            "1 while each RPC's latest probe succeeded, 0 while it failed: the line drops for as long as "
            "the RPC fails.",
            "SpireAgentWorkloadAPIProbeFailing",
        ),
    ]
    return [
        ("Workload API", workload_api),
        ("Why is the Workload API slow?", why_slow_panels()),
        ("SPIRE agent", agent_panels()),
        ("SPIRE's own telemetry", spire_panels("node", fleet=False)),
        ("The agent's own view (Debug API)", debug_panels()),
        ("Identities", identity_panels()),
    ]


def debug_panels() -> list[Panel]:
    """From the opt-in debug_get_info probe; empty where no admin socket is configured."""
    expiry = f"max(spire_health_agent_svid_expiry_timestamp_seconds{{{SEL}}})"
    return [
        panel(
            timeseries.Panel,
            "Time since the agent's last sync",
            [
                (
                    f"time() - max(spire_health_agent_last_sync_success_timestamp_seconds{{{SEL}}})",
                    "since sync",
                )
            ],
            "s",
            "How long ago the agent last synced with the SPIRE server, in its own words (GetInfo on the "
            "admin socket). A healthy agent syncs every few seconds; empty when the exporter has no admin "
            "socket configured.",
            "SpireAgentNotSynced",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "Agent SVID lifetime left",
            [
                (
                    f"({expiry} - time()) / max(spire_health_agent_svid_lifetime_seconds{{{SEL}}})",
                    "agent SVID",
                )
            ],
            "percentunit",
            "Share of its lifetime the agent's own SVID still has. The agent renews it at about 50 %; below "
            "40 % renewal is stuck and, at 0, the agent must attest again.",
            "SpireAgentSVIDNotRenewed",
            w=8,
            thresholds=LIFETIME_STEPS,
        ),
        panel(
            timeseries.Panel,
            "SVIDs in the agent's caches",
            [(f"max by (kind) (spire_health_agent_cached_svids{{{SEL}}})", "{{kind}}")],
            "short",
            "X.509-SVIDs, JWT-SVIDs and SVIDStore X.509-SVIDs the agent holds in memory. A sudden drop to 0 "
            "with workloads still running is an agent that lost its entries.",
            w=8,
        ),
    ]


def why_slow_panels() -> list[Panel]:
    """The seed's three causes side by side: a starved agent, clients that churn or leak
    sources, and a slow server behind the agent."""
    return [
        panel(
            timeseries.Panel,
            "Agent memory against its limit",
            [
                (
                    f"max by (node) (spire_health_agent_cgroup_memory_working_set_bytes{{{SEL}}})",
                    "working set",
                ),
                (
                    f"max by (node) (spire_health_agent_process_peak_resident_memory_bytes{{{SEL}}})",
                    "peak RSS",
                ),
                (f"max by (node) (spire_health_agent_cgroup_memory_limit_bytes{{{SEL}}})", "limit"),
            ],
            "bytes",
            "Cause 1, a starved agent: a working set close to the limit means reclaim, throttling and OOM kills.",
            "SpireAgentMemoryNearLimit",
            w=6,
        ),
        panel(
            timeseries.Panel,
            "Workload API calls started per second",
            [
                (
                    f"sum by (node) ({on_agent_node(rate('spire_agent_workload_api_connection', AGENT_SEL))})",
                    "calls started/s",
                )
            ],
            "ops",
            "Cause 2, clients that build a source or channel per request: every call started is attested anew "
            "(SPIRE's spire_agent_workload_api_connection, which counts RPCs). Needs the agent's telemetry scraped.",
            "SpireAgentWorkloadAPIChurnHigh",
            w=6,
        ),
        panel(
            timeseries.Panel,
            "Open Workload API streams",
            [
                (
                    f"sum by (node) ({on_agent_node(f'spire_agent_workload_api_connections{{{AGENT_SEL}}}')})",
                    "in-flight RPCs (SPIRE)",
                ),
                (
                    f"max by (node) (spire_health_agent_socket_connections{{{SEL}}})",
                    "open connections (exporter)",
                ),
            ],
            "short",
            "Cause 2, leaked sources: streams and connections that only grow. One per well-used source is normal.",
            "SpireAgentWorkloadAPIStreamsGrowing",
            w=6,
        ),
        panel(
            timeseries.Panel,
            "Latency p99: cached, round trip, and the server behind it",
            [
                (
                    f"histogram_quantile(0.99, sum by (le, rpc) (rate({BUCKETS}"
                    f'{{{SEL}, rpc=~"fetch_x509_svid|fetch_jwt_svid_roundtrip"}}[$__rate_interval])))',
                    "{{rpc}}",
                ),
                (f"max({server.DATASTORE_P99}{{{SERVER_SEL}}})", "server datastore, slowest operation"),
                (
                    f'max({server.RPC_P99}{{{SERVER_SEL}, method="svid_v1_svid_new_jwtsvid"}})',
                    "server NewJWTSVID",
                ),
            ],
            "s",
            "Cause 3, a slow server or datastore: the round trip (when enabled) rises while the cached fetch "
            "stays fast. With the servers' datastore or signing 99th percentiles (SPIRE's server telemetry, "
            "the slowest server's) rising too, the server's side is the cause; with them flat, this node's "
            "path to the server. Both probes rising together points back at the agent.",
            "SpireServerDatastoreSlow",
            w=6,
        ),
    ]


def agent_panels() -> list[Panel]:
    return [
        panel(
            timeseries.Panel,
            "Agent memory",
            [
                (f"max by (node) (spire_health_agent_process_resident_memory_bytes{{{SEL}}})", "RSS"),
                (
                    f"max by (node) (spire_health_agent_process_peak_resident_memory_bytes{{{SEL}}})",
                    "peak RSS",
                ),
                (f"max by (node) (spire_health_agent_cgroup_memory_usage_bytes{{{SEL}}})", "cgroup usage"),
                (
                    f"max by (node) (spire_health_agent_cgroup_memory_working_set_bytes{{{SEL}}})",
                    "cgroup working set",
                ),
                (f"max by (node) (spire_health_agent_cgroup_memory_limit_bytes{{{SEL}}})", "cgroup limit"),
            ],
            "bytes",
            "The agent's resident memory, its peak since start (VmHWM, which keeps the startup spike), its "
            "cgroup's usage (page cache included), working set (without inactive file cache, what the alerts "
            "and the kubelet read) and limit.",
            "SpireAgentMemoryNearLimit",
            w=12,
        ),
        panel(
            bargauge.Panel,
            "Agent memory, % of limit",
            [
                (memory_share("node"), "working set"),
                (
                    f"max by (node) (spire_health_agent_process_peak_resident_memory_bytes{{{SEL}}} "
                    f"/ spire_health_agent_cgroup_memory_limit_bytes{{{SEL}}})",
                    "peak",
                ),
            ],
            "percentunit",
            "Working set and peak RSS as a share of the limit. An agent without a limit shows nothing.",
            "SpireAgentMemoryNearLimit",
            w=12,
            thresholds=[("green", None), ("orange", 0.8), ("red", 0.9)],
        ),
        panel(
            timeseries.Panel,
            "OOM kills and restarts",
            [
                (
                    f"sum by (node) (increase(spire_health_agent_cgroup_oom_kills_total{{{SEL}}}[$__rate_interval]))",
                    "OOM kills",
                ),
                (
                    f"sum by (node) (changes(spire_health_agent_process_start_time_seconds{{{SEL}}}[$__rate_interval]))",
                    "restarts",
                ),
            ],
            "short",
            "OOM kills in the agent's cgroup and agent process restarts.",
            "SpireAgentOOMKilled",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "Agent up and serving",
            [
                (f"min by (node) (spire_health_agent_process_up{{{SEL}}})", "process"),
                (f"min by (node) (spire_health_agent_grpc_health_serving{{{SEL}}})", "gRPC health"),
            ],
            "bool_yes_no",
            "Whether the agent process runs and its socket's grpc.health.v1 Check says SERVING.",
            "SpireAgentDown",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "Agent CPU",
            [(f"sum by (node) ({rate('spire_health_agent_process_cpu_seconds_total', SEL)})", "CPU")],
            "percentunit",
            "CPU the agent process uses, as a share of one core. Compare with the agent's CPU limit: "
            "throttling makes attestation slow.",
            "SpireAgentWorkloadAPIDeadlineExceeded",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "Agent threads and open files",
            [
                (f"max by (node) (spire_health_agent_process_threads{{{SEL}}})", "threads"),
                # The exporter reads the agent's FDs only as the agent's user or with CAP_SYS_PTRACE,
                # which the chart doesn't grant; SPIRE's own telemetry has them too.
                (
                    f"max by (node) (spire_health_agent_process_open_fds{{{SEL}}}) or "
                    f"max by (node) ({on_agent_node(f'process_open_fds{{{AGENT_SEL}}}')})",
                    "open FDs",
                ),
            ],
            "short",
            "OS threads and open file descriptors of the agent; steady growth points at a leak. The file "
            "descriptors come from the exporter where it may read them, else from SPIRE's own telemetry.",
            None,
        ),
        panel(
            timeseries.Panel,
            "Agent HTTP health",
            [(f"min by (check) (spire_health_agent_http_health_status{{{SEL}}})", "{{check}}")],
            "bool_yes_no",
            "The agent's own /live and /ready answers (refreshed by SPIRE only every ~60 s); only when the "
            "exporter is given the health URL.",
            "SpireAgentDown",
        ),
    ]


def identity_panels() -> list[Panel]:
    return [
        panel(
            timeseries.Panel,
            "Time left on SVIDs",
            [
                (
                    f"min by (spiffe_id, kind) (spire_health_svid_expiry_timestamp_seconds{{{SEL}}} - time())",
                    "{{spiffe_id}} {{kind}}",
                )
            ],
            "s",
            "Time until the exporter's own SVIDs expire. X.509 drops to about half its lifetime, then jumps "
            "back at rotation; JWT-SVIDs renew at half their lifetime.",
            "SpireSVIDExpiringSoon",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "SVID lifetime left",
            [(svid_lifetime_left("spiffe_id"), "{{spiffe_id}}")],
            "percentunit",
            "Fraction of its lifetime the X.509-SVID still has. The agent renews at about 50 %; below 40 % "
            "rotation is stuck.",
            "SpireX509SVIDNotRotated",
            w=8,
            thresholds=LIFETIME_STEPS,
        ),
        panel(
            timeseries.Panel,
            "Time left on trust bundle CAs",
            [
                (
                    f"min by (trust_domain) (spire_health_trust_bundle_latest_expiry_timestamp_seconds{{{SEL}}} - time())",
                    "{{trust_domain}} newest CA",
                ),
                (
                    f"max by (trust_domain) (spire_health_trust_bundle_certificates{{{SEL}}})",
                    "{{trust_domain}} CAs",
                ),
            ],
            "s",
            "Time until the newest CA in each trust bundle expires (the one that has to take over), and how "
            "many CAs the bundle holds.",
            "SpireTrustBundleCAExpiringSoon",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "SDS: certificate time left and pushes",
            [
                (
                    f"max(spire_health_sds_certificate_expiry_timestamp_seconds{{{SEL}}}) - time()",
                    "time left",
                ),
                (
                    f"sum(increase(spire_health_sds_stream_pushes_total{{{SEL}}}[$__rate_interval]))",
                    "pushes",
                ),
            ],
            "s",
            "Envoy's path (the opt-in sds_fetch_secrets probe): time until the certificate the agent serves "
            "over SDS expires, and the agent's pushes on a long-lived StreamSecrets stream, one per rotation "
            "or bundle change. Empty when the probe is off.",
            "SpireAgentWorkloadAPIProbeFailing",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "Federated bundles: time since they last changed",
            [
                (
                    "time() - max by (trust_domain) "
                    f"(spire_health_federated_bundle_changed_timestamp_seconds{{{SEL}}})",
                    "{{trust_domain}}",
                )
            ],
            "s",
            "How long ago each federated trust domain's bundle last changed on this node (or was first seen). "
            "It changes when that trust domain publishes a new CA, about every half CA lifetime; with "
            "'Time left on trust bundle CAs' it shows a refresh that stopped. Empty without federation.",
            "SpireFederatedBundleStale",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "X.509-SVID rotations",
            [
                (
                    f"sum by (spiffe_id) (increase(spire_health_x509_svid_rotations_total{{{SEL}}}[$__rate_interval]))",
                    "{{spiffe_id}}",
                )
            ],
            "short",
            "Rotations seen on the exporter's long-lived FetchX509SVID stream: with SPIRE's default 1 h TTL, "
            "about one every 30 minutes.",
            "SpireX509SVIDNotRotated",
        ),
        panel(
            timeseries.Panel,
            "JWT bundle keys",
            [(f"max by (trust_domain) (spire_health_jwt_bundle_keys{{{SEL}}})", "{{trust_domain}}")],
            "short",
            "Keys in each trust domain's JWT bundle (JWKS).",
            None,
        ),
    ]
