#!/usr/bin/env python3
"""Generates the Prometheus rule files from alerts/config.yml, the one source of thresholds.

    python alerts/generate.py                      # rewrite the committed files
    python alerts/generate.py --config my.yml --out DIR
    python alerts/generate.py --for-override 5s    # every `for:` replaced (tests only)

Writes spire-health-exporter.rules.yml (plain rule file) and prometheusrule.yaml (the same
groups as a prometheus-operator PrometheusRule), and copies the rule file into the Helm chart.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
# The Helm chart can only read files inside itself, so it gets a copy of the rule file.
CHART_FILES = HERE.parent / "deploy" / "helm" / "spire-health-exporter" / "files"
RULES_FILE = "spire-health-exporter.rules.yml"
CRD_FILE = "prometheusrule.yaml"
# The round trip measures the server path; its failures have their own meaning (see the runbook).
CACHED = 'rpc!="fetch_jwt_svid_roundtrip"'


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str
    expr: str  # %(key)s placeholders: sel, node, cached, and the alert's own keys in config.yml
    summary: str
    description: str  # Go template for Alertmanager, plus the same placeholders


ALERTS = [
    Alert(
        "SpireAgentWorkloadAPIProbeFailing",
        "critical",
        # From the counters, not the latest result: attempts made and none OK in the window, so
        # one lucky or unlucky probe neither hides nor fakes an outage. health_check is the
        # agent's liveness (SpireAgentNotServing's); a missing entry is NoRegistrationEntry's.
        "(%(attempts)s > 0) unless (%(attempts_ok)s > 0) unless on (job, instance) (%(denied)s > 0)",
        "SPIRE agent Workload API probe failing",
        'The {{ $labels.rpc }} probe on node %(node)s made {{ printf "%%.0f" $value }} attempts in the last '
        "%(window)s and none succeeded: workloads there cannot get this identity call answered.",
    ),
    Alert(
        "SpireAgentWorkloadAPIDeadlineExceeded",
        "critical",
        # A share of the attempts, so that it means the same at any probe interval.
        "sum without (rpc, code) (increase("
        'spire_workload_api_probes_total{%(sel)s, code="DEADLINE_EXCEEDED", %(cached)s}[%(window)s]'
        ")) / sum without (rpc, code) (increase(spire_workload_api_probes_total{%(sel)s, %(cached)s}[%(window)s])) "
        "> %(ratio)s",
        "Workload API calls hit their deadline",
        "{{ $value | humanizePercentage }} of Workload API probes on node %(node)s ran into their deadline "
        "in the last %(window)s (context deadline exceeded).",
    ),
    Alert(
        "SpireAgentWorkloadAPIErrorRatioHigh",
        "warning",
        # Intermittent only: a ratio of 1 is an outage, which SpireAgentWorkloadAPIProbeFailing pages.
        "spire:workload_api_probe_errors:ratio_rate%(window)s{%(sel)s} > %(threshold)s < 1",
        "Workload API probes failing intermittently",
        "{{ $value | humanizePercentage }} of Workload API probes on node %(node)s failed over the last %(window)s.",
    ),
    Alert(
        "SpireAgentWorkloadAPILatencyHigh",
        "warning",
        "spire:workload_api_probe_duration_seconds:p99_rate%(window)s{%(sel)s, %(cached)s} > %(threshold_seconds)s",
        "Workload API p99 latency high",
        "p99 latency of {{ $labels.rpc }} on node %(node)s is {{ $value | humanizeDuration }} "
        "over the last %(window)s.",
    ),
    Alert(
        "SpireX509SVIDNotRotated",
        "warning",
        '(spire_svid_expiry_timestamp_seconds{%(sel)s, kind="x509"} - time()) / '
        '(spire_svid_expiry_timestamp_seconds{%(sel)s, kind="x509"} - '
        'spire_svid_issued_timestamp_seconds{%(sel)s, kind="x509"}) < %(remaining_fraction)s',
        "X.509-SVID not rotated on time",
        "The X.509-SVID {{ $labels.spiffe_id }} on node %(node)s has only {{ $value | humanizePercentage }} "
        "of its lifetime left; the agent renews at about half, so rotation is stuck.",
    ),
    Alert(
        "SpireSVIDExpiringSoon",
        "critical",
        # A share of the SVID's own lifetime, so that short TTLs don't page all day.
        "(spire_svid_expiry_timestamp_seconds{%(sel)s} - time()) and ("
        "(spire_svid_expiry_timestamp_seconds{%(sel)s} - time()) / (spire_svid_expiry_timestamp_seconds{%(sel)s} - "
        "spire_svid_issued_timestamp_seconds{%(sel)s}) < %(remaining_fraction)s)",
        "SVID about to expire",
        "The {{ $labels.kind }} SVID {{ $labels.spiffe_id }} on node %(node)s "
        "{{ if gt $value 0.0 }}expires in {{ $value | humanizeDuration }}{{ else }}has expired{{ end }}: "
        "less than %(remaining_percent)s of its lifetime was left and the agent served no new one.",
    ),
    Alert(
        "SpireTrustBundleCAExpiringSoon",
        "critical",
        # The newest CA, not the earliest nor a count: SPIRE keeps an expired CA in the bundle
        # for a while, so "two certificates" can be one expired and one about to.
        "spire_trust_bundle_latest_expiry_timestamp_seconds{%(sel)s} - time() < %(seconds)s",
        "Trust bundle CA expiring without a successor",
        "The newest CA in the {{ $labels.trust_domain }} bundle seen on node %(node)s expires in "
        "{{ $value | humanizeDuration }} and no successor CA has been published.",
    ),
    Alert(
        "SpireAgentMemoryNearLimit",
        "warning",
        "spire_agent_cgroup_memory_usage_bytes{%(sel)s} / spire_agent_cgroup_memory_limit_bytes{%(sel)s} "
        "> %(fraction)s",
        "SPIRE agent memory near its cgroup limit",
        "The SPIRE agent on node %(node)s uses {{ $value | humanizePercentage }} of its memory limit.",
    ),
    Alert(
        "SpireAgentMemoryPeakNearLimit",
        "info",
        "spire_agent_process_peak_resident_memory_bytes{%(sel)s} / spire_agent_cgroup_memory_limit_bytes{%(sel)s} "
        "> %(fraction)s",
        "SPIRE agent memory peak came close to its limit",
        "The SPIRE agent on node %(node)s peaked at {{ $value | humanizePercentage }} of its memory limit "
        "(startup and attestation bursts); a larger burst will be OOM-killed.",
    ),
    Alert(
        "SpireAgentOOMKilled",
        "critical",
        "increase(spire_agent_cgroup_oom_kills_total{%(sel)s}[%(window)s]) > 0",
        "SPIRE agent OOM-killed",
        "The OOM killer killed a process in the SPIRE agent's cgroup on node %(node)s "
        "{{ $value | humanize }} times in the last %(window)s.",
    ),
    Alert(
        "SpireAgentRestarting",
        "warning",
        "changes(spire_agent_process_start_time_seconds{%(sel)s}[%(window)s]) >= %(restarts)s",
        "SPIRE agent restarting repeatedly",
        "The SPIRE agent on node %(node)s restarted {{ $value | humanize }} times in the last %(window)s.",
    ),
    Alert(
        "SpireAgentDown",
        "critical",
        "spire_agent_process_up{%(sel)s} == 0",
        "SPIRE agent down",
        "No spire-agent process is running on node %(node)s: nothing there can get an identity.",
    ),
    Alert(
        "SpireAgentNotServing",
        "warning",
        "spire_agent_grpc_health_serving{%(sel)s} == 0",
        "SPIRE agent socket not serving",
        "The SPIRE agent socket on node %(node)s does not answer its gRPC health check with SERVING "
        "(the agent is hung, overloaded, still starting, or gone).",
    ),
    # The seed's third cause, from SPIRE's own telemetry (v1.13.3): its workload_api
    # "connection" counter and "connections" gauge count Workload API RPCs started and in
    # flight, each started RPC with a workload attestation of its own.
    Alert(
        "SpireAgentWorkloadAPIChurnHigh",
        "warning",
        "%(churn)s > %(min_rate)s and ((%(churn)s > %(factor)s * %(baseline)s) or (%(churn)s unless %(baseline)s))",
        "Workload API calls far above the node's baseline",
        "Workloads on node %(node)s start {{ $value | humanize }} Workload API calls a second, each "
        "attested anew: more than %(factor)s times the previous %(baseline_window)s. A client is "
        "likely creating a source or channel per request.",
    ),
    Alert(
        "SpireAgentWorkloadAPIStreamsGrowing",
        "warning",
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
        'increase(spire_workload_api_probes_total{%(sel)s, rpc="fetch_x509_svid", code="PERMISSION_DENIED"}'
        '[%(window)s]) > 0 and ignoring (code) spire_workload_api_probe_success{%(sel)s, rpc="fetch_x509_svid"} == 0',
        "The exporter has no registration entry",
        'The SPIRE agent on node %(node)s answers the exporter "no identity issued" (PERMISSION_DENIED): '
        "its registration entry is missing or its selectors do not match.",
    ),
    Alert(
        "SpireHealthExporterDown",
        "warning",
        "up{%(sel)s} == 0",
        "spire-health-exporter down",
        "Prometheus cannot scrape spire-health-exporter on node %(node)s ({{ $labels.instance }}).",
    ),
    Alert(
        "SpireHealthExporterAbsent",
        "warning",
        "absent(up{%(sel)s})",
        "spire-health-exporter absent",
        "Prometheus has no spire-health-exporter target at all: SPIRE agents are not being watched.",
    ),
]


def _params(c: dict[str, Any], name: str) -> dict[str, Any]:
    node = "{{ $labels.%s }}" % c["node_label"]
    own = c["alerts"].get(name, {})
    params = {
        "sel": c["selector"],
        "agent_sel": c["agent_selector"],
        "node": node,
        "node_label": c["node_label"],
        "cached": CACHED,
        **own,
    }
    if "remaining_fraction" in own:
        params["remaining_percent"] = f"{own['remaining_fraction']:.0%}"
    if name == "SpireAgentWorkloadAPIProbeFailing":
        probes = (
            'spire_workload_api_probes_total{%(sel)s, %(cached)s, rpc!="health_check"%%s}[%(window)s]'
            % params
        )
        ok = ', code="OK"'
        params["attempts"] = "sum without (code) (increase(%s))" % (probes % "")
        params["attempts_ok"] = "sum without (code) (increase(%s))" % (probes % ok)
        params["denied"] = (
            'increase(spire_workload_api_probes_total{%(sel)s, rpc="fetch_x509_svid", code="PERMISSION_DENIED"}'
            "[%(window)s])" % params
        )
    counter = "spire_agent_workload_api_connection{%(agent_sel)s}" % params
    if "min_rate" in own:
        params["churn"] = f"sum without (host) (rate({counter}[{own['window']}]))"
        params["baseline"] = (
            f"sum without (host) (rate({counter}[{own['baseline_window']}] offset {own['window']}))"
        )
    if "growth" in own:

        def growing(series: str) -> str:
            w, g = own["window"], own["growth"]
            # The comparison first, so that the alert's value is the current count.
            return f"({series} >= max_over_time({series}[{w}]) and {series} - min_over_time({series}[{w}]) >= {g})"

        params["growing_agent"] = growing("spire_agent_workload_api_connections{%(agent_sel)s}" % params)
        params["growing_socket"] = growing("spire_agent_socket_connections{%(sel)s}" % params)
    return params


def recording_rules(c: dict[str, Any]) -> list[dict[str, str]]:
    err = _params(c, "SpireAgentWorkloadAPIErrorRatioHigh")
    lat = _params(c, "SpireAgentWorkloadAPILatencyHigh")
    total = "spire_workload_api_probes_total{%(sel)s, %(cached)s%(extra)s}[%(window)s]"
    return [
        {
            "record": "spire:workload_api_probe_errors:ratio_rate%(window)s" % err,
            "expr": "sum without (code, rpc) (rate(%s)) / sum without (code, rpc) (rate(%s))"
            % (total % {**err, "extra": ', code!="OK"'}, total % {**err, "extra": ""}),
        },
        {
            "record": "spire:workload_api_probe_duration_seconds:p99_rate%(window)s" % lat,
            "expr": "histogram_quantile(0.99, rate(spire_workload_api_probe_duration_seconds_bucket{%(sel)s}"
            "[%(window)s]))" % lat,
        },
    ]


def groups(c: dict[str, Any], for_override: str | None = None) -> list[dict[str, Any]]:
    rules = []
    for alert in ALERTS:
        params = _params(c, alert.name)
        rules.append(
            {
                "alert": alert.name,
                "expr": alert.expr % params,
                "for": for_override or params["for"],
                "labels": {"severity": alert.severity},
                "annotations": {
                    "summary": alert.summary,
                    "description": alert.description % params,
                    "runbook_url": f"{c['runbook_url']}#{alert.name.lower()}",
                },
            }
        )
    return [
        {"name": "spire-health-exporter.rules", "rules": recording_rules(c)},
        {"name": "spire-health-exporter.alerts", "rules": rules},
    ]


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=200, allow_unicode=True)


def render(c: dict[str, Any], for_override: str | None = None) -> dict[str, str]:
    header = "# Generated by alerts/generate.py from alerts/config.yml. Do not edit.\n"
    body = groups(c, for_override)
    crd = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "spire-health-exporter",
            "labels": {"app.kubernetes.io/name": "spire-health-exporter"},
        },
        "spec": {"groups": body},
    }
    return {RULES_FILE: header + dump({"groups": body}), CRD_FILE: header + dump(crd)}


def load_config(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, default=HERE / "config.yml")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--for-override", default=None, help="replace every for: (for tests)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rendered = render(load_config(args.config), args.for_override)
    for name, text in rendered.items():
        (args.out / name).write_text(text)
    if args.out == HERE:
        (CHART_FILES / RULES_FILE).write_text(rendered[RULES_FILE])
    return 0


if __name__ == "__main__":
    sys.exit(main())
