"""Deployment: the Helm chart (lint, render, offline schema validation, properties), the systemd
unit, and the container's install path (wheel -> fresh venv -> non-root UID -> real agent)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from conftest import K8S_VERSION, ROOT, helm, record_output, require, tool, umbrella_chart

from exporter import config as exporter_config
from harness.local_spire import free_port
from harness.paths import CHART
from harness.promtool_variants import variant

RUNBOOKS = "https://github.com/spire-health-exporter/spire-health-exporter/blob/main/docs/runbooks.md"
ALL_ON = {
    "podMonitor.enabled": "true",
    "prometheusRule.enabled": "true",
    "dashboards.enabled": "true",
    "clusterSPIFFEID.enabled": "true",
}
VALUE_SETS = {
    "defaults": {},
    "everything": ALL_ON,
    "service-monitor": {"serviceMonitor.enabled": "true", "prometheusRule.enabled": "true"},
    "secured": {
        "podMonitor.enabled": "true",
        "podMonitor.scheme": "https",
        "podMonitor.tlsConfig.insecureSkipVerify": "true",
        "webConfig.secretName": "exporter-web",
        "image.registry": "ghcr.io",
        "image.digest": "sha256:" + "ab" * 32,
        "updateStrategy.rollingUpdate.maxUnavailable": "10%",
        "agentHealth.url": "http://$(HOST_IP):9982",
        "tolerations[0].key": "node-role.kubernetes.io/control-plane",
        "tolerations[0].operator": "Exists",
    },
    "csi-no-process": {"agentSocket.mode": "csi", "agentProcess.enabled": "false"},
    "process-without-cgroup": {"agentCgroup.enabled": "false", "agentHealth.url": "http://127.0.0.1:9982"},
    "tuned": {
        "probes.interval": "30s",
        "probes.timeout": "10s",
        "probes.fetch_jwt_svid_roundtrip.enabled": "true",
        "config.limits.max_spiffe_ids": "3",
        "image.tag": "1.2.3",
        "priorityClassName": "system-node-critical",
    },
}


def helm_template(
    *args: str, release: str = "she", chart: Path = CHART, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`helm template` of a chart for the Kubernetes version the offline schemas are for (helm
    template assumes an old one)."""
    command = [helm(), "template", release, str(chart), "--kube-version", K8S_VERSION, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=cwd)


def documents(done: subprocess.CompletedProcess[str]) -> list[dict]:
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def render(values: dict[str, str | float]) -> list[dict]:
    """The chart rendered with `values`: strings through --set, numbers through --set-json
    (--set keeps a float a string, which the schema rightly rejects)."""
    args = ["--namespace", "spire-system"]
    for key, value in values.items():
        args += ["--set", f"{key}={value}"] if isinstance(value, str) else ["--set-json", f"{key}={value}"]
    return documents(helm_template(*args))


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def rendered_config(values: dict[str, str | float]) -> str:
    """The exporter's config.yml as the chart renders it with `values`."""
    (cm,) = [d for d in of_kind(render(values), "ConfigMap") if "config.yml" in d["data"]]
    return cm["data"]["config.yml"]


def daemonset(docs: list[dict]) -> dict:
    (ds,) = of_kind(docs, "DaemonSet")
    return ds


@pytest.mark.parametrize("name", VALUE_SETS)
def test_chart_lints_strictly(name) -> None:
    args = [helm(), "lint", "--strict", str(CHART), "--kube-version", K8S_VERSION]
    for key, value in VALUE_SETS[name].items():
        args += ["--set", f"{key}={value}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_manifests_validate_offline(name) -> None:
    docs = render(VALUE_SETS[name])
    crds = {"PodMonitor", "ServiceMonitor", "PrometheusRule", "ClusterSPIFFEID"}
    for doc in docs:
        if doc["kind"] in crds:
            # Not Kubernetes' own kinds: their shape is checked by the property tests below.
            assert doc["apiVersion"] in ("monitoring.coreos.com/v1", "spire.spiffe.io/v1alpha1")
            assert doc["metadata"]["name"] and doc["spec"]
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # The exporter itself accepts the configuration the chart writes.
    (cm,) = [d for d in of_kind(docs, "ConfigMap") if "config.yml" in d["data"]]
    cfg = exporter_config.build(yaml.safe_load(cm["data"]["config.yml"]), environ={})
    assert cfg.endpoint == "unix:///spiffe-workload-api/spire-agent.sock"


def test_socket_mounts_read_only_from_host_path_or_csi() -> None:
    ds = daemonset(render({}))
    pod = ds["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert volumes["agent-socket"]["hostPath"] == {"path": "/run/spire/agent-sockets", "type": "Directory"}
    assert mounts["agent-socket"]["readOnly"] is True
    csi = daemonset(render({"agentSocket.mode": "csi"}))["spec"]["template"]["spec"]
    volume = next(v for v in csi["volumes"] if v["name"] == "agent-socket")
    assert volume == {"name": "agent-socket", "csi": {"driver": "csi.spiffe.io", "readOnly": True}}


def test_admin_socket_only_when_asked_read_only_with_the_agents_group() -> None:
    off = daemonset(render({}))["spec"]["template"]["spec"]
    assert all(v["name"] != "agent-admin-socket" for v in off["volumes"])
    assert "supplementalGroups" not in off["securityContext"]
    assert "debug_get_info" not in rendered_config({})
    values = {"agentAdminSocket.enabled": "true"}
    pod = daemonset(render(values))["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == "agent-admin-socket")
    assert volume["hostPath"] == {"path": "/run/spire/agent/sockets/csi.spiffe.io/admin", "type": "Directory"}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "agent-admin-socket")
    assert mount == {"name": "agent-admin-socket", "mountPath": "/spire-agent-admin", "readOnly": True}
    assert pod["securityContext"]["supplementalGroups"] == [1000]
    assert pod["securityContext"]["runAsUser"] == 65532
    probes = yaml.safe_load(rendered_config(values))["probes"]
    assert probes["debug_get_info"] == {"socket": "unix:///spire-agent-admin/admin.sock"}


def test_host_pid_and_cgroup_mount_only_when_asked() -> None:
    pod = daemonset(render({}))["spec"]["template"]["spec"]
    assert pod["hostPID"] is True
    cgroup = next(v for v in pod["volumes"] if v["name"] == "host-cgroup")
    assert cgroup["hostPath"]["path"] == "/sys/fs/cgroup"
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "host-cgroup")
    assert mount["readOnly"] is True
    off = daemonset(render({"agentProcess.enabled": "false"}))["spec"]["template"]["spec"]
    assert "hostPID" not in off
    assert all(v["name"] != "host-cgroup" for v in off["volumes"])
    no_cgroup = daemonset(render({"agentCgroup.enabled": "false"}))["spec"]["template"]["spec"]
    assert no_cgroup["hostPID"] is True and all(v["name"] != "host-cgroup" for v in no_cgroup["volumes"])


def test_least_privilege_security_context_and_health_probes() -> None:
    pod = daemonset(render({}))["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    container = pod["containers"][0]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "metrics", "scheme": "HTTP"}
    assert container["resources"]["limits"]["memory"] and container["resources"]["requests"]["cpu"]
    # Like the hardened chart's agent: no tolerations unless given (the agent's own, then).
    assert "tolerations" not in pod


def test_monitors_relabel_the_node_name() -> None:
    (pm,) = of_kind(render(ALL_ON), "PodMonitor")
    docs = render(VALUE_SETS["service-monitor"])
    (sm,) = of_kind(docs, "ServiceMonitor")
    for endpoint in (pm["spec"]["podMetricsEndpoints"][0], sm["spec"]["endpoints"][0]):
        assert endpoint["relabelings"][0] == {
            "sourceLabels": ["__meta_kubernetes_pod_node_name"],
            "targetLabel": "node",
        }
        assert endpoint["scrapeTimeout"] == "10s" and endpoint["scheme"] == "http"
    (svc,) = of_kind(docs, "Service")
    assert svc["spec"]["clusterIP"] == "None"
    assert not of_kind(render({}), "PodMonitor") and not of_kind(render({}), "PrometheusRule")


def test_one_monitor_at_a_time() -> None:
    done = helm_template("--set", "podMonitor.enabled=true", "--set", "serviceMonitor.enabled=true")
    assert done.returncode != 0 and "enable one of podMonitor and serviceMonitor" in done.stderr


def test_secured_endpoint_image_rollout_and_agent_health_wiring() -> None:
    docs = render(VALUE_SETS["secured"])
    ds = daemonset(docs)
    pod = ds["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/spire-health-exporter:0.1.0@sha256:" + "ab" * 32
    assert ds["spec"]["updateStrategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "10%"},
    }
    assert pod["tolerations"] == [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]
    # The web config comes from the Secret, and the kubelet checks /healthz over HTTPS.
    assert "--web.config.file=/etc/spire-health-exporter/web/web-config.yml" in container["args"]
    assert {"name": "web-config", "secret": {"secretName": "exporter-web"}} in pod["volumes"]
    assert container["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    (pm,) = of_kind(docs, "PodMonitor")
    endpoint = pm["spec"]["podMetricsEndpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["tlsConfig"] == {"insecureSkipVerify": True}
    # The agent's health port on the node's IP: Kubernetes fills $(HOST_IP) from the downward API.
    env = {e["name"]: e for e in container["env"]}
    assert env["HOST_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert env["SPIRE_HEALTH_EXPORTER_AGENT_HEALTH_URL"]["value"] == "http://$(HOST_IP):9982"
    cfg = exporter_config.build(
        yaml.safe_load(of_kind(docs, "ConfigMap")[0]["data"]["config.yml"]),
        environ={"SPIRE_HEALTH_EXPORTER_AGENT_HEALTH_URL": "http://10.0.0.7:9982"},
    )
    assert cfg.agent.health.url == "http://10.0.0.7:9982"
    # With basic auth the kubelet can't authenticate, so it checks the port.
    basic = daemonset(render({**VALUE_SETS["secured"], "webConfig.basicAuth": "true"}))
    probe = basic["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    assert probe["tcpSocket"] == {"port": "metrics"} and "httpGet" not in probe


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("service.port=abc", "at '/service/port': got string, want integer"),
        ("podMonitor.scheme=ftp", "at '/podMonitor/scheme'"),
        (
            "prometheusRule.alerts.SpireAgentDown.for=5",
            "at '/prometheusRule/alerts/SpireAgentDown/for': got number",
        ),
        ("probes.interval=fast", "at '/probes/interval'"),
        ("imagePullPolicy=Always", "additional properties 'imagePullPolicy' not allowed"),
    ],
)
def test_the_schema_rejects_a_wrong_value_with_its_path(setting: str, message: str) -> None:
    done = subprocess.run(
        [helm(), "lint", "--strict", str(CHART), "--kube-version", K8S_VERSION, "--set", setting],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and message in done.stdout + done.stderr, done.stdout + done.stderr


def test_the_schema_describes_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())

    def walk(values: dict, node: dict, path: str) -> None:
        for key, value in values.items():
            props = node.get("properties", {})
            assert key in props or isinstance(node.get("additionalProperties"), dict), f"{path}{key}"
            child = props.get(key) or node["additionalProperties"]
            if isinstance(value, dict) and value and "properties" in child:
                walk(value, child, f"{path}{key}.")

    walk(yaml.safe_load((CHART / "values.yaml").read_text()), schema, "")


def test_chart_readme_is_generated_from_the_values() -> None:
    done = subprocess.run([sys.executable, "-m", "harness.chart_readme", "--check"], cwd=ROOT)
    assert done.returncode == 0, (
        "deploy/helm/spire-health-exporter/README.md is stale: run python -m harness.chart_readme"
    )
    readme = (CHART / "README.md").read_text()
    for key in (
        "`agentHealth.url`",
        "`prometheusRule.alerts.SpireAgentDown`",
        "`updateStrategy.rollingUpdate.maxUnavailable`",
    ):
        assert key in readme


@pytest.mark.parametrize("monitor", ["PodMonitor", "ServiceMonitor"])
@pytest.mark.parametrize("name_override", ["", "spire-exporter"])
def test_the_rules_select_the_job_each_monitor_gives(
    monitor: str, name_override: str, tmp_path: Path
) -> None:
    """prometheus-operator takes the job from the pod's (PodMonitor) or Service's (ServiceMonitor)
    label that jobLabel names; the rendered rules must select exactly that, and page on series
    carrying exactly the labels such a target has."""
    enabled = {"podMonitor.enabled": "false", f"{monitor[0].lower()}{monitor[1:]}.enabled": "true"}
    docs = render({**ALL_ON, **enabled, **({"nameOverride": name_override} if name_override else {})})
    (mon,) = of_kind(docs, monitor)
    svc = of_kind(docs, "Service")[0] if monitor == "ServiceMonitor" else None
    labelled = daemonset(docs)["spec"]["template"]["metadata"] if svc is None else svc["metadata"]
    job = labelled["labels"][mon["spec"]["jobLabel"]]
    assert job == (name_override or "spire-health-exporter")
    (rule,) = of_kind(docs, "PrometheusRule")
    spec = yaml.safe_dump(rule["spec"], width=10000)
    selected = set(re.findall(r'job="([^"]+)"', spec))
    # kube-state-metrics has a job of its own; SPIRE's own telemetry the jobs of the hardened
    # chart's PodMonitors (<namespace>/<name>), or a job named for it.
    assert selected == {job, "kube-state-metrics"}
    spire = {m for m in re.findall(r'job=~"([^"]+)"', spec) if "spire" in m}
    assert spire == {"(.+/)?spire-agent", "(.+/)?spire-server"}
    for matcher, jobs in (
        ("(.+/)?spire-agent", ("spire-system/spire-agent", "spire-agent")),
        ("(.+/)?spire-server", ("spire-server/spire-server", "spire-server")),
    ):
        assert all(re.fullmatch(matcher, j) for j in jobs) and not re.fullmatch(matcher, job)

    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule["spec"]))
    # The labels prometheus-operator gives a target of this monitor, and the chart's node relabeling.
    target = {"job": job, "namespace": "spire-system", "pod": "she-x7k2p", "container": "exporter",
              "endpoint": "metrics", "instance": "10.244.1.7:9989", "node": "node-a"}  # fmt: skip
    if svc is not None:
        target["service"] = svc["metadata"]["name"]
    labels = ",".join(f'{k}="{v}"' for k, v in target.items())
    timed_out = 'rpc="fetch_x509_svid",code="DEADLINE_EXCEEDED"'
    failing = {"severity": "warning", "scope": "node", **target, "rpc": "fetch_x509_svid"}
    description = (
        "The fetch_x509_svid probe on node node-a made 8 attempts in the last 2m and none succeeded: "
        "workloads there cannot get this identity call answered."
    )
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "30s",
                "input_series": [
                    {"series": f"up{{{labels}}}", "values": "1x30"},
                    {
                        "series": f"spire_health_probes_total{{{labels},{timed_out}}}",
                        "values": "0+2x30",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "10m",
                        "alertname": "SpireAgentWorkloadAPIProbeFailing",
                        "exp_alerts": [
                            {
                                "exp_labels": failing,
                                "exp_annotations": {
                                    "summary": "SPIRE agent Workload API probe failing",
                                    "description": description,
                                    "runbook_url": RUNBOOKS + "#spireagentworkloadapiprobefailing",
                                },
                            }
                        ],
                    },
                    {"eval_time": "15m", "alertname": "SpireHealthExporterAbsent", "exp_alerts": []},
                ],
            }
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests))
    done = subprocess.run(
        [tool("promtool"), "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("monitor", "scrape_interval"),
    [("PodMonitor", "15s"), ("PodMonitor", "30s"), ("PodMonitor", "60s"), ("ServiceMonitor", "30s")],
)
def test_every_alert_fires_and_stays_silent_on_chart_targets(
    monitor: str, scrape_interval: str, tmp_path: Path
) -> None:
    """alerts/tests.yml against the chart's rendered PrometheusRule, its series resampled to the
    scrape interval and labelled as prometheus-operator labels this chart's targets."""
    docs = render({"prometheusRule.enabled": "true", f"{monitor[0].lower()}{monitor[1:]}.enabled": "true"})
    (rule,) = of_kind(docs, "PrometheusRule")
    (mon,) = of_kind(docs, monitor)
    endpoints = mon["spec"]["podMetricsEndpoints" if monitor == "PodMonitor" else "endpoints"]
    (container,) = daemonset(docs)["spec"]["template"]["spec"]["containers"]
    extra = {"container": container["name"], "endpoint": endpoints[0]["port"]}
    if monitor == "ServiceMonitor":
        (svc,) = of_kind(docs, "Service")
        extra["service"] = svc["metadata"]["name"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule["spec"]))
    tests = yaml.safe_load((ROOT / "alerts" / "tests.yml").read_text())
    tests["rule_files"] = ["rules.yml"]
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(variant(tests, scrape_interval, extra), width=10**6))
    done = subprocess.run(
        [tool("promtool"), "test", "rules", "tests.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr


def test_chart_values_drive_the_rules(tmp_path: Path) -> None:
    """Selector, extra labels, runbook URL, per-alert switch, threshold, window and for: all come
    from values; promtool accepts what they render."""
    docs = render(
        {
            "prometheusRule.enabled": "true",
            "prometheusRule.jobSelector": 'job="node-exporters"\\, team="id"',
            "prometheusRule.additionalRuleLabels.team": "identity",
            # Severity is each alert's own value, which additionalRuleLabels cannot set twice.
            "prometheusRule.additionalRuleLabels.severity": "critical",
            "prometheusRule.alerts.SpireAgentDown.severity": "critical",
            "prometheusRule.alerts.SpireAgentsFailing.min_nodes": 5,
            "prometheusRule.runbookURL": "https://wiki.example.com/spire",
            "prometheusRule.alerts.SpireAgentRestarting.enabled": "false",
            "prometheusRule.alerts.SpireAgentMemoryNearLimit.fraction": 0.75,
            "prometheusRule.alerts.SpireAgentMemoryNearLimit.for": "42m",
            "prometheusRule.alerts.SpireAgentWorkloadAPIErrorRatioHigh.window": "30m",
        }
    )
    (rule,) = of_kind(docs, "PrometheusRule")
    records = {r["record"]: r for r in rule["spec"]["groups"][0]["rules"]}
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][1]["rules"]}
    assert "SpireAgentRestarting" not in alerts and len(alerts) == len(generate_alerts_names()) - 1
    memory = alerts["SpireAgentMemoryNearLimit"]
    assert memory["expr"].endswith("> 0.75") and memory["for"] == "42m"
    assert (
        'spire_health_agent_cgroup_memory_working_set_bytes{job="node-exporters", team="id"}'
        in memory["expr"]
    )
    assert "node:spire_health_probe_errors:ratio_rate30m" in records
    assert "ratio_rate30m" in alerts["SpireAgentWorkloadAPIErrorRatioHigh"]["expr"]
    assert alerts["SpireAgentDown"]["labels"]["severity"] == "critical"
    assert alerts["SpireAgentNotServing"]["labels"]["severity"] == "warning"
    assert ">= 5" in alerts["SpireAgentsFailing"]["expr"] and ">= 5" in alerts["SpireAgentDown"]["expr"]
    for alert in alerts.values():
        assert alert["labels"]["team"] == "identity"
        assert (
            alert["annotations"]["runbook_url"] == "https://wiki.example.com/spire#" + alert["alert"].lower()
        )
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rule["spec"]))
    done = subprocess.run(
        [tool("promtool"), "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def generate_alerts_names() -> set[str]:
    shipped = yaml.safe_load((ROOT / "alerts" / "spire-health-exporter.rules.yml").read_text())
    return {r["alert"] for r in shipped["groups"][1]["rules"]}


def test_dashboards_take_the_runbooks_and_objective_from_the_values() -> None:
    docs = render(
        {
            **ALL_ON,
            "prometheusRule.runbookURL": "https://wiki.example.com/spire",
            "prometheusRule.sloObjective": 0.995,
        }
    )
    (dashboards,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboards")]
    for name in ("spire-health-fleet.json", "spire-health-node.json"):
        board = json.loads(dashboards["data"][name])
        (objective,) = [v for v in board["templating"]["list"] if v["name"] == "slo_objective"]
        assert objective["query"] == "0.995"
        links = [link["url"] for p in board["panels"] for link in p.get("links", [])]
        assert links and all(url.startswith("https://wiki.example.com/spire#") for url in links), name
        assert board["links"][0]["url"] == "https://wiki.example.com/spire"


def test_prometheus_rule_and_dashboards_equal_the_generated_ones() -> None:
    docs = render(ALL_ON)
    (rule,) = of_kind(docs, "PrometheusRule")
    shipped = yaml.safe_load((ROOT / "alerts" / "spire-health-exporter.rules.yml").read_text())
    assert rule["spec"]["groups"] == shipped["groups"]
    (dashboards,) = [d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-dashboards")]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    for name in ("spire-health-fleet.json", "spire-health-node.json"):
        assert json.loads(dashboards["data"][name]) == json.loads((ROOT / "dashboards" / name).read_text())


def test_cluster_spiffe_id_selects_the_exporter_pods() -> None:
    docs = render(ALL_ON)
    (cs,) = of_kind(docs, "ClusterSPIFFEID")
    # The class the hardened chart's controller manager watches in its production install:
    # "<release namespace>-<release name>", release spire in spire-mgmt.
    assert cs["spec"]["className"] == "spire-mgmt-spire"
    assert cs["spec"]["spiffeIDTemplate"] == (
        "spiffe://{{ .TrustDomain }}/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}"
    )
    pod_labels = daemonset(docs)["spec"]["template"]["metadata"]["labels"]
    assert cs["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert cs["spec"]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "spire-system"}


def test_tuned_values_reach_the_exporter_config() -> None:
    docs = render(VALUE_SETS["tuned"])
    (cm,) = of_kind(docs, "ConfigMap")
    cfg = exporter_config.build(yaml.safe_load(cm["data"]["config.yml"]), environ={})
    assert cfg.each["fetch_x509_svid"].interval == 30.0 and cfg.each["fetch_x509_svid"].timeout == 10.0
    assert cfg.each["fetch_jwt_svid_roundtrip"].enabled
    assert cfg.limits.max_spiffe_ids == 3
    pod = daemonset(docs)["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "spire-health-exporter:1.2.3"
    assert pod["priorityClassName"] == "system-node-critical"


def test_systemd_unit_verifies() -> None:
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        require("systemd-analyze is not installed")
    unit = (ROOT / "deploy" / "systemd" / "spire-health-exporter.service").read_text()
    for directive in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "User=spire-health-exporter",
    ):
        assert directive in unit
    # verify checks that ExecStart exists; point it at this environment's installed command.
    installed = shutil.which("spire-health-exporter") or str(
        Path(sys.executable).parent / "spire-health-exporter"
    )
    with_binary = unit.replace("/opt/spire-health-exporter/bin/spire-health-exporter", installed)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"spire-health-exporter-{os.getpid()}.service"
    try:
        path.write_text(with_binary)
        done = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)
    finally:
        path.unlink(missing_ok=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


NONROOT = 65532


@pytest.mark.spire
def test_wheel_installs_into_a_fresh_venv_and_runs_as_non_root_against_the_real_agent(healthy_spire) -> None:
    if os.getuid() != 0:
        require("switching to a non-root UID needs root")
    # pytest's own temporary directories are private to root; this one must be reachable.
    tmp_path = Path(tempfile.mkdtemp(prefix="she-wheel-"))
    try:
        _wheel_install_and_run(healthy_spire, tmp_path)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)


def _wheel_install_and_run(spire, tmp_path: Path) -> None:
    python = shutil.which("python3", path="/usr/bin") or sys.executable
    wheels = tmp_path / "wheelhouse"
    # Build the wheel and fetch its dependencies as the builder (the image's first stage does this).
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(ROOT)], check=True, timeout=300)
    (wheel,) = wheels.glob("spire_health_exporter-*.whl")
    subprocess.run([*pip, "download", "-d", str(wheels), str(wheel)], check=True, timeout=300)
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, NONROOT, NONROOT)
    for path in (tmp_path, wheels, *wheels.iterdir()):
        path.chmod(0o755)
    as_nonroot = {
        "user": NONROOT,
        "group": NONROOT,
        "extra_groups": [],
        "env": {"HOME": str(home), "PATH": "/usr/bin:/bin"},
    }
    venv = home / "venv"
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120, **as_nonroot)
    subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", "--no-index", "--find-links", str(wheels), str(wheel)],
        check=True, timeout=300, **as_nonroot,
    )  # fmt: skip
    version = subprocess.run(
        [str(venv / "bin" / "spire-health-exporter"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        **as_nonroot,
    )
    assert version.stdout.strip() == "spire-health-exporter 0.1.0"

    # The non-root UID reaches the socket and has its own registration entry, as in a pod.
    for directory in (spire.dir, spire.agent_socket.parent):
        directory.chmod(0o755)
    nonroot_id = f"spiffe://{spire.trust_domain}/nonroot"
    entry = spire.create_entry(spiffe_id=nonroot_id, uid=NONROOT)
    port = free_port()
    proc = subprocess.Popen(
        [
            str(venv / "bin" / "spire-health-exporter"),
            "--spiffe.endpoint-socket", f"unix://{spire.agent_socket}",
            "--web.listen-address", f"127.0.0.1:{port}",
            "--probes.interval", "1s", "--probes.timeout", "800ms",
            "--agent.cmdline-pattern", f"{spire.dir}/agent/agent.conf",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **as_nonroot,
    )  # fmt: skip
    try:
        wanted = (
            'spire_health_probe_success{rpc="fetch_x509_svid"} 1.0',
            'spire_health_probe_success{rpc="validate_jwt_svid"} 1.0',
            f'spire_health_svid_expiry_timestamp_seconds{{kind="x509",spiffe_id="{nonroot_id}"}}',
            # Without privileges it still reads the root-owned agent's process and memory.
            "spire_health_agent_process_up 1.0",
            "spire_health_agent_process_peak_resident_memory_bytes ",
        )
        deadline, lines = time.monotonic() + 40, []
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    lines = [line for line in r.read().decode().splitlines() if not line.startswith("#")]
            except OSError:
                pass
            if all(any(line.startswith(w) for line in lines) for w in wanted):
                break
            time.sleep(0.5)
        missing = [w for w in wanted if not any(line.startswith(w) for line in lines)]
        assert not missing, (missing, [line for line in lines if "success" in line or "process" in line])
        # ...but not its file descriptors, which need the same UID or CAP_SYS_PTRACE.
        assert not any(line.startswith("spire_health_agent_process_open_fds ") for line in lines)
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
        record_output(out + err + "\n".join(lines))
        spire.delete_entry(entry)
    assert proc.returncode == 0, err


def test_cluster_spiffe_id_class_follows_the_spire_release() -> None:
    quick_start = {**ALL_ON, "clusterSPIFFEID.spireRelease.namespace": "spire-server"}
    (cs,) = of_kind(render(quick_start), "ClusterSPIFFEID")
    assert cs["spec"]["className"] == "spire-server-spire"
    named = {**ALL_ON, "clusterSPIFFEID.className": "mesh-identities"}
    (cs,) = of_kind(render(named), "ClusterSPIFFEID")
    assert cs["spec"]["className"] == "mesh-identities"


def test_the_pod_names_its_socket_for_commands_run_in_it() -> None:
    """`probe --once` in the pod (the runbooks' first command) reads the socket from
    SPIFFE_ENDPOINT_SOCKET; it is the socket the config file names, in both socket modes."""
    overridden = {"config.workload_api.socket": "unix:///run/custom/agent.sock"}
    for values in ({}, VALUE_SETS["csi-no-process"], overridden):
        docs = render(values)
        (container,) = daemonset(docs)["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        socket = yaml.safe_load(rendered_config(values))["workload_api"]["socket"]
        assert env["SPIFFE_ENDPOINT_SOCKET"] == socket and socket.startswith("unix:///")


def test_a_rollout_moves_a_share_of_the_fleet_and_the_schema_checks_it() -> None:
    assert daemonset(render({}))["spec"]["updateStrategy"]["rollingUpdate"] == {"maxUnavailable": "10%"}
    assert daemonset(render({"updateStrategy.rollingUpdate.maxUnavailable": 3}))["spec"]["updateStrategy"][
        "rollingUpdate"
    ] == {"maxUnavailable": 3}
    for bad in ("10 %", "0%", "150%", "ten"):
        done = helm_template("--set", f"updateStrategy.rollingUpdate.maxUnavailable={bad}")
        assert done.returncode != 0 and "maxUnavailable" in done.stderr, (bad, done.stderr)


def test_installs_as_a_subchart_of_an_umbrella_chart(tmp_path) -> None:
    """An umbrella chart passes `global` to every subchart; the schema must let it through."""
    umbrella = umbrella_chart(
        tmp_path,
        {
            "global": {"spire": {"recommendations": {"enabled": True}}, "imageRegistry": "registry.example"},
            "spire-health-exporter": {"clusterSPIFFEID": {"enabled": True}},
        },
    )
    docs = documents(helm_template("--namespace", "spire-system", release="platform", chart=umbrella))
    (cs,) = of_kind(docs, "ClusterSPIFFEID")
    assert cs["spec"]["className"] == "spire-mgmt-spire"
    assert daemonset(docs)["metadata"]["name"] == "platform-spire-health-exporter"


def test_without_the_host_parts_the_pod_fits_pod_security_baseline() -> None:
    """docs/deploy.md: with agentProcess off and the CSI socket, no host namespace or hostPath."""
    pod = daemonset(render(VALUE_SETS["csi-no-process"]))["spec"]["template"]["spec"]
    assert not any(pod.get(k) for k in ("hostPID", "hostNetwork", "hostIPC"))
    assert not [v["name"] for v in pod["volumes"] if "hostPath" in v]
    for container in pod["containers"]:
        context = container["securityContext"]
        assert not context.get("privileged") and context["capabilities"]["drop"] == ["ALL"]
        assert not any("hostPort" in port for port in container["ports"])


def test_the_documented_operator_install_is_selected_by_kube_prometheus_stacks_defaults() -> None:
    """kube-prometheus-stack's Prometheus selects PodMonitors, ServiceMonitors and PrometheusRules
    by `release: <its release>` alone. The helm command docs/deploy.md gives for that path,
    rendered as written, labels both objects it creates."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    (command,) = [
        block
        for block in re.findall(r"```sh\n(.*?)```", text, re.S)
        if "helm install" in block and "kube-prometheus-stack" in block
    ]
    helm_, install, release, chart, *args = shlex.split(command.replace("\\\n", " "))
    assert (helm_, install) == ("helm", "install")
    docs = documents(helm_template(*args, release=release, chart=Path(chart), cwd=ROOT))
    for kind in ("PodMonitor", "PrometheusRule"):
        (obj,) = of_kind(docs, kind)
        assert obj["metadata"]["labels"].get("release") == "kube-prometheus-stack", (kind, obj["metadata"])
