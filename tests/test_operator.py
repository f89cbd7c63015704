"""The operator's path, in the one-node cluster: prometheus-operator v0.85.0 (built from the Go
module proxy) manages a Prometheus and an Alertmanager (Debian's binaries), reads the chart's
PodMonitor, then its ServiceMonitor, and its PrometheusRule, as installed by `helm install` with
the values a user sets. A frozen agent pages through the shipped Alertmanager example to a
webhook receiver; a missing registration entry notifies alone. SPIRE runs in its hardened
chart's production layout (harness/k8s/spire.yaml), scraped by that chart's own PodMonitors,
whose targets carry no node: kube-state-metrics (built from the Go module proxy) places them on
their node for the rules and dashboards. A stopped server and a closed agent telemetry port fire
the alerts over that telemetry.

Windows and `for:` are shortened through the chart's values (as a user tunes them) so the module
runs in minutes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import runbook_commands
import yaml
from conftest import NEEDS, ROOT, assert_down_leaves_nothing, fill

from harness.local_cluster import (
    EXPORTER_NAMESPACE,
    EXPORTER_RELEASE,
    EXPORTER_SELECTORS,
    NODE,
    NODE_ALIAS,
    REGISTRY_IMAGE_VALUES,
    SPIRE_IMAGE,
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
    "SpireAgentServerSyncFailing": {"window": "30s", "for": "5s"},
    "SpireAgentTelemetryMissing": {"for": "5s"},
    "SpireServerCAExpiringSoon": {"for": "5s"},
}
VALUES = {
    "image": REGISTRY_IMAGE_VALUES,
    # The opt-in probes too, so that their rules and panels are checked like the others: the
    # agent's Debug API through the chart's admin socket mount (its default agentGroup, 1000, is
    # the hardened chart's agent's), and Envoy's SDS.
    "probes": {"interval": "2s", "timeout": "1s", "sds_fetch_secrets": {"enabled": True}},
    "agentAdminSocket": {"enabled": True},
    "config": {"agent": {"sample_interval": "1s"}},
    "agentHealth": {"url": "http://$(HOST_IP):9982"},
    "podMonitor": {"enabled": True, "interval": f"{SCRAPE}s", "scrapeTimeout": f"{SCRAPE - 1}s"},
    "prometheusRule": {"enabled": True, "alerts": TUNED},
}
SHORT_LIVED_ID = f"spiffe://{TRUST_DOMAIN}/short-lived"
# This cluster's SPIRE federates with no other trust domain and runs SPIRE's default entry cache
# (full reloads): the federated-bundle series are tested with two real servers in
# tests/test_federation.py and tests/test_e2e_prometheus.py, the events-based cache's in
# tests/test_datastore.py.
UNSERVED_HERE = (
    "spire_health_federated_bundle_changed_timestamp_seconds",
    *(name for name, needs in NEEDS.items() if needs in ("federation", "events_cache")),
)
# The jobs of SPIRE's hardened chart's PodMonitors: <namespace>/<name>.
AGENT_JOB, SERVER_JOB = "spire-system/spire-agent", "spire-server/spire-server"
AGENT_TELEMETRY_PORT = 9988


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
    # SPIRE's own telemetry, through the hardened chart's PodMonitors: no node label on their
    # targets, and the agent's placed on its node through kube-state-metrics' kube_pod_info.
    for job in (AGENT_JOB, SERVER_JOB):
        wait_until(lambda j=job: up_targets(operator, j, "podMonitor/"), 60, f"the {job} telemetry target")
        for target in up_targets(operator, job, "podMonitor/"):
            assert "node" not in target["labels"] and target["labels"]["endpoint"] == "prom", target["labels"]
    (agent_target,) = up_targets(operator, AGENT_JOB, "podMonitor/")
    placed = wait_until(
        lambda: query(operator, "instance:spire_agent_node:info"), 120, "the agent target placed on its node"
    )
    assert [r["metric"]["node"] for r in placed] == [NODE]
    assert placed[0]["metric"]["instance"] == agent_target["labels"]["instance"]
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
    # kube-state-metrics reports a container's last termination only once it has terminated (the
    # runbook test stops the agent and finds it); the agent reports SVIDs due for renewal only once
    # a sync finds one, which a later test arranges.
    unserved = (
        "kube_pod_container_status_last_terminated_reason",
        "spire_agent_cache_manager_expiring_svids_sum",
        *UNSERVED_HERE,
    )
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
        ["pgrep", "-f", "spire-agent run -config /opt/spire/conf/agent/agent.conf"],
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
        lambda: query(operator, f'count(spire_agent_cache_manager_expiring_svids_sum{{job="{AGENT_JOB}"}})'),
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
                if any(name in expr for name in UNSERVED_HERE):
                    continue
                if not query(operator, expr):
                    empty.append((name, panel["title"], expr))
    assert not empty, empty


def firing(cluster: Cluster, alertname: str) -> list[Any]:
    """The alert's firing instances, each with its labels and its expression's value."""
    alerts = cluster.prometheus("api/v1/alerts")["data"]["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def until_firing(cluster: Cluster, alertname: str, timeout: float) -> list[Any]:
    found: list[Any] = wait_until(lambda: firing(cluster, alertname), timeout, alertname, interval=1)
    return found


def test_a_stopped_server_fires_the_agents_sync_alert_on_its_node(operator: Cluster) -> None:
    """The server's StatefulSet scaled to none: the agent's own telemetry counts failed syncs, and
    the alert over it names the node that kube_pod_info places the agent's pod on. Its data is on
    the node (the chart's volume claim), so the server comes back with its CA and entries."""
    wait_until(lambda: healthy(operator), 120, "every probe OK in Prometheus")
    operator.kubectl("scale", "statefulset/spire-server", "-n", "spire-server", "--replicas=0")
    started = time.monotonic()
    try:
        alerts = until_firing(operator, "SpireAgentServerSyncFailing", 240)
        print(f"\nserver stopped -> SpireAgentServerSyncFailing in {time.monotonic() - started:.0f} s")
        (alert,) = alerts
        labels = alert["labels"]
        assert labels["node"] == NODE and labels["job"] == AGENT_JOB and labels["namespace"] == "spire-system"
        failed = query(
            operator,
            "sum by (status) (increase(spire_agent_manager_sync_fetch_entries_updates"
            f'{{job="{AGENT_JOB}"}}[1m]))',
        )
        print(
            f"syncs by status in the last minute: {[(r['metric']['status'], r['value'][1]) for r in failed]}"
        )
        assert any(r["metric"]["status"] != "OK" and float(r["value"][1]) > 0 for r in failed), failed
    finally:
        operator.kubectl("scale", "statefulset/spire-server", "-n", "spire-server", "--replicas=1")
    operator.rollout("spire-server", "statefulset/spire-server")
    wait_until(lambda: not firing(operator, "SpireAgentServerSyncFailing"), 180, "the alert to resolve")
    wait_until(lambda: healthy(operator), 180, "every probe OK again")


def test_a_closed_agent_telemetry_port_fires_telemetry_missing(operator: Cluster) -> None:
    """The agent's telemetry port refuses connections (as with telemetry off): its target goes
    down, and the exporter, still running beside it, says what it no longer finds."""
    wait_until(lambda: not firing(operator, "SpireAgentTelemetryMissing"), 60, "no telemetry alert")
    rule = [
        "INPUT",
        "-p",
        "tcp",
        "--dport",
        str(AGENT_TELEMETRY_PORT),
        "-j",
        "REJECT",
        "--reject-with",
        "tcp-reset",
    ]
    operator.run(["iptables", "-I", *rule])
    started = time.monotonic()
    try:
        (alert,) = until_firing(operator, "SpireAgentTelemetryMissing", 180)
        print(
            f"\nagent telemetry port closed -> SpireAgentTelemetryMissing in "
            f"{time.monotonic() - started:.0f} s"
        )
        assert alert["labels"]["scope"] == "cluster" and float(alert["value"]) == 1
        (target,) = targets(operator, AGENT_JOB)
        assert target["health"] == "down", target
        # The exporter's own probes still pass: the agent serves, only its telemetry is gone.
        assert healthy(operator)
    finally:
        operator.run(["iptables", "-D", *rule])
    wait_until(lambda: not firing(operator, "SpireAgentTelemetryMissing"), 120, "the alert to resolve")


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


# The runbooks' commands that cannot run in this cluster, and why.
RUNBOOK_UNRUN = {
    "$SERVER federation show -trustDomain <trust domain>": "the cluster's SPIRE federates with no other "
    "trust domain (two real federated servers run in tests/test_federation.py)",
    "$SERVER bundle list -id spiffe://<trust domain> -format spiffe": "no federated trust domain here",
    "curl -k https://<endpoint>/": "no federated bundle endpoint here",
    "$SERVER bundle set -format spiffe -id spiffe://<trust domain>": "reads a federated trust domain's "
    "bundle that the operator has in hand",
}
# Run after the others, in this order: they stop the agent or delete pods.
RUNBOOK_LAST = (
    "kill -QUIT $PID",
    "kubectl -n spire-system logs $AGENT --previous",
    "kubectl -n spire-system delete $AGENT",
    "kubectl -n spire-system delete $EXP",
)


def runbook_outcome(cluster: Cluster, preamble: str, command: str) -> tuple[int, str]:
    script = f"export PATH={cluster.bin}:$PATH KUBECONFIG={cluster.kubeconfig}\n{preamble}\n{command}\n"
    done = cluster.run(["bash", "-c", script], timeout=180, check=False)
    return done.returncode, done.stdout + done.stderr


def ran_as_meant(command: str, rc: int, output: str) -> bool:
    """Exit 0; or a final grep that found nothing in a healthy cluster; or no previous container
    of an exporter that never restarted."""
    if rc == 0:
        return True
    nothing_found = rc == 1 and command.rsplit("|", 1)[-1].strip().startswith("grep") and not output.strip()
    never_restarted = rc == 1 and "--previous" in command and "previous terminated container" in output
    return nothing_found or never_restarted


def test_every_runbook_command_runs_in_the_cluster(operator: Cluster) -> None:
    """Every shell command of docs/runbooks.md, its placeholders filled from this cluster, run as
    an operator's workstation runs it (kubectl against the cluster) or, for what the runbooks run
    in the node debug pod's shell, through `kubectl debug node/$NODE --profile=sysadmin` itself."""
    wait_until(lambda: healthy(operator), 180, "every probe OK in Prometheus")
    commands = runbook_commands.extract((ROOT / "docs" / "runbooks.md").read_text())
    texts = [c.text for c in commands]
    assert set(RUNBOOK_UNRUN) <= set(texts) and set(RUNBOOK_LAST) <= set(texts), "stale lists in this test"
    # A Workload API client on the node, for the runbooks' "a suspect PID": the exporter.
    (exporter_pid,) = subprocess.run(
        ["pgrep", "-f", "spire-health-exporter --config.file=/etc/spire-health-exporter/config.yml"],
        capture_output=True,
        text=True,
    ).stdout.split()
    fill = {"<node>": NODE, "<pid>": exporter_pid}
    # The variables the runbooks set on the workstation, and in the debug shell.
    preamble = "\n".join(c.text for c in commands if c.assignment and not c.in_debug_shell)
    for placeholder, value in fill.items():
        preamble = preamble.replace(placeholder, value)
    shell_preamble = "".join(f"{c.text}\n" for c in commands if c.assignment and c.in_debug_shell)
    agents = operator.spire_server("agent", "list")
    fill["<the agent's SPIFFE ID>"] = re.findall(r"SPIFFE ID\s*:\s*(\S+)", agents)[0]

    def filled(text: str) -> str:
        for placeholder, value in fill.items():
            text = text.replace(placeholder, value)
        assert not re.search(r"<[a-z][^>]*>", text), f"a placeholder this test cannot fill: {text}"
        return text

    outcomes: list[tuple[str, int, str]] = []
    # The node debug pod: the runbooks' `-it` shell, given its commands as `sh -c` (a test has no
    # terminal), from an image the node has (the cluster pulls nothing from the internet).
    (debug,) = [c.text for c in commands if c.text.startswith("kubectl debug node/")]

    def debug_shell(session: str) -> tuple[int, str]:
        local = debug.replace(" -it ", " ").replace("busybox:1.36", SPIRE_IMAGE)
        local = local.replace("-- sh", "-- sh -c " + shlex.quote(shell_preamble + session))
        rc, created = runbook_outcome(operator, preamble, local)
        (name,) = re.findall(r"Creating debugging pod (\S+)", created)
        operator.kubectl(
            "wait", "--for=jsonpath={.status.phase}=Succeeded", f"pod/{name}", "--timeout=120s", timeout=130
        )
        return rc, created + operator.kubectl("logs", f"pod/{name}")

    inside = [
        c.text for c in commands if c.in_debug_shell and not c.assignment and c.text not in RUNBOOK_LAST
    ]
    session = "".join(f"echo '>>> {i}'; {filled(t)}; echo \"<<< $?\"\n" for i, t in enumerate(inside))
    rc, output = debug_shell(session)
    outcomes.append((debug, rc, output))
    for i, text in enumerate(inside):
        found = re.search(rf">>> {i}\n(.*?)<<< (\d+)", output, re.S)
        assert found, (text, output[-2000:])
        outcomes.append((text, int(found.group(2)), found.group(1)))
    for command in commands:
        if (
            command.assignment
            or command.in_debug_shell
            or command.text in (debug, *RUNBOOK_UNRUN, *RUNBOOK_LAST)
        ):
            continue
        rc, output = runbook_outcome(operator, preamble, filled(command.text))
        outcomes.append((command.text, rc, output))
    # Last, what stops the agent or deletes pods: a goroutine dump lands in the previous
    # container's log, and the deleted pods come back.
    kill, previous, *deletes = RUNBOOK_LAST
    rc, output = debug_shell(f'{kill}; echo "<<< $?"')
    outcomes.append((kill, 0 if "<<< 0" in output else 1, output))
    dumped = wait_until(
        lambda: "goroutine " in (out := runbook_outcome(operator, preamble, previous))[1] and out,
        120,
        "the goroutine dump in the agent's previous log",
    )
    outcomes.append((previous, *dumped))
    # The one metric the rules read that only a terminated container has, now served.
    wait_until(
        lambda: query(operator, 'kube_pod_container_status_last_terminated_reason{container="spire-agent"}'),
        60,
        "kube-state-metrics' record of the agent's last termination",
    )
    for text in deletes:
        outcomes.append((text, *runbook_outcome(operator, preamble, text)))
    failed = [(t, rc, out[-600:]) for t, rc, out in outcomes if not ran_as_meant(t, rc, out)]
    for t, rc, _ in outcomes:
        print(f"exit {rc}: {t}")
    print(f"{len(outcomes)} run, {len(RUNBOOK_UNRUN)} not run here: {sorted(RUNBOOK_UNRUN)}")
    assert not failed, failed
    assert len(outcomes) + len(RUNBOOK_UNRUN) == len([c for c in commands if not c.assignment])
    assert shell_preamble.count("\n") == 1, shell_preamble
    operator.rollout("spire-system", "daemonset/spire-agent")
    operator.rollout(EXPORTER_NAMESPACE, f"daemonset/{EXPORTER_RELEASE}")
    wait_until(lambda: healthy(operator), 240, "every probe OK after the runbooks")


SERVER_DATA = "/run/spire/server-data"  # the server's data volume on the node (harness/k8s/spire.yaml)
SHORT_CA_TTL = 120  # seconds: the alert fires about 10 s before the CA expires


def restart_server_with_ca_ttl(cluster: Cluster, ttl: str) -> None:
    config = cluster.kubectl_json("get", "configmap", "spire-server", "-n", "spire-server")
    config["data"]["server.conf"] = re.sub(
        r'ca_ttl = "[^"]*"', f'ca_ttl = "{ttl}"', config["data"]["server.conf"]
    )
    cluster.kubectl("replace", "-f", "-", stdin=json.dumps(config))
    cluster.kubectl("delete", "pod", "spire-server-0", "-n", "spire-server", timeout=120)
    cluster.rollout("spire-server", "statefulset/spire-server")
    wait_until(lambda: "Server is healthy" in cluster.spire_server("healthcheck"), 60, "the server healthy")


def test_a_stuck_rotation_of_a_short_lived_ca_fires_server_ca_expiring_soon(operator: Cluster) -> None:
    """SPIRE's own server telemetry on a real cause: a CA rotation forced (`localauthority x509
    prepare` and `activate`) under a 2-minute CA TTL, then the server's data volume made read-only
    (as a full or read-only volume leaves it). The disk KeyManager cannot write the next CA's key,
    so the CA is not rotated, and SpireServerCAExpiringSoon fires before it expires. Writable
    again, the server prepares and activates the next CA at once, and the alert resolves."""
    wait_until(lambda: healthy(operator), 120, "every probe OK in Prometheus")
    # The last test on this cluster: the short CA TTL stays until the cluster goes.
    restart_server_with_ca_ttl(operator, f"{SHORT_CA_TTL}s")
    prepared = operator.spire_server("localauthority", "x509", "prepare")
    (authority,) = re.findall(r"Authority ID:\s*(\S+)", prepared)
    operator.spire_server("localauthority", "x509", "activate", "-authorityID", authority)
    activated = time.monotonic()
    operator.run(["chmod", "0555", SERVER_DATA])
    try:
        (alert,) = until_firing(operator, "SpireServerCAExpiringSoon", 240)
        left = float(alert["value"])
        after = time.monotonic() - activated
        print(
            f"\n{SHORT_CA_TTL} s CA activated -> SpireServerCAExpiringSoon after {after:.0f} s, "
            f"{left:.0f} s left"
        )
        # Past the point SPIRE activates the next CA (a sixth of its lifetime left).
        assert left < SHORT_CA_TTL / 6 and alert["labels"]["job"] == SERVER_JOB
        failed = query(operator, '{__name__=~"spire_server_ca_manager_x509_ca_prepare.*", status!="OK"}')
        shown = [(r["metric"]["__name__"], r["metric"]["status"], r["value"][1]) for r in failed]
        print(f"the server's failed CA preparations: {shown}")
        assert any(r["metric"]["__name__"] == "spire_server_ca_manager_x509_ca_prepare" for r in failed)
    finally:
        operator.run(["chmod", "0755", SERVER_DATA])
    wait_until(lambda: not firing(operator, "SpireServerCAExpiringSoon"), 120, "the alert to resolve")
    wait_until(lambda: healthy(operator), 240, "every probe OK again")


def test_down_leaves_no_process_mount_cgroup_or_device(cluster: Cluster) -> None:
    assert_down_leaves_nothing(cluster)
