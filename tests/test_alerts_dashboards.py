"""Rule files and dashboards: generated from one source, valid for promtool and amtool, and complete."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml
from conftest import ROOT, metric_source, shipped_alerts, tool

from alerts import generate as generate_alerts
from dashboards import generate as generate_dashboards

RUNBOOK_ANCHORS = {
    "#" + re.sub(r"[^a-z0-9-]", "", line[3:].strip().lower().replace(" ", "-"))
    for line in (ROOT / "docs" / "runbooks.md").read_text().splitlines()
    if line.startswith("## ")
}
REQUIRED = {
    "SpireAgentsFailing",
    "SpireSVIDsNotRotated",
    "SpireServerPathFailing",
    "SpireAgentServerRoundTripFailing",
    "SpireAgentWorkloadAPIDeadlineExceeded",
    "SpireAgentWorkloadAPIProbeFailing",
    "SpireAgentWorkloadAPILatencyHigh",
    "SpireX509SVIDNotRotated",
    "SpireSVIDExpiringSoon",
    "SpireTrustBundleCAExpiringSoon",
    "SpireAgentMemoryNearLimit",
    "SpireAgentOOMKilled",
    "SpireAgentRestarting",
    "SpireAgentDown",
    "SpireAgentNotServing",
    "SpireHealthExporterNoRegistrationEntry",
    "SpireHealthExporterDown",
    "SpireHealthExporterAbsent",
}


def test_committed_rule_files_are_what_the_generator_makes() -> None:
    rendered = generate_alerts.render(generate_alerts.load_config(ROOT / "alerts" / "config.yml"))
    for name, text in rendered.items():
        assert (ROOT / "alerts" / name).read_text() == text, (
            f"alerts/{name} is stale: run python -m alerts.generate"
        )
    for path, text in generate_alerts.chart_files(
        generate_alerts.load_config(ROOT / "alerts" / "config.yml")
    ).items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is stale: run python -m alerts.generate"
    plain = yaml.safe_load(rendered[generate_alerts.RULES_FILE])
    crd = yaml.safe_load(rendered[generate_alerts.CRD_FILE])
    assert crd["kind"] == "PrometheusRule" and crd["spec"]["groups"] == plain["groups"]


def test_committed_dashboards_are_what_the_generator_makes() -> None:
    for name, text in generate_dashboards.render().items():
        assert (ROOT / "dashboards" / name).read_text() == text, f"dashboards/{name} is stale"
        assert (generate_dashboards.CHART_FILES / name).read_text() == text, f"the chart's {name} is stale"


def test_thresholds_and_for_come_from_the_config(tmp_path) -> None:
    config = generate_alerts.load_config(ROOT / "alerts" / "config.yml")
    config["alerts"]["SpireAgentMemoryNearLimit"] = {
        "severity": "critical",
        "scope": "node",
        "for": "42m",
        "fraction": 0.77,
    }
    config["alerts"]["SpireAgentsFailing"]["min_nodes"] = 7
    rules = yaml.safe_load(generate_alerts.render(config)[generate_alerts.RULES_FILE])["groups"][1]["rules"]
    memory = next(r for r in rules if r["alert"] == "SpireAgentMemoryNearLimit")
    assert memory["for"] == "42m" and memory["expr"].endswith("> 0.77")
    assert memory["labels"] == {"severity": "critical", "scope": "node"}
    # A page's threshold reaches every alert it holds back, not only its own.
    down = next(r for r in rules if r["alert"] == "SpireAgentDown")
    assert ">= 7" in down["expr"]


def test_every_alert_is_complete() -> None:
    alerts = shipped_alerts()
    assert {a["alert"] for a in alerts} >= REQUIRED
    base = generate_alerts.load_config(ROOT / "alerts" / "config.yml")["runbook_url"]
    assert base.startswith("https://") and base.endswith("/docs/runbooks.md")
    for alert in alerts:
        assert alert["labels"]["severity"] in ("critical", "warning", "info"), alert["alert"]
        notes = alert["annotations"]
        assert notes["summary"], alert["alert"]
        # The description names where: the node, or for a cause the whole cluster shares, the
        # cluster (an absent target has neither).
        where = {
            "node": ["{{ $labels.node }}"],
            "cluster": ["$labels.cluster", "{{ $labels.node }}"],
            "trust_domain": ["{{ $labels.trust_domain }}"],
        }
        named = [w for w in where[alert["labels"]["scope"]] if w in notes["description"]]
        assert named or "absent(" in alert["expr"], alert["alert"]
        # Absolute, so that the link works from a pager.
        url, _, anchor = notes["runbook_url"].partition("#")
        assert url == base and "#" + anchor in RUNBOOK_ANCHORS, (
            f"{alert['alert']}: no runbook section {anchor}"
        )


def test_promtool_check_and_unit_tests_cover_every_alert() -> None:
    promtool = tool("promtool")
    for name in (generate_alerts.RULES_FILE,):
        done = subprocess.run(
            [promtool, "check", "rules", str(ROOT / "alerts" / name)], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [promtool, "test", "rules", "tests.yml"],
        cwd=ROOT / "alerts",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
    tests = yaml.safe_load((ROOT / "alerts" / "tests.yml").read_text())["tests"]
    checks = [c for t in tests for c in t["alert_rule_test"]]
    for alert in shipped_alerts():
        mine = [c for c in checks if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"no test that {alert['alert']} fires"
        assert any(not c["exp_alerts"] for c in mine), f"no test that {alert['alert']} stays silent"


@pytest.mark.parametrize("name", ["spire-health-fleet.json", "spire-health-node.json"])
def test_dashboard_shape(name) -> None:
    d = json.loads((ROOT / "dashboards" / name).read_text())
    assert d["schemaVersion"] >= 39
    assert [v["name"] for v in d["templating"]["list"]] == [
        "datasource",
        "cluster",
        "job",
        "node",
        "agent",
        "slo_objective",
    ]
    (agent,) = [v for v in d["templating"]["list"] if v["name"] == "agent"]
    assert agent["hide"] == 2 and agent["query"].startswith(f"label_values({AGENT_NODE}")
    assert (
        d["annotations"]["list"]
        and "spire_health_agent_process_start_time_seconds" in d["annotations"]["list"][0]["expr"]
    )
    panels = [p for p in d["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    base = generate_alerts.load_config(ROOT / "alerts" / "config.yml")["runbook_url"]
    for p in panels:
        assert p["description"] and p["fieldConfig"]["defaults"]["unit"], p["title"]
        assert p["datasource"]["uid"] == "${datasource}"
        for t in p["targets"]:
            expr = t["expr"]
            # Each source by its own labels: the exporter's by cluster, job and node; SPIRE's own
            # agent telemetry (its own scrape job, whose targets may carry no node) by cluster
            # and the agent targets on the chosen nodes, then given their node by the rules'
            # recording; the server's by cluster.
            names = set(re.findall(r"\b([a-z_]+:spire_[a-z0-9_:]+|spire_[a-z0-9_]+)\b", expr))
            for metric in names:
                source = metric_source(metric)
                wanted = {"exporter": SEL, "agent": AGENT_SEL, "server": 'cluster=~"$cluster"', "rule": None}[
                    source
                ]
                if wanted:
                    assert f"{metric}{{{wanted}" in expr, (p["title"], metric, expr)
                if source == "agent":
                    assert AGENT_JOIN in expr, (p["title"], expr)
            if "{__name__=~" in expr:
                assert 'cluster=~"$cluster"' in expr
        for link in p.get("links", []):
            url, _, anchor = link["url"].partition("#")
            assert url == base and "#" + anchor in RUNBOOK_ANCHORS
    assert sum(1 for p in panels if p.get("links")) >= len(panels) - 3


SEL = 'cluster=~"$cluster", job=~"$job", node=~"$node"'
AGENT_SEL = 'cluster=~"$cluster", instance=~"$agent"'
AGENT_NODE = "instance:spire_agent_node:info"
AGENT_JOIN = (
    f'* on (cluster, job, instance) group_left (node) {AGENT_NODE}{{cluster=~"$cluster", node=~"$node"}}'
)


def test_the_fleet_dashboard_scales_to_thousands_of_nodes() -> None:
    """A summary of stat panels, top-k and bottom-k tables that link to the node, no panel that
    draws one series per node, and no query that reads a raw per-node series: only recordings."""
    d = json.loads((ROOT / "dashboards" / "spire-health-fleet.json").read_text())
    rows = [p["title"] for p in d["panels"] if p["type"] == "row"]
    assert rows[0] == "Summary"
    first_row = []
    for p in d["panels"][1:]:
        if p["type"] == "row":
            break
        first_row.append(p)
    assert len(first_row) >= 5 and {p["type"] for p in first_row} == {"stat"}
    tables = [p for p in d["panels"] if p["type"] == "table"]
    assert len(tables) >= 6
    for p in tables:
        (t,) = p["targets"]
        assert t["format"] == "table" and t["instant"], p["title"]
        assert re.match(r"(topk|bottomk)\(10, ", t["expr"]), p["title"]
    for p in tables:
        (link,) = p["fieldConfig"]["defaults"]["links"]
        assert (
            link["url"].startswith("/d/spire-health-node/")
            and "var-node=${__data.fields.node}" in link["url"]
        )
    rules = yaml.safe_load((ROOT / "alerts" / "spire-health-exporter.rules.yml").read_text())
    recorded = {r["record"] for r in rules["groups"][0]["rules"]}
    for p in d["panels"]:
        if p["type"] == "row" or p["title"].startswith("SPIRE"):
            continue
        for t in p.get("targets", []):
            exporter_series = re.findall(r"(?<![:\w])spire_health_[a-z_]+", t["expr"])
            assert not exporter_series, (p["title"], t["expr"])
            assert set(re.findall(r"\b[a-z_]+:[a-z0-9_:]+", t["expr"])) <= recorded, p["title"]
    for p in d["panels"]:
        if p["type"] != "timeseries":
            continue
        for t in p["targets"]:
            grouped = re.findall(r"by \(([^)]*)\)", t["expr"])
            assert not any("node" in g.split(", ") for g in grouped), (p["title"], t["expr"])
            assert "{{node}}" not in t["legendFormat"], p["title"]


def test_every_recording_rule_is_read_by_an_alert_a_recording_or_a_panel() -> None:
    """A recording nothing reads costs a series per node or cluster for nothing."""
    groups = yaml.safe_load((ROOT / "alerts" / "spire-health-exporter.rules.yml").read_text())["groups"]
    rules = [r for g in groups for r in g["rules"]]
    boards = "".join(
        (ROOT / "dashboards" / n).read_text() for n in ("spire-health-fleet.json", "spire-health-node.json")
    )
    for rule in rules:
        if "record" not in rule:
            continue
        readers = [r["expr"] for r in rules if r is not rule]
        assert any(rule["record"] in expr for expr in readers) or rule["record"] in boards, rule["record"]
