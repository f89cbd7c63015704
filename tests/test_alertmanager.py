"""The example Alertmanager configuration: amtool routes every shipped alert by its labels, and a
real Alertmanager (Debian's package, on loopback) groups an alert many nodes share into one
notification per cluster and keeps inhibited alerts from notifying."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from conftest import ROOT, require, shipped_alerts, tool

from harness.prom_stack import Alertmanager, Webhook, binaries

CONFIG = ROOT / "alerts" / "alertmanager.example.yml"
RECEIVER = {"critical": "pager", "warning": "ticket", "info": "blackhole"}


def test_amtool_accepts_the_example_and_routes_every_shipped_alert_by_severity() -> None:
    amtool = tool("amtool")
    done = subprocess.run([amtool, "check-config", str(CONFIG)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for alert in shipped_alerts():
        labels = {**alert["labels"], "alertname": alert["alert"], "node": "node-a", "cluster": "prod"}
        expected = RECEIVER[labels["severity"]]
        done = subprocess.run(
            [amtool, "config", "routes", "test", f"--config.file={CONFIG}", f"--verify.receivers={expected}"]
            + [f"{k}={v}" for k, v in labels.items()],
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, (alert["alert"], done.stdout + done.stderr)


def test_notifications_are_grouped_by_alert_and_cluster_and_the_trust_domains_by_trust_domain() -> None:
    route = yaml.safe_load(CONFIG.read_text())["route"]
    assert route["group_by"] == ["alertname", "cluster"]
    (td_route,) = [r for r in route["routes"] if r["matchers"] == ['scope="trust_domain"']]
    assert td_route["group_by"] == ["alertname", "cluster", "trust_domain"]
    scopes = {a["labels"]["scope"] for a in shipped_alerts()}
    assert scopes == {"node", "cluster", "trust_domain"}
    # Pages are for causes many nodes share; a node's own trouble opens a ticket.
    assert {a["labels"]["scope"] for a in shipped_alerts() if a["labels"]["severity"] == "critical"} <= {
        "cluster",
        "trust_domain",
    }


@pytest.fixture
def alertmanager(tmp_path) -> Iterator[tuple[Alertmanager, Webhook]]:
    if binaries()[1] is None:
        require("prometheus-alertmanager (Debian package) is not installed")
    webhook = Webhook()
    am = Alertmanager(tmp_path, webhook)
    try:
        yield am, webhook
    finally:
        am.stop()
        webhook.close()


def alert(name: str, node: str, cluster: str = "prod") -> dict[str, Any]:
    (rule,) = [a for a in shipped_alerts() if a["alert"] == name]
    labels = {**rule["labels"], "alertname": name, "node": node, "cluster": cluster}
    return {"labels": labels, "annotations": {"runbook_url": rule["annotations"]["runbook_url"]}}


def settle(webhook: Webhook, seconds: float = 6) -> None:
    """Waits until nothing new arrives for a few group intervals (1 s each here)."""
    deadline = time.monotonic() + 60
    seen, quiet_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        if len(webhook.received) != seen:
            seen, quiet_since = len(webhook.received), time.monotonic()
        elif seen > 0 and time.monotonic() - quiet_since > seconds:
            return
        time.sleep(0.2)
    raise AssertionError(f"notifications never settled: {webhook.received}")


def test_a_warning_many_nodes_share_is_one_notification_per_cluster(alertmanager) -> None:
    am, webhook = alertmanager
    # Every node of two clusters loses its server; two nodes of prod also lose their agent; prod pages.
    am.post([alert("SpireAgentServerSyncFailing", f"node-{i}") for i in range(6)])
    am.post([alert("SpireAgentServerSyncFailing", f"node-{i}", "staging") for i in range(3)])
    am.post([alert("SpireAgentDown", "node-7"), alert("SpireAgentDown", "node-8")])
    am.post([alert("SpireAgentsNotSyncing", "")])
    settle(webhook)

    def sent(name: str) -> list[tuple[str, dict[str, Any]]]:
        return [(path, p) for path, p in webhook.received if p["groupLabels"]["alertname"] == name]

    sync = sent("SpireAgentServerSyncFailing")
    by_cluster = {p["groupLabels"]["cluster"]: p for _, p in sync}
    assert len(sync) == 2 and set(by_cluster) == {"prod", "staging"}, [p["groupLabels"] for _, p in sync]
    assert {path for path, _ in sync} == {"/ticket"}
    assert len(by_cluster["prod"]["alerts"]) == 6 and len(by_cluster["staging"]["alerts"]) == 3
    (down,) = [p for _, p in sent("SpireAgentDown")]
    assert sorted(a["labels"]["node"] for a in down["alerts"]) == ["node-7", "node-8"]
    assert [path for path, _ in sent("SpireAgentsNotSyncing")] == ["/pager"]


def test_inhibitions_page_once_for_the_cause(alertmanager) -> None:
    am, webhook = alertmanager
    am.post(
        [
            # node-a: no registration entry; the probe alerts and the expiring SVID follow from it.
            alert("SpireHealthExporterNoRegistrationEntry", "node-a"),
            alert("SpireAgentWorkloadAPIDeadlineExceeded", "node-a"),
            alert("SpireSVIDExpiringSoon", "node-a"),
            # node-b: a stopped agent explains its socket not serving.
            alert("SpireAgentDown", "node-b"),
            alert("SpireAgentNotServing", "node-b"),
            # node-c: the node is down (kubernetes-mixin), which explains the agent being down.
            {
                "labels": {
                    "alertname": "KubeNodeNotReady",
                    "severity": "warning",
                    "node": "node-c",
                    "cluster": "prod",
                }
            },
            alert("SpireAgentDown", "node-c"),
            # node-d: a warning alone notifies.
            alert("SpireAgentNotServing", "node-d"),
        ]
    )
    settle(webhook)
    notified = {
        (a["labels"]["alertname"], a["labels"]["node"]) for _, p in webhook.received for a in p["alerts"]
    }
    assert notified == {
        ("SpireHealthExporterNoRegistrationEntry", "node-a"),
        ("SpireAgentDown", "node-b"),
        ("KubeNodeNotReady", "node-c"),
        ("SpireAgentNotServing", "node-d"),
    }
    inhibited = {
        (a["labels"]["alertname"], a["labels"]["node"]) for a in am.alerts() if a["status"]["inhibitedBy"]
    }
    assert inhibited == {
        ("SpireAgentWorkloadAPIDeadlineExceeded", "node-a"),
        ("SpireSVIDExpiringSoon", "node-a"),
        ("SpireAgentNotServing", "node-b"),
        ("SpireAgentDown", "node-c"),
    }
    # The notification carries the runbook's absolute URL.
    (sent,) = [a for _, p in webhook.received for a in p["alerts"] if a["labels"]["node"] == "node-b"]
    assert sent["annotations"]["runbook_url"].startswith("https://")
