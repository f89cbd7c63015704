"""Real SPIRE -> exporter -> real Prometheus (shipped rules) -> real Alertmanager -> webhook.

Also evaluates every dashboard query through Prometheus' HTTP API with its variables filled in.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, fill, metric_source, require, spire_names_emitted
from running import RunningExporter, fast_config

from harness.federation import Federation
from harness.local_spire import LocalSpire, SpireUnavailable, wait_until
from harness.prom_stack import PromStack, Webhook, binaries, get_json

pytestmark = [pytest.mark.spire, pytest.mark.prometheus]
LABELS = {"node": "test-node", "cluster": "test"}


@pytest.fixture
def stack(tmp_path):
    """A SPIRE of the test's own, federated with a second trust domain, so that every panel and
    rule has its series: the shared session SPIRE may have had its server restarted by an earlier
    test, and a restarted server never sees the agent attest (its rate-limiter panel stays empty)."""
    if None in binaries():
        require("prometheus and prometheus-alertmanager (Debian packages) are not installed")
    try:
        federation = Federation(remote_ca_ttl="1h").start()
    except SpireUnavailable as e:
        require(str(e))
    spire = federation.local
    try:
        if not spire.limit_agent_memory(512 * 2**20):
            require("cannot put the agent in a memory cgroup with a limit here")
        yield from _stack(spire, tmp_path)
    finally:
        federation.stop()


def _stack(
    spire: LocalSpire, tmp_path: Path
) -> Iterator[tuple[LocalSpire, RunningExporter, PromStack, Webhook]]:
    from alerts import generate

    # Only `for:` is shortened for the test; every expression is the shipped one.
    rules = tmp_path / "rules.yml"
    rules.write_text(
        generate.render(generate.load_config(ROOT / "alerts" / "config.yml"), "3s")[generate.RULES_FILE]
    )
    cfg = fast_config(
        f"unix://{spire.agent_socket}",
        **{
            "agent.process.cmdline_pattern": re.escape(f"{spire.dir}/agent/agent.conf"),
            "agent.health.url": f"http://127.0.0.1:{spire.health_port}",
            # The opt-in probes too: their panels and rules are checked like the others.
            "probes.debug_get_info.socket": f"unix://{spire.admin_socket}",
            "probes.sds_fetch_secrets.enabled": True,
        },
    )
    webhook = Webhook()
    # A second identity for the exporter with a 1-minute X.509 TTL, so that the agent renews an
    # SVID during the test and reports it in its expiring-SVIDs telemetry. Renewed at half its
    # lifetime, plus up to one 5 s sync, it stays clear of the rotation alert's 40 %.
    spire.create_entry(spiffe_id=f"spiffe://{spire.trust_domain}/short-lived", x509_ttl=60)
    with RunningExporter(cfg) as running:
        # SPIRE's own telemetry, each in its own job, as the rules' selectors expect.
        jobs = {
            "spire-agent": f"127.0.0.1:{spire.telemetry_port}",
            "spire-server": f"127.0.0.1:{spire.server_telemetry_port}",
        }
        prom = PromStack(tmp_path, running.url.removeprefix("http://"), rules, webhook, LABELS, jobs)
        try:
            yield spire, running, prom, webhook
        finally:
            prom.stop()
            webhook.close()


def wait_for_data(prom: PromStack) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        result = prom.query('count(rate(spire_health_probes_total{code="OK"}[1m]) > 0)')["data"]["result"]
        if result and float(result[0]["value"][1]) >= 5:
            return
        time.sleep(1)
    raise AssertionError("Prometheus never saw the exporter's probes")


def test_dashboards_rules_and_alert_delivery(stack) -> None:
    spire, _, prom, webhook = stack
    wait_for_data(prom)
    time.sleep(5)  # a few scrapes, so rate() over every series has two samples

    # Every shipped rule loaded and evaluates without error.
    groups = get_json(prom.url + "/api/v1/rules")["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    shipped = yaml.safe_load((ROOT / "alerts" / "spire-health-exporter.rules.yml").read_text())["groups"]
    assert len(rules) == sum(len(g["rules"]) for g in shipped)
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    assert not [r["name"] for r in rules if r["type"] == "alerting" and r["state"] != "inactive"]

    # Pausing the agent of this one-node cluster fires the probe-failure alert: a warning about the
    # node, to the ticket receiver with its labels and annotations. The deadline and not-serving
    # alerts the same freeze sets off are held back by the rules themselves once ProbeFailing's
    # condition holds (their `for` is shortened here, so they may fire first and then resolve).
    spire.pause_agent()
    try:
        # ProbeFailing needs two minutes of attempts with none OK, then its (shortened) for:.
        deadline = time.monotonic() + 200
        while not webhook.alerts("firing", "SpireAgentWorkloadAPIProbeFailing"):
            assert time.monotonic() < deadline, f"alerts never delivered: {webhook.received}"
            time.sleep(0.5)
        time.sleep(3)  # two more evaluations
        held_back = 'ALERTS{alertname=~"SpireAgentWorkloadAPIDeadlineExceeded|SpireAgentNotServing"}'
        assert not prom.query(held_back)["data"]["result"], prom.query(held_back)
        # One node is not a shared cause, so no node alert pages; but this cluster has one node,
        # whose failures are all of its probes: its error budget burns, and that may page.
        paged = {
            a["labels"]["alertname"] for path, p in webhook.received if path == "/pager" for a in p["alerts"]
        }
        assert paged <= {"SpireWorkloadAPIErrorBudgetBurnFast"}, paged
    finally:
        spire.resume_agent()
    path, alert = webhook.alerts("firing", "SpireAgentWorkloadAPIProbeFailing")[0]
    assert path == "/ticket"
    labels = alert["labels"]
    assert labels["severity"] == "warning" and labels["node"] == "test-node" and labels["cluster"] == "test"
    assert labels["job"] == "spire-health-exporter" and labels["rpc"] in {
        "fetch_x509_svid", "fetch_x509_bundles", "fetch_jwt_svid", "fetch_jwt_bundles", "validate_jwt_svid",
        "sds_fetch_secrets",
    }  # fmt: skip
    notes = alert["annotations"]
    assert notes["summary"] == "SPIRE agent Workload API probe failing"
    assert re.match(
        rf"^The {labels['rpc']} probe on node test-node made \d+ attempts in the last 2m and none succeeded",
        notes["description"],
    )
    assert notes["runbook_url"].startswith("https://") and notes["runbook_url"].endswith(
        "/docs/runbooks.md#spireagentworkloadapiprobefailing"
    )

    # The process still ran: a frozen agent is not a stopped one.
    assert not webhook.alerts("firing", "SpireAgentDown")

    # Resuming the agent resolves the probe-failure alert.
    deadline = time.monotonic() + 60
    while not webhook.alerts("resolved", "SpireAgentWorkloadAPIProbeFailing"):
        assert time.monotonic() < deadline, "the probe-failure alert never resolved"
        time.sleep(0.5)
    assert webhook.alerts("resolved", "SpireAgentWorkloadAPIProbeFailing")[0][0] == "/ticket"

    # SPIRE reports SVIDs due for renewal only when a sync finds one: wait for the first.
    deadline = time.monotonic() + 120
    while not prom.query('count(spire_agent_cache_manager_expiring_svids_sum{job="spire-agent"})')["data"][
        "result"
    ]:
        assert time.monotonic() < deadline, "the agent never reported an SVID due for renewal"
        time.sleep(1)
    time.sleep(2)  # and one more scrape, so rate() has two samples
    # The fleet dashboard reads it through a recording rule, one evaluation later.
    wait_until(
        lambda: prom.query("cluster:spire_agent_cache_manager_expiring_svids_sum:rate5m")["data"]["result"],
        30,
        "the recording of expiring SVIDs",
    )

    # Every query of every panel, and every variable, returns data.
    for name in ("spire-health-fleet.json", "spire-health-node.json"):
        dashboard = json.loads((ROOT / "dashboards" / name).read_text())
        node = "test-node" if "node" in name else ".*"
        queries = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
        assert len(queries) >= 15
        for title, expr in queries:
            answer = prom.query(fill(expr, node))
            assert answer["status"] == "success", (name, title)
            if "node_rpc:spire_health_probes_failed" in expr:
                continue  # only failing nodes have this series, and the agent runs again
            assert answer["data"]["result"], (
                f"{name}: panel {title!r} returned no data for {fill(expr, node)}"
            )
        for variable in dashboard["templating"]["list"][1:]:
            if variable["type"] == "constant":
                continue
            match = re.match(r"label_values\((.*), (\w+)\)$", variable["query"])
            assert match
            label = match.group(2)
            series = prom.query(fill(match.group(1), node))["data"]["result"]
            if variable["name"] == "agent":  # the agent telemetry targets on the chosen node
                assert {s["metric"][label] for s in series} == {f"127.0.0.1:{spire.telemetry_port}"}
                continue
            assert label == variable["name"]
            assert {s["metric"].get(label) for s in series} >= {LABELS.get(label, "spire-health-exporter")}
        for annotation in dashboard["annotations"]["list"]:
            assert prom.query(fill(annotation["expr"], node))["status"] == "success"

    # Every name of SPIRE's own telemetry that a rule or dashboard uses is one the real agent or
    # server emits, under the job the rules select.
    spire_names = spire_names_emitted("events_cache")
    assert {metric_source(m) for m in spire_names} == {"agent", "server"}
    for metric in sorted(spire_names):
        job = "spire-" + metric_source(metric)
        assert prom.query(f'count({{__name__=~"{metric}", job="{job}"}})')["data"]["result"], (
            f"SPIRE emits no {metric}"
        )
