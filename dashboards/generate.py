#!/usr/bin/env python3
"""Generates the Grafana dashboards (the committed JSON is what users import).

    python dashboards/generate.py [--out DIR]

Both dashboards share template variables (datasource, cluster, job, node), the restart
annotation, units, descriptions and runbook links, so they are built from the same pieces here.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# The Helm chart can only read files inside itself, so it gets a copy of the dashboards.
CHART_FILES = HERE.parent / "deploy" / "helm" / "spire-health-exporter" / "files" / "dashboards"
RUNBOOKS = "docs/runbooks.md"
DS = {"type": "prometheus", "uid": "${datasource}"}
# Every query selects with these; series without a cluster label still match cluster=~".*".
SEL = 'cluster=~"$cluster", job=~"$job", node=~"$node"'
CACHED = 'rpc!="fetch_jwt_svid_roundtrip"'
# SPIRE's own telemetry comes from the agent's scrape job, not the exporter's: node and cluster only.
AGENT_SEL = 'cluster=~"$cluster", node=~"$node"'
OK = ', code="OK"'


def target(expr: str, legend: str, ref: str, instant: bool = False) -> dict[str, Any]:
    return {
        "datasource": DS,
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
        "range": not instant,
        "instant": instant,
    }


def panel(
    title: str,
    kind: str,
    exprs: list[tuple[str, str]],
    unit: str,
    description: str,
    runbook: str | None = None,
    w: int = 12,
    h: int = 8,
    instant: bool = False,
    thresholds: list[tuple[str, float | None]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    steps = [{"color": c, "value": v} for c, v in (thresholds or [("green", None)])]
    result: dict[str, Any] = {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": w, "h": h},
        "targets": [target(e, legend, chr(ord("A") + i), instant) for i, (e, legend) in enumerate(exprs)],
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {},
    }
    if runbook:
        result["links"] = [{"title": "Runbook", "url": f"{RUNBOOKS}#{runbook.lower()}", "targetBlank": True}]
    if kind == "timeseries":
        result["options"] = {
            "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}
        }
    if extra:
        result.update(extra)
    return result


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "gridPos": {"w": 24, "h": 1}, "panels": []}


def layout(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Place panels left to right, top to bottom, and number them."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"].update({"x": x, "y": y})
        p["id"] = i
        x, row_h = x + w, max(row_h, h)
    return panels


def variables(node_multi: bool) -> list[dict[str, Any]]:
    def query(name: str, expr: str, multi: bool) -> dict[str, Any]:
        return {
            "name": name,
            "label": name.capitalize(),
            "type": "query",
            "datasource": DS,
            "query": {"query": expr, "refId": f"{name}-var"},
            "definition": expr,
            "refresh": 2,
            "includeAll": multi,
            "multi": multi,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]} if multi else {},
            "sort": 1,
        }

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
        },
        query("cluster", "label_values(spire_exporter_build_info, cluster)", True),
        query("job", 'label_values(spire_exporter_build_info{cluster=~"$cluster"}, job)', True),
        query(
            "node",
            'label_values(spire_exporter_build_info{cluster=~"$cluster", job=~"$job"}, node)',
            node_multi,
        ),
    ]


def dashboard(
    uid: str, title: str, description: str, panels: list[dict[str, Any]], node_multi: bool
) -> dict[str, Any]:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["spire", "spiffe", "spire-health-exporter"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "1m",
        "timezone": "",
        "templating": {"list": variables(node_multi)},
        "annotations": {
            "list": [
                {
                    "name": "Agent restarts",
                    "datasource": DS,
                    "enable": True,
                    "iconColor": "orange",
                    "expr": f"changes(spire_agent_process_start_time_seconds{{{SEL}}}[2m]) > 0",
                    "step": "1m",
                    "titleFormat": "spire-agent restarted",
                    "textFormat": "node {{node}}",
                }
            ]
        },
        "links": [{"title": "Runbooks", "url": RUNBOOKS, "type": "link", "targetBlank": True}],
        "panels": layout(panels),
    }


def ratio(by: str) -> str:
    def rate(extra: str) -> str:
        return f"sum by ({by}) (rate(spire_workload_api_probes_total{{{SEL}, {CACHED}{extra}}}[$__rate_interval]))"

    return f"{rate(OK)} / {rate('')}"


def quantile(q: float, by: str) -> str:
    return (
        f"histogram_quantile({q}, sum by (le, {by}) "
        f"(rate(spire_workload_api_probe_duration_seconds_bucket{{{SEL}, {CACHED}}}[$__rate_interval])))"
    )


def identity_panels(by: str) -> list[dict[str, Any]]:
    legend = "{{%s}} {{kind}}" % by
    return [
        row("Identities"),
        panel(
            "Time left on SVIDs",
            "timeseries",
            [(f"min by ({by}, kind) (spire_svid_expiry_timestamp_seconds{{{SEL}}} - time())", legend)],
            "s",
            "Time until the exporter's own SVIDs expire. X.509 drops to about half its lifetime, then jumps back at rotation; JWT-SVIDs renew at half their lifetime.",
            "SpireSVIDExpiringSoon",
            w=8,
        ),
        panel(
            "SVID lifetime left",
            "timeseries",
            [
                (
                    f'min by ({by}) ((spire_svid_expiry_timestamp_seconds{{{SEL}, kind="x509"}} - time()) / '
                    f'(spire_svid_expiry_timestamp_seconds{{{SEL}, kind="x509"}} - spire_svid_issued_timestamp_seconds{{{SEL}, kind="x509"}}))',
                    "{{%s}}" % by,
                )
            ],
            "percentunit",
            "Fraction of its lifetime the X.509-SVID still has. The agent renews at about 50 %; below 40 % rotation is stuck.",
            "SpireX509SVIDNotRotated",
            w=8,
            thresholds=[("red", None), ("orange", 0.4), ("green", 0.45)],
        ),
        panel(
            "Time left on trust bundle CAs",
            "timeseries",
            [
                (
                    f"min by (trust_domain) (spire_trust_bundle_expiry_timestamp_seconds{{{SEL}}} - time())",
                    "{{trust_domain}}",
                ),
                (f"max by (trust_domain) (spire_trust_bundle_certificates{{{SEL}}})", "{{trust_domain}} CAs"),
            ],
            "s",
            "Time until the earliest CA in each trust bundle expires, and how many CAs the bundle holds. A second CA appears while SPIRE rotates its CA.",
            "SpireTrustBundleCAExpiringSoon",
            w=8,
        ),
        panel(
            "X.509-SVID rotations",
            "timeseries",
            [
                (
                    f"sum by ({by}) (increase(spire_x509_svid_rotations_total{{{SEL}}}[$__rate_interval]))",
                    "{{%s}}" % by,
                )
            ],
            "short",
            "Rotations seen on the exporter's long-lived FetchX509SVID stream: with SPIRE's default 1 h TTL, about one every 30 minutes.",
            "SpireX509SVIDNotRotated",
            w=12,
        ),
        panel(
            "JWT bundle keys",
            "timeseries",
            [(f"max by (trust_domain) (spire_jwt_bundle_keys{{{SEL}}})", "{{trust_domain}}")],
            "short",
            "Keys in each trust domain's JWT bundle (JWKS).",
            None,
            w=12,
        ),
    ]


def agent_panels(by: str) -> list[dict[str, Any]]:
    legend = "{{%s}}" % by
    return [
        row("SPIRE agent"),
        panel(
            "Agent memory against its limit",
            "timeseries",
            [
                (f"max by ({by}) (spire_agent_process_resident_memory_bytes{{{SEL}}})", f"{legend} RSS"),
                (
                    f"max by ({by}) (spire_agent_process_peak_resident_memory_bytes{{{SEL}}})",
                    f"{legend} peak RSS",
                ),
                (f"max by ({by}) (spire_agent_cgroup_memory_usage_bytes{{{SEL}}})", f"{legend} cgroup usage"),
                (f"max by ({by}) (spire_agent_cgroup_memory_limit_bytes{{{SEL}}})", f"{legend} cgroup limit"),
            ],
            "bytes",
            "The agent's resident memory, its peak since start (VmHWM, which keeps the startup spike), its cgroup's usage and the cgroup limit.",
            "SpireAgentMemoryNearLimit",
            w=12,
        ),
        panel(
            "Agent memory, % of limit",
            "bargauge",
            [
                (
                    f"max by ({by}) (spire_agent_cgroup_memory_usage_bytes{{{SEL}}} / spire_agent_cgroup_memory_limit_bytes{{{SEL}}})",
                    legend,
                ),
                (
                    f"max by ({by}) (spire_agent_process_peak_resident_memory_bytes{{{SEL}}} / spire_agent_cgroup_memory_limit_bytes{{{SEL}}})",
                    f"{legend} peak",
                ),
            ],
            "percentunit",
            "Cgroup memory usage and peak RSS as a share of the limit, worst first. Agents without a limit are not shown.",
            "SpireAgentMemoryNearLimit",
            w=12,
            instant=True,
            thresholds=[("green", None), ("orange", 0.8), ("red", 0.9)],
            extra={
                "options": {
                    "orientation": "horizontal",
                    "displayMode": "gradient",
                    "reduceOptions": {"calcs": ["lastNotNull"]},
                }
            },
        ),
        panel(
            "OOM kills and restarts",
            "timeseries",
            [
                (
                    f"sum by ({by}) (increase(spire_agent_cgroup_oom_kills_total{{{SEL}}}[$__rate_interval]))",
                    f"{legend} OOM kills",
                ),
                (
                    f"sum by ({by}) (changes(spire_agent_process_start_time_seconds{{{SEL}}}[$__rate_interval]))",
                    f"{legend} restarts",
                ),
            ],
            "short",
            "OOM kills in the agent's cgroup and agent process restarts.",
            "SpireAgentOOMKilled",
            w=8,
        ),
        panel(
            "Agent up and serving",
            "timeseries",
            [
                (f"min by ({by}) (spire_agent_process_up{{{SEL}}})", f"{legend} process"),
                (f"min by ({by}) (spire_agent_grpc_health_serving{{{SEL}}})", f"{legend} gRPC health"),
            ],
            "bool_yes_no",
            "Whether the agent process runs and its socket's grpc.health.v1 Check says SERVING.",
            "SpireAgentDown",
            w=8,
        ),
        panel(
            "Agent CPU",
            "timeseries",
            [
                (
                    f"sum by ({by}) (rate(spire_agent_process_cpu_seconds_total{{{SEL}}}[$__rate_interval]))",
                    legend,
                )
            ],
            "percentunit",
            "CPU the agent process uses, as a share of one core. Compare with the agent's CPU limit: throttling makes attestation slow.",
            "SpireAgentWorkloadAPIDeadlineExceeded",
            w=8,
        ),
    ]


def fleet() -> dict[str, Any]:
    panels = [
        row("Workload API"),
        panel(
            "Probe success ratio by node",
            "timeseries",
            [(ratio("node"), "{{node}}")],
            "percentunit",
            "Share of Workload API probes that succeeded, per node. Every failure is counted by its gRPC code in spire_workload_api_probes_total.",
            "SpireAgentWorkloadAPIErrorRatioHigh",
            thresholds=[("red", None), ("orange", 0.9), ("green", 0.99)],
        ),
        panel(
            "Deadline exceeded by node",
            "timeseries",
            [
                (
                    f'sum by (node) (rate(spire_workload_api_probes_total{{{SEL}, {CACHED}, code="DEADLINE_EXCEEDED"}}[$__rate_interval]))',
                    "{{node}}",
                )
            ],
            "ops",
            "Probes per second that ran into their deadline: what workloads report as context deadline exceeded.",
            "SpireAgentWorkloadAPIDeadlineExceeded",
        ),
        panel(
            "Latency by RPC (p50, p95, p99)",
            "timeseries",
            [(quantile(q, "rpc"), f"{{{{rpc}}}} p{int(q * 100)}") for q in (0.5, 0.95, 0.99)],
            "s",
            "Time to the first answer of successful probes, over all selected nodes.",
            "SpireAgentWorkloadAPILatencyHigh",
            w=24,
        ),
        panel(
            "Worst nodes by failure ratio",
            "table",
            [(f"topk(10, 1 - ({ratio('node')}))", "{{node}}")],
            "percentunit",
            "The ten nodes whose probes failed most over the dashboard's interval.",
            "SpireAgentWorkloadAPIErrorRatioHigh",
            w=8,
            instant=True,
        ),
        panel(
            "Worst nodes by p99 latency",
            "table",
            [(f"topk(10, {quantile(0.99, 'node')})", "{{node}}")],
            "s",
            "The ten nodes with the slowest Workload API answers.",
            "SpireAgentWorkloadAPILatencyHigh",
            w=8,
            instant=True,
        ),
        panel(
            "Failures by code",
            "timeseries",
            [
                (
                    f'sum by (code) (rate(spire_workload_api_probes_total{{{SEL}, {CACHED}, code!="OK"}}[$__rate_interval]))',
                    "{{code}}",
                )
            ],
            "ops",
            "Failed probes per second by gRPC code (INVALID_RESPONSE: an answer a workload could not use).",
            "SpireAgentWorkloadAPIProbeFailing",
            w=8,
        ),
        *agent_panels("node"),
        *identity_panels("node"),
    ]
    return dashboard(
        "spire-health-fleet",
        "SPIRE agents: fleet health",
        "What workloads see of their SPIRE agents on every node: success, deadlines, latency, memory and identity lifetimes.",
        panels,
        node_multi=True,
    )


def why_slow_panels() -> list[dict[str, Any]]:
    """The seed's three causes side by side: a starved agent, clients that churn or leak
    sources, and a slow server behind the agent."""
    return [
        row("Why is the Workload API slow?"),
        panel(
            "Agent memory against its limit",
            "timeseries",
            [
                (f"max by (node) (spire_agent_cgroup_memory_usage_bytes{{{SEL}}})", "cgroup usage"),
                (f"max by (node) (spire_agent_process_peak_resident_memory_bytes{{{SEL}}})", "peak RSS"),
                (f"max by (node) (spire_agent_cgroup_memory_limit_bytes{{{SEL}}})", "limit"),
            ],
            "bytes",
            "Cause 1, a starved agent: memory close to the limit means reclaim, throttling and OOM kills.",
            "SpireAgentMemoryNearLimit",
            w=6,
        ),
        panel(
            "Workload API calls started per second",
            "timeseries",
            [
                (
                    f"sum by (node) (rate(spire_agent_workload_api_connection{{{AGENT_SEL}}}[$__rate_interval]))",
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
            "Open Workload API streams",
            "timeseries",
            [
                (
                    f"sum by (node) (spire_agent_workload_api_connections{{{AGENT_SEL}}})",
                    "in-flight RPCs (SPIRE)",
                ),
                (f"max by (node) (spire_agent_socket_connections{{{SEL}}})", "open connections (exporter)"),
            ],
            "short",
            "Cause 2, leaked sources: streams and connections that only grow. One per well-used source is normal.",
            "SpireAgentWorkloadAPIStreamsGrowing",
            w=6,
        ),
        panel(
            "Latency p99: cached and server round trip",
            "timeseries",
            [
                (
                    "histogram_quantile(0.99, sum by (le, rpc) (rate(spire_workload_api_probe_duration_seconds_bucket"
                    f'{{{SEL}, rpc=~"fetch_x509_svid|fetch_jwt_svid_roundtrip"}}[$__rate_interval])))',
                    "{{rpc}}",
                )
            ],
            "s",
            "Cause 3, a slow server or datastore: the round trip (when enabled) rises while the cached fetch stays fast. "
            "Both rising together points back at the agent.",
            "SpireAgentWorkloadAPILatencyHigh",
            w=6,
        ),
    ]


def node() -> dict[str, Any]:
    panels = [
        row("Workload API"),
        panel(
            "Latest probe results",
            "stat",
            [(f"min by (rpc) (spire_workload_api_probe_success{{{SEL}}})", "{{rpc}}")],
            "bool_yes_no",
            "Whether the latest probe of each RPC on this node succeeded.",
            "SpireAgentWorkloadAPIProbeFailing",
            w=24,
            h=4,
            instant=True,
            thresholds=[("red", None), ("green", 1)],
        ),
        panel(
            "Success ratio by RPC",
            "timeseries",
            [(ratio("rpc"), "{{rpc}}")],
            "percentunit",
            "Share of each RPC's probes that succeeded.",
            "SpireAgentWorkloadAPIErrorRatioHigh",
        ),
        panel(
            "Failures by RPC and code",
            "timeseries",
            [
                (
                    f'sum by (rpc, code) (rate(spire_workload_api_probes_total{{{SEL}, code!="OK"}}[$__rate_interval]))',
                    "{{rpc}} {{code}}",
                )
            ],
            "ops",
            "Failed probes per second by RPC and gRPC code, including the server round trip when enabled.",
            "SpireAgentWorkloadAPIProbeFailing",
        ),
        panel(
            "Latency p99 by RPC",
            "timeseries",
            [
                (
                    "histogram_quantile(0.99, sum by (le, rpc) "
                    f"(rate(spire_workload_api_probe_duration_seconds_bucket{{{SEL}}}[$__rate_interval])))",
                    "{{rpc}}",
                )
            ],
            "s",
            "p99 time to the first answer per RPC; fetch_jwt_svid_roundtrip, when enabled, is the agent -> server -> datastore path.",
            "SpireAgentWorkloadAPILatencyHigh",
        ),
        panel(
            "Time since last success",
            "timeseries",
            [
                (
                    f"time() - max by (rpc) (spire_workload_api_last_success_timestamp_seconds{{{SEL}}})",
                    "{{rpc}}",
                )
            ],
            "s",
            "Seconds since each RPC last succeeded; with the default 15 s interval it stays under about 20 s.",
            "SpireAgentWorkloadAPIProbeFailing",
        ),
        *why_slow_panels(),
        *agent_panels("node"),
        panel(
            "Agent threads and open files",
            "timeseries",
            [
                (f"max by (node) (spire_agent_process_threads{{{SEL}}})", "threads"),
                (f"max by (node) (spire_agent_process_open_fds{{{SEL}}})", "open FDs"),
            ],
            "short",
            "OS threads and open file descriptors of the agent; steady growth points at a leak.",
            None,
            w=12,
        ),
        panel(
            "Agent HTTP health",
            "timeseries",
            [(f"min by (check) (spire_agent_http_health_status{{{SEL}}})", "{{check}}")],
            "bool_yes_no",
            "The agent's own /live and /ready answers (refreshed by SPIRE only every ~60 s); only when the exporter is given the health URL.",
            "SpireAgentDown",
            w=12,
        ),
        *identity_panels("spiffe_id"),
    ]
    return dashboard(
        "spire-health-node",
        "SPIRE agent: node drill-down",
        "One node's SPIRE agent as its workloads see it: every RPC, the agent's process and memory, and the exporter's identities.",
        panels,
        node_multi=False,
    )


def render() -> dict[str, str]:
    return {
        "spire-health-fleet.json": json.dumps(fleet(), indent=2) + "\n",
        "spire-health-node.json": json.dumps(node(), indent=2) + "\n",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    for name, text in render().items():
        (args.out / name).write_text(text)
        if args.out == HERE:
            CHART_FILES.mkdir(parents=True, exist_ok=True)
            (CHART_FILES / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
