"""The operator's path, in the one-node cluster: prometheus-operator v0.85.0 (built from the Go
module proxy) manages a Prometheus and an Alertmanager (Debian's binaries), reads the chart's
PodMonitor, then its ServiceMonitor, and its PrometheusRule, as installed by `helm install` with
the values a user sets. A frozen agent pages through the shipped Alertmanager example to a
webhook receiver; a missing registration entry notifies alone; SPIRE's own telemetry, scraped by
PodMonitors of its own, feeds the dashboards.

Windows and `for:` are shortened through the chart's values (as a user tunes them) so the module
runs in minutes. kube-state-metrics does not run in this cluster yet (it builds from the Go
module proxy as k8s.io/kube-state-metrics/v2), so its three rules are covered by promtool only
(alerts/tests.yml).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import ROOT, assert_down_leaves_nothing, fill

from harness.local_cluster import (
    EXPORTER_NAMESPACE,
    EXPORTER_RELEASE,
    EXPORTER_SELECTORS,
    NODE,
    NODE_ALIAS,
    REGISTRY_IMAGE_VALUES,
    TRUST_DOMAIN,
    Cluster,
    shipped_alertmanager_config,
)
from harness.local_spire import wait_until
from harness.paths import CHART
from harness.promtext import duration_seconds

pytestmark = [pytest.mark.spire, pytest.mark.cluster, pytest.mark.prometheus]

SCRAPE = 5  # seconds: the monitors' interval and the Prometheus' evaluation interval
GROUP_WAIT = 1  # seconds: the example's group_wait, shortened as harness/prom_stack.py does
# The shipped rules, with windows of a few scrapes and short for:, set through chart values.
TUNED = {
    # Critical here, a warning by default: the test shows the per-alert severity value at work
    # and the pager path; a single node of the default rules opens a ticket.
    "SpireAgentWorkloadAPIProbeFailing": {"window": "20s", "for": "5s", "severity": "critical"},
    # Its `for:` longer than ProbeFailing's window, as shipped (5m against 2m): a deadline while
    # the agent drops a deleted entry is NoRegistrationEntry's once PERMISSION_DENIED shows.
    "SpireAgentWorkloadAPIDeadlineExceeded": {"window": "30s", "for": "30s"},
    "SpireAgentNotServing": {"for": "5s"},
    "SpireHealthExporterNoRegistrationEntry": {"window": "30s", "for": "5s"},
}
VALUES = {
    "image": REGISTRY_IMAGE_VALUES,
    # The opt-in probes too, so that their rules and panels are checked like the others: the
    # agent's Debug API through the chart's admin socket mount (this cluster's agent runs as
    # root, so its socket's group is 0), and Envoy's SDS.
    "probes": {"interval": "2s", "timeout": "1s", "sds_fetch_secrets": {"enabled": True}},
    "agentAdminSocket": {"enabled": True, "agentGroup": 0},
    "config": {"agent": {"sample_interval": "1s"}},
    "agentHealth": {"url": "http://$(HOST_IP):9980"},
    "podMonitor": {"enabled": True, "interval": f"{SCRAPE}s", "scrapeTimeout": f"{SCRAPE - 1}s"},
    "prometheusRule": {"enabled": True, "alerts": TUNED},
}
SHORT_LIVED_ID = f"spiffe://{TRUST_DOMAIN}/short-lived"
# This cluster's SPIRE federates with no other trust domain: the federated-bundle series are
# tested with two real servers in tests/test_federation.py and tests/test_e2e_prometheus.py.
UNFEDERATED = "spire_health_federated_bundle_changed_timestamp_seconds"


@pytest.fixture(scope="module")
def operator(cluster: Cluster) -> Iterator[Cluster]:
    started = time.monotonic()
    cluster.monitoring(shipped_alertmanager_config(GROUP_WAIT), f"{SCRAPE}s")
    print(f"\noperator, Prometheus and Alertmanager ready in {time.monotonic() - started:.0f} s")
    values = cluster.dir / "values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    cluster.helm(
        "install", EXPORTER_RELEASE, str(CHART), "--namespace", EXPORTER_NAMESPACE, "--values", str(values)
    )
    cluster.rollout(EXPORTER_NAMESPACE, f"daemonset/{EXPORTER_RELEASE}")
    yield cluster


def query(cluster: Cluster, expr: str) -> list[Any]:
    answer = cluster.prometheus("api/v1/query", query=expr)
    assert answer["status"] == "success", (expr, answer)
    result: list[Any] = answer["data"]["result"]
    return result


def targets(cluster: Cluster, job: str) -> list[Any]:
    active = cluster.prometheus("api/v1/targets", state="active")["data"]["activeTargets"]
    return [t for t in active if t["labels"].get("job") == job]


def up_targets(cluster: Cluster, job: str, pool: str) -> list[Any]:
    return [t for t in targets(cluster, job) if t["health"] == "up" and t["scrapePool"].startswith(pool)]


def delivered(cluster: Cluster, status: str, alertname: str) -> list[tuple[str, Any]]:
    return [
        (r["path"], a)
        for r in cluster.webhook_received()
        for a in r["payload"]["alerts"]
        if a["status"] == status and a["labels"]["alertname"] == alertname
    ]


def healthy(cluster: Cluster) -> bool:
    return bool(query(cluster, 'min(spire_health_probe_success{job="spire-health-exporter"}) == 1'))


def test_the_podmonitor_targets_every_exporter_pod_with_its_node(operator: Cluster) -> None:
    pods = operator.kubectl_json(
        "get", "pods", "-n", EXPORTER_NAMESPACE, "-l", f"app.kubernetes.io/name={EXPORTER_RELEASE}"
    )["items"]
    pool = f"podMonitor/{EXPORTER_NAMESPACE}/{EXPORTER_RELEASE}/"
    wait_until(
        lambda: len(up_targets(operator, EXPORTER_RELEASE, pool)) == len(pods),
        120,
        "the PodMonitor's targets",
    )
    for target in up_targets(operator, EXPORTER_RELEASE, pool):
        labels = target["labels"]
        # The job the rules select, and the node the dashboards and alerts name.
        assert labels["job"] == "spire-health-exporter" and labels["node"] == NODE, labels
        assert (
            labels["pod"] in {p["metadata"]["name"] for p in pods}
            and labels["namespace"] == EXPORTER_NAMESPACE
        )
    # SPIRE's own telemetry, through PodMonitors of its own, in the jobs the rules select.
    for job in ("spire-agent", "spire-server"):
        wait_until(lambda j=job: up_targets(operator, j, "podMonitor/"), 60, f"the {job} telemetry target")
    wait_until(lambda: healthy(operator), 120, "every probe OK in Prometheus")


def selectors(expr: str) -> set[str]:
    """Each metric an expression reads, with the matchers that say whose series it is (job and
    the pod and container matchers); the code, status and rpc matchers are what alerts vary."""
    found = set()
    for name, matchers in re.findall(r"([a-zA-Z_][a-zA-Z0-9_:]*)\{([^}]*)\}", expr):
        kept = [
            m.strip()
            for m in matchers.split(",")
            if m.strip().split("=")[0].rstrip("!~")
            in ("job", "container", "created_by_kind", "created_by_name")
        ]
        found.add(f"{name}{{{', '.join(kept)}}}")
    return found


def test_every_rule_selects_series_of_the_chart_targets_and_none_fires_while_healthy(
    operator: Cluster,
) -> None:
    wait_until(lambda: healthy(operator), 120, "every probe OK in Prometheus")
    (rule,) = operator.kubectl_json("get", "prometheusrules", "-n", EXPORTER_NAMESPACE)["items"]
    rules = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    # The operator loaded the chart's PrometheusRule (its reloader does it a little later than the
    # targets): every rule, evaluated and healthy.
    wanted = {r.get("alert") or r["record"] for r in rules}

    def loaded() -> list[Any]:
        groups = operator.prometheus("api/v1/rules")["data"]["groups"]
        return [r for g in groups for r in g["rules"]]

    wait_until(lambda: {r["name"] for r in loaded()} == wanted, 120, "the PrometheusRule loaded")
    wait_until(lambda: all(r["health"] == "ok" for r in loaded()), 60, "every rule evaluated")
    # kube-state-metrics does not run in this cluster (see the module's docstring); the agent reports
    # SVIDs due for renewal only once a sync finds one, which a later test arranges.
    unserved = ("kube_", "spire_agent_cache_manager_expiring_svids_sum", UNFEDERATED)
    missing = []
    for r in rules:
        for selector in sorted(selectors(r["expr"])):
            if selector.startswith(unserved):
                continue
            # A recorded series can be briefly stale while the operator's reloader reloads rules.
            try:
                wait_until(lambda e=f"count({selector})": query(operator, e), 30, selector, interval=1)
            except TimeoutError:
                missing.append((r.get("alert") or r["record"], selector))
    assert not missing, missing
    time.sleep(2 * SCRAPE)
    firing = query(operator, 'ALERTS{alertstate="firing"}')
    assert not firing, [f["metric"] for f in firing]
    assert not query(operator, 'absent(up{job="spire-health-exporter"})')


def agent_pid() -> int:
    """The cluster's agent, seen from the host (the pods share its PID namespace)."""
    found = subprocess.run(
        ["pgrep", "-f", "spire-agent run -config /run/spire/config/agent.conf"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(found) == 1, found
    return int(found[0])


def test_a_frozen_agent_pages_through_alertmanager_within_the_promised_time(operator: Cluster) -> None:
    wait_until(lambda: healthy(operator), 120, "every probe OK in Prometheus")
    # What the rules promise: the window has to hold only failures, then for:; plus a scrape, an
    # evaluation to go pending and one to go firing, Alertmanager's group_wait, and the probe's
    # own interval and deadline. The agent's liveness probe (60 s) would restart it after that.
    failing = TUNED["SpireAgentWorkloadAPIProbeFailing"]
    promise = (
        duration_seconds(failing["window"]) + duration_seconds(failing["for"]) + 3 * SCRAPE + GROUP_WAIT + 3
    )
    pid = agent_pid()
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    try:
        wait_until(
            lambda: delivered(operator, "firing", "SpireAgentWorkloadAPIProbeFailing"),
            promise + 60,
            "the page",
            interval=1,
        )
        paged = time.monotonic() - started
    finally:
        os.kill(pid, signal.SIGCONT)
    print(f"\nagent frozen -> paged in {paged:.0f} s (promised {promise} s)")
    assert paged <= promise, (paged, promise)
    path, alert = delivered(operator, "firing", "SpireAgentWorkloadAPIProbeFailing")[0]
    labels, notes = alert["labels"], alert["annotations"]
    assert path == "/pager" and labels["severity"] == "critical" and labels["node"] == NODE
    assert labels["job"] == "spire-health-exporter" and labels["namespace"] == EXPORTER_NAMESPACE
    chart_values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (
        notes["runbook_url"]
        == chart_values["prometheusRule"]["runbookURL"] + "#spireagentworkloadapiprobefailing"
    )
    assert f"on node {NODE} made" in notes["description"]
    # Resumed, the agent answers again and the page resolves.
    wait_until(
        lambda: delivered(operator, "resolved", "SpireAgentWorkloadAPIProbeFailing"), 120, "the resolution"
    )


def test_a_missing_entry_notifies_no_registration_entry_alone(operator: Cluster) -> None:
    wait_until(lambda: healthy(operator), 180, "every probe OK in Prometheus")
    before = len(operator.webhook_received())
    removed = operator.exporter_entry_ids()
    short = json.loads(operator.spire_server("entry", "show", "-spiffeID", SHORT_LIVED_ID, "-output", "json"))
    removed_short = [e["id"] for e in short.get("entries") or []]
    for entry_id in [*removed, *removed_short]:
        operator.delete_entry(entry_id)
    try:
        wait_until(
            lambda: delivered(operator, "firing", "SpireHealthExporterNoRegistrationEntry"),
            180,
            "SpireHealthExporterNoRegistrationEntry",
            interval=1,
        )
        time.sleep(4 * SCRAPE)  # time for anything else to fire too
        since = operator.webhook_received()[before:]
        notified = {
            a["labels"]["alertname"] for r in since for a in r["payload"]["alerts"] if a["status"] == "firing"
        }
        assert notified == {"SpireHealthExporterNoRegistrationEntry"}, notified
        path, alert = delivered(operator, "firing", "SpireHealthExporterNoRegistrationEntry")[-1]
        assert path == "/ticket" and alert["labels"]["node"] == NODE
        # Whatever else Alertmanager holds for the node is held back by the inhibition rules.
        held = operator.alertmanager_alerts()
        others = [a for a in held if a["labels"].get("node") == NODE]
        others = [a for a in others if a["labels"]["alertname"] != "SpireHealthExporterNoRegistrationEntry"]
        assert all(a["status"]["inhibitedBy"] for a in others), [a["labels"]["alertname"] for a in others]
    finally:
        operator.create_exporter_entry()
    wait_until(lambda: healthy(operator), 180, "every probe OK again")


def create_short_lived_entry(cluster: Cluster) -> None:
    """A second identity for the exporter with a 1-minute TTL: the agent renews it during the
    test and reports SVIDs due for renewal in its own telemetry."""
    args = ["entry", "create", "-parentID", NODE_ALIAS, "-spiffeID", SHORT_LIVED_ID, "-x509SVIDTTL", "60"]
    for selector in EXPORTER_SELECTORS:
        args += ["-selector", selector]
    cluster.spire_server(*args)


def test_spire_telemetry_and_every_dashboard_query_have_data(operator: Cluster) -> None:
    create_short_lived_entry(operator)
    wait_until(
        lambda: query(operator, 'count(spire_agent_cache_manager_expiring_svids_sum{job="spire-agent"})'),
        180,
        "the agent to report an SVID due for renewal",
    )
    wait_until(lambda: healthy(operator), 120, "every probe OK in Prometheus")
    time.sleep(2 * SCRAPE)
    empty = []
    for name in ("spire-health-fleet.json", "spire-health-node.json"):
        dashboard = json.loads((ROOT / "dashboards" / name).read_text())
        node = NODE if "node" in name else ".*"
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = fill(target["expr"], node)
                if "node_rpc:spire_health_probes_failed" in expr:
                    continue  # only failing nodes have this series
                if UNFEDERATED in expr:
                    continue
                if not query(operator, expr):
                    empty.append((name, panel["title"], expr))
    assert not empty, empty


def test_the_servicemonitor_gives_the_same_job_and_node(operator: Cluster) -> None:
    operator.helm(
        "upgrade", EXPORTER_RELEASE, str(CHART), "--namespace", EXPORTER_NAMESPACE, "--reuse-values",
        "--set", "podMonitor.enabled=false", "--set", "serviceMonitor.enabled=true",
        "--set", f"serviceMonitor.interval={SCRAPE}s", "--set", f"serviceMonitor.scrapeTimeout={SCRAPE - 1}s",
    )  # fmt: skip
    pool = f"serviceMonitor/{EXPORTER_NAMESPACE}/{EXPORTER_RELEASE}/"
    # The operator rewrites Prometheus' configuration Secret at once, but the kubelet refreshes a
    # mounted Secret only on its sync period (a minute or more) before the reloader sees it.
    wait_until(lambda: up_targets(operator, EXPORTER_RELEASE, pool), 300, "the ServiceMonitor's target")
    wait_until(
        lambda: (
            not [t for t in targets(operator, EXPORTER_RELEASE) if t["scrapePool"].startswith("podMonitor/")]
        ),
        300,
        "the PodMonitor's target to go",
    )
    (target,) = up_targets(operator, EXPORTER_RELEASE, pool)
    labels = target["labels"]
    assert labels["job"] == "spire-health-exporter" and labels["node"] == NODE
    assert labels["service"] == EXPORTER_RELEASE
    # The rules select the new target's series: the probe alert's own recording rule has data.
    wait_until(
        lambda: query(
            operator, f'node:spire_health_probe_errors:ratio_rate15m{{service="{EXPORTER_RELEASE}"}}'
        ),
        120,
        "the rules over the ServiceMonitor's series",
    )


def test_down_leaves_no_process_mount_cgroup_or_device(cluster: Cluster) -> None:
    assert_down_leaves_nothing(cluster)
