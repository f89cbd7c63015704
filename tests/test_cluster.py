"""The chart on a real Kubernetes node: scripts/cluster's one-node cluster (etcd, API server,
controller manager, scheduler, containerd and a v1.34 kubelet), SPIRE's server and agent as pods
attesting with k8s_psat and the k8s workload attestor, and the exporter installed with
`helm install` from deploy/helm, unchanged but for values naming the local image.

Everything is read the way an operator would: /metrics through the API server's pod proxy, the
pods' status from the API, the cgroups from the host. The only values the test sets are the
image, a faster schedule (so the module runs in minutes) and, for one test, a new interval.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from pathlib import Path

import pytest
import yaml
from conftest import WORKLOAD_RPCS, assert_down_leaves_nothing, record_output, umbrella_chart
from running import Samples, get, parse

from exporter.probes.validate_jwt_svid import NO_TOKEN
from harness.local_cluster import (
    EXPORTER_ID,
    EXPORTER_NAMESPACE,
    EXPORTER_RELEASE,
    REGISTRY,
    REGISTRY_IMAGE,
    REGISTRY_IMAGE_VALUES,
    Cluster,
    ClusterError,
)
from harness.local_spire import wait_until
from harness.paths import CHART, K8S

pytestmark = [pytest.mark.spire, pytest.mark.cluster]

VALUES = {
    # Pulled from the registry on the cluster's network, as docs/deploy.md pushes it.
    "image": REGISTRY_IMAGE_VALUES,
    "probes": {"interval": "2s", "timeout": "1s"},
    "config": {"agent": {"sample_interval": "1s"}},
    # The values.yaml example: the agent's health port on the node's IP, from the downward API.
    "agentHealth": {"url": "http://$(HOST_IP):9982"},
}
# SPIRE's hardened chart's agent pods (harness/k8s/spire.yaml), which run as uid 1000.
AGENT = ("spire-system", "app.kubernetes.io/name=agent")
AGENT_UID = 1000
# A node label nothing carries: the agent's DaemonSet leaves the node while its selector holds it.
AGENT_AWAY = "spire-health-exporter.test/no-agent"
EXPORTER = (EXPORTER_NAMESPACE, f"app.kubernetes.io/name={EXPORTER_RELEASE}")


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Cluster:
    values = cluster.dir / "values.yaml"
    values.write_text(yaml.safe_dump(VALUES))
    started = time.monotonic()
    cluster.helm(
        "install", EXPORTER_RELEASE, str(CHART), "--namespace", EXPORTER_NAMESPACE, "--values", str(values)
    )
    cluster.rollout(EXPORTER_NAMESPACE, f"daemonset/{EXPORTER_RELEASE}")
    print(f"\nhelm install and rollout in {time.monotonic() - started:.0f} s")
    return cluster


def pod(cluster: Cluster, which: tuple[str, str]) -> dict:  # type: ignore[type-arg]
    namespace, selector = which
    pods = cluster.kubectl_json("get", "pods", "-n", namespace, "-l", selector)["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    assert len(live) == 1, [p["metadata"]["name"] for p in pods]
    return live[0]  # type: ignore[no-any-return]


def scrape(cluster: Cluster) -> Samples:
    name = pod(cluster, EXPORTER)["metadata"]["name"]
    text = cluster.raw(f"/api/v1/namespaces/{EXPORTER_NAMESPACE}/pods/{name}:9989/proxy/metrics")
    record_output(text)
    return parse(text)


def probes_ok(samples: Samples) -> bool:
    return all(
        get(samples, "spire_health_probe_success", rpc=r) == 1 for r in (*WORKLOAD_RPCS, "health_check")
    )


def wait_for(cluster: Cluster, predicate, timeout: float, what: str) -> Samples:
    """Scrapes until predicate(samples) holds; a scrape that fails (pod rolling) is retried."""
    last: dict[str, Samples] = {"samples": {}}

    def check() -> bool:
        try:
            last["samples"] = scrape(cluster)
        except (ClusterError, AssertionError):
            return False
        return bool(predicate(last["samples"]))

    try:
        wait_until(check, timeout, what, interval=0.5)
    except TimeoutError:
        interesting = {
            k: v
            for k, v in last["samples"].items()
            if k[0].startswith(("spire_health_probe_success", "spire_health_agent_process_up"))
        }
        raise AssertionError(f"{what}: {interesting}") from None
    return last["samples"]


def memory_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def container_cgroup(p: dict, controller: str) -> Path:  # type: ignore[type-arg]
    """The container's cgroup on the host, as the kubelet (cgroupfs driver) and containerd lay it out."""
    container_id = p["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    found = list(
        Path("/sys/fs/cgroup", controller, "kubepods").rglob(f"pod{p['metadata']['uid']}/{container_id}")
    )
    assert len(found) == 1, found
    return found[0]


def test_the_image_is_pulled_from_the_registry_that_image_registry_names(release: Cluster) -> None:
    exporter = pod(release, EXPORTER)
    (container,) = exporter["spec"]["containers"]
    assert container["image"] == REGISTRY_IMAGE
    # A pulled image is known by the registry's digest; an imported one would have none there.
    (status,) = exporter["status"]["containerStatuses"]
    assert status["imageID"].startswith(f"{REGISTRY}/spire-health-exporter@sha256:"), status["imageID"]
    events = release.kubectl_json(
        "get",
        "events",
        "-n",
        EXPORTER_NAMESPACE,
        "--field-selector",
        f"involvedObject.name={exporter['metadata']['name']}",
    )["items"]
    pulled = [e["message"] for e in events if e["reason"] == "Pulled"]
    assert any(REGISTRY_IMAGE in m for m in pulled), pulled


def test_every_probe_ok_under_the_k8s_attested_identity(release: Cluster) -> None:
    samples = wait_for(release, probes_ok, 90, "every probe OK")
    # The only entry for this ID has k8s selectors (namespace, service account, pod label) under
    # the k8s_psat node alias, so the SVID proves the k8s workload attestor matched the pod.
    assert get(samples, "spire_health_svid_expiry_timestamp_seconds", kind="x509", spiffe_id=EXPORTER_ID)
    assert get(samples, "spire_health_svid_expiry_timestamp_seconds", kind="jwt", spiffe_id=EXPORTER_ID)
    entries = release.spire_server("entry", "show", "-spiffeID", EXPORTER_ID)
    assert "k8s:sa:spire-health-exporter" in entries and "unix:" not in entries, entries
    agents = release.spire_server("agent", "list")
    assert "k8s_psat" in agents, agents
    # agentHealth.url as values.yaml gives it: Kubernetes filled in the node's IP, and the agent's
    # own /live and /ready answered 200 (SPIRE refreshes them about once a minute).
    wait_for(
        release,
        lambda s: (
            get(s, "spire_health_agent_http_health_status", check="live") == 1
            and get(s, "spire_health_agent_http_health_status", check="ready") == 1
        ),
        90,
        "the agent's health endpoints through $(HOST_IP)",
    )
    # The rotation watch's stream may have opened before the agent could attest the new pod, and
    # waits out its backoff before it tries again.
    wait_for(release, lambda s: get(s, "spire_health_watch_up") == 1, 90, "the watch up")
    # The check the chart's NOTES.txt gives, exactly, in the running pod.
    notes = release.helm("get", "notes", EXPORTER_RELEASE, "--namespace", EXPORTER_NAMESPACE)
    command = next(line.strip() for line in notes.splitlines() if "probe --once" in line)
    args = command.split()
    assert args[:2] == ["kubectl", "-n"], command
    printed = release.kubectl(*args[1:])
    record_output(printed)
    assert all(f"{rpc}" in printed for rpc in WORKLOAD_RPCS) and "PERMISSION_DENIED" not in printed, printed
    # The chart's rendered configuration, judged in the pod by the image's own check-config.
    exec_args = args[1 : args.index("--") + 2]
    checked = release.kubectl(*exec_args, "check-config", "/etc/spire-health-exporter/config.yml")
    assert "configuration is valid" in checked, checked


def test_agent_found_through_host_pids_and_its_cgroup_limit_is_the_pods(release: Cluster) -> None:
    samples = wait_for(
        release, lambda s: get(s, "spire_health_agent_cgroup_memory_limit_bytes"), 60, "the agent's cgroup"
    )
    agent = pod(release, AGENT)
    limit = memory_bytes(agent["spec"]["containers"][0]["resources"]["limits"]["memory"])
    assert get(samples, "spire_health_agent_process_up") == 1
    assert get(samples, "spire_health_agent_cgroup_memory_limit_bytes") == limit
    # The agent's listener is found in its network namespace (the host's, here) though the
    # exporter sees the socket under its pod's mount. The exporter's own connection is not
    # counted: the kernel files it under the exporter's pod network namespace (docs/metrics.md).
    connections = get(samples, "spire_health_agent_socket_connections")
    print(f"\nspire_health_agent_socket_connections seen from the pod: {connections}")
    assert connections is not None
    host_limit = int((container_cgroup(agent, "memory") / "memory.limit_in_bytes").read_text())
    assert host_limit == limit
    # The process the exporter found is the agent container's: same start time as its cgroup's task.
    (pid,) = {int(p) for p in (container_cgroup(agent, "memory") / "cgroup.procs").read_text().split()}
    boot = time.time() - float(Path("/proc/uptime").read_text().split()[0])
    started = boot + int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]) / os.sysconf(
        "SC_CLK_TCK"
    )
    assert abs(get(samples, "spire_health_agent_process_start_time_seconds") - started) < 2  # type: ignore[operator]


def test_a_non_root_agent_is_read_for_all_but_its_file_descriptors(release: Cluster) -> None:
    """The hardened chart's agent runs as uid 1000 and the exporter as 65532 without capabilities:
    /proc/<pid>/status, stat and net/unix are anyone's to read, the cgroup files are mounted
    read-only, but /proc/<pid>/fd is its owner's alone (docs/metrics.md)."""
    samples = wait_for(release, probes_ok, 60, "every probe OK")
    agent = pod(release, AGENT)
    (pid,) = {int(p) for p in (container_cgroup(agent, "memory") / "cgroup.procs").read_text().split()}
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert set(uids) == {str(AGENT_UID)}, uids
    exporter = pod(release, EXPORTER)
    assert exporter["spec"]["securityContext"]["runAsUser"] != AGENT_UID
    read = {
        name: get(samples, name)
        for name in (
            "spire_health_agent_process_up",
            "spire_health_agent_process_resident_memory_bytes",
            "spire_health_agent_process_peak_resident_memory_bytes",
            "spire_health_agent_process_threads",
            "spire_health_agent_process_start_time_seconds",
            "spire_health_agent_socket_connections",
            "spire_health_agent_cgroup_memory_working_set_bytes",
            "spire_health_agent_cgroup_memory_limit_bytes",
            "spire_health_agent_process_open_fds",
        )
    }
    print(f"\nread of the uid {AGENT_UID} agent: {read}")
    unread = [name for name, value in read.items() if value is None]
    assert unread == ["spire_health_agent_process_open_fds"], read
    assert read["spire_health_agent_process_up"] == 1
    # The peak is VmHWM from /proc/<pid>/status, at least the resident set it read with it.
    vm_hwm = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024
    assert (
        read["spire_health_agent_process_peak_resident_memory_bytes"]
        >= read[  # type: ignore[operator]
            "spire_health_agent_process_resident_memory_bytes"
        ]
    )
    assert abs(read["spire_health_agent_process_peak_resident_memory_bytes"] - vm_hwm) < 64 << 20  # type: ignore[operator]


def test_exporter_stays_within_its_chart_limits(release: Cluster) -> None:
    exporter = pod(release, EXPORTER)
    resources = exporter["spec"]["containers"][0]["resources"]
    memory = container_cgroup(exporter, "memory")
    cpu = container_cgroup(exporter, "cpuacct")
    assert int((memory / "memory.limit_in_bytes").read_text()) == memory_bytes(resources["limits"]["memory"])
    quota = int((container_cgroup(exporter, "cpu") / "cpu.cfs_quota_us").read_text())
    period = int((container_cgroup(exporter, "cpu") / "cpu.cfs_period_us").read_text())
    assert quota / period == int(resources["limits"]["cpu"].rstrip("m")) / 1000
    window = 20.0
    used_before = int((cpu / "cpuacct.usage").read_text())
    time.sleep(window)
    cores = (int((cpu / "cpuacct.usage").read_text()) - used_before) / 1e9 / window
    peak = int((memory / "memory.max_usage_in_bytes").read_text())
    samples = scrape(release)
    print(
        f"\nexporter container: peak memory {peak / 2**20:.1f} MiB of {resources['limits']['memory']}, "
        f"{cores * 1000:.1f}m CPU of {resources['limits']['cpu']} at a 2 s schedule"
    )
    assert peak < memory_bytes(resources["limits"]["memory"])
    assert cores < int(resources["limits"]["cpu"].rstrip("m")) / 1000
    assert (memory / "memory.oom_control").read_text().split("oom_kill ")[1].strip() == "0"
    assert probes_ok(samples)


def test_removing_the_entry_gives_permission_denied_and_nothing_else(release: Cluster) -> None:
    wait_for(release, probes_ok, 60, "every probe OK")
    before = scrape(release)
    (entry,) = release.exporter_entry_ids()
    # Validation needs a token first; when the fetch is denied it reports NO_TOKEN, with the
    # fetch's PERMISSION_DENIED in its message.
    expected = {r: NO_TOKEN if r == "validate_jwt_svid" else "PERMISSION_DENIED" for r in WORKLOAD_RPCS}
    release.delete_entry(entry)
    try:
        denied = wait_for(
            release,
            lambda s: all(get(s, "spire_health_probes_total", rpc=r, code=c) for r, c in expected.items()),
            60,
            "PERMISSION_DENIED on every Workload API probe",
        )
    finally:
        release.create_exporter_entry()
    new_codes = {
        (dict(labels)["rpc"], dict(labels)["code"])
        for (name, labels), v in denied.items()
        if name == "spire_health_probes_total" and v > before.get((name, labels), 0)
    }
    # OK is the probes that ran before the agent's next sync dropped the entry.
    assert all(code in ("OK", expected.get(rpc)) for rpc, code in new_codes), new_codes
    assert get(denied, "spire_health_probe_success", rpc="health_check") == 1
    assert get(denied, "spire_health_agent_process_up") == 1
    wait_for(release, probes_ok, 90, "every probe OK again with the entry back")


def test_an_agent_gone_from_the_node_is_seen_and_its_return_recovered(release: Cluster) -> None:
    """The agent's DaemonSet leaves the node (a nodeSelector nothing matches), then comes back.

    Deleting the pod alone is not enough to show the exporter sees the agent gone: the DaemonSet
    controller starts its replacement within a second here, between two of the exporter's
    samples, and a new start time is all there is to see (as a restart is on a real node).
    """
    before = wait_for(release, probes_ok, 60, "every probe OK")
    start = get(before, "spire_health_agent_process_start_time_seconds")
    old = pod(release, AGENT)["metadata"]["name"]
    away = {"spec": {"template": {"spec": {"nodeSelector": {AGENT_AWAY: "true"}}}}}
    release.kubectl(
        "patch", "daemonset", "spire-agent", "-n", AGENT[0], "--type=merge", "-p", json.dumps(away)
    )
    try:
        gone = wait_for(
            release,
            lambda s: (
                get(s, "spire_health_agent_process_up") == 0
                and get(s, "spire_health_probe_success", rpc="fetch_x509_svid") == 0
            ),
            60,
            "the agent seen gone",
        )
        assert get(gone, "spire_health_agent_process_resident_memory_bytes") is None
    finally:
        back = [{"op": "remove", "path": "/spec/template/spec/nodeSelector/" + AGENT_AWAY.replace("/", "~1")}]
        release.kubectl(
            "patch", "daemonset", "spire-agent", "-n", AGENT[0], "--type=json", "-p", json.dumps(back)
        )
    restarted = wait_for(
        release,
        lambda s: get(s, "spire_health_agent_process_start_time_seconds") not in (None, start),
        90,
        "a new agent start time",
    )
    assert get(restarted, "spire_health_agent_process_up") == 1
    wait_for(release, probes_ok, 120, "every probe OK after the agent's return")
    assert pod(release, AGENT)["metadata"]["name"] != old


def test_an_oom_killed_agent_is_in_the_restart_record_and_our_metrics(release: Cluster) -> None:
    wait_for(release, probes_ok, 60, "every probe OK")
    agent = pod(release, AGENT)
    limit = agent["spec"]["containers"][0]["resources"]["limits"]["memory"]
    path = "/spec/template/spec/containers/0/resources/limits/memory"

    def squeeze(to: str) -> None:
        patch = f'[{{"op": "replace", "path": "{path}", "value": "{to}"}}]'
        release.kubectl("patch", "daemonset", "-n", AGENT[0], "spire-agent", "--type", "json", "-p", patch)

    # The agent needs about 18 MiB to start; 12 MiB gets it OOM-killed while it starts.
    squeeze("12Mi")
    try:

        def oom_killed() -> dict | None:  # type: ignore[type-arg]
            try:
                p = pod(release, AGENT)
            except AssertionError:  # between the old pod and the new one
                return None
            status = (p["status"].get("containerStatuses") or [{}])[0]
            terminated = status.get("lastState", {}).get("terminated") or {}
            return p if terminated.get("reason") == "OOMKilled" else None

        killed = wait_until(oom_killed, 120, "the agent's restart record to say OOMKilled")
        terminated = killed["status"]["containerStatuses"][0]["lastState"]["terminated"]
        print(
            f"\nrestart record: {terminated['reason']}, exit {terminated['exitCode']}, "
            f"restarts {killed['status']['containerStatuses'][0]['restartCount']}"
        )
        assert terminated["exitCode"] == 137
        # The exporter sees an agent that is gone and probes that fail: SpireAgentDown's expression.
        down = wait_for(
            release,
            lambda s: get(s, "spire_health_agent_process_up") == 0,
            60,
            "spire_health_agent_process_up 0",
        )
        assert not probes_ok(down)
    finally:
        squeeze(limit)
    wait_for(release, probes_ok, 180, "every probe OK once the limit is back")


def test_helm_upgrade_with_a_new_interval_rolls_the_pods_and_takes_effect(release: Cluster) -> None:
    old = pod(release, EXPORTER)["metadata"]["name"]
    release.helm(
        "upgrade",
        EXPORTER_RELEASE,
        str(CHART),
        "--namespace",
        EXPORTER_NAMESPACE,
        "--reuse-values",
        "--set",
        "probes.interval=5s",
    )
    release.rollout(EXPORTER_NAMESPACE, f"daemonset/{EXPORTER_RELEASE}")
    assert pod(release, EXPORTER)["metadata"]["name"] != old
    wait_for(release, probes_ok, 60, "every probe OK after the upgrade")
    # The new schedule, measured: the gaps between one probe's successive attempts.
    attempts: list[float] = []
    deadline = time.monotonic() + 22
    while time.monotonic() < deadline:
        stamp = get(
            scrape(release), "spire_health_probe_last_attempt_timestamp_seconds", rpc="fetch_x509_svid"
        )
        if stamp is not None and (not attempts or stamp != attempts[-1]):
            attempts.append(stamp)
        time.sleep(0.5)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    print(f"\nfetch_x509_svid attempts after the upgrade, gaps: {[round(g, 2) for g in gaps]}")
    assert len(gaps) >= 2 and all(4.0 < g < 6.0 for g in gaps), gaps


def test_a_namespace_at_pod_security_baseline_refuses_the_pods_with_a_clear_reason(release: Cluster) -> None:
    """docs/deploy.md's Pod Security paragraph, as a user meets it: the install itself succeeds
    with the API server's warning, and the DaemonSet's events name what the level forbids. The
    release in spire-system (labelled privileged, as the hardened chart labels it) runs."""
    namespace, name = "she-baseline", "she-baseline"
    release.kubectl("create", "namespace", namespace)
    try:
        release.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=baseline")
        values = release.dir / "values.yaml"
        done = release.run(
            [
                *release.helm_command(),
                "install",
                name,
                str(CHART),
                "--namespace",
                namespace,
                "--values",
                str(values),
            ]
        )
        print(f"\nhelm install into a baseline namespace printed: {done.stderr.strip()}")
        # helm prints the API server's warning through klog, its quotes escaped.
        warning = done.stderr.replace('\\"', '"')
        assert 'Warning: would violate PodSecurity "baseline:latest"' in warning, warning
        assert "hostPID=true" in warning and "hostPath volumes" in warning, warning

        def refused() -> str:
            events = release.kubectl_json(
                "get", "events", "-n", namespace, "--field-selector", "reason=FailedCreate"
            )["items"]
            return " ".join(e["message"] for e in events)

        wait_until(refused, 60, "the DaemonSet's FailedCreate event")
        message = refused()
        print(f"the DaemonSet's event: {message[:300]}")
        assert 'violates PodSecurity "baseline:latest"' in message and "hostPID=true" in message, message
        assert not release.kubectl_json("get", "pods", "-n", namespace)["items"]
        labels = release.kubectl_json("get", "namespace", EXPORTER_NAMESPACE)["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "privileged"
        wait_for(release, probes_ok, 90, "every probe OK in the privileged namespace")
    finally:
        release.run([*release.helm_command(), "uninstall", name, "--namespace", namespace], check=False)
        release.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_installed_as_a_subchart_it_runs_and_its_clusterspiffeid_has_the_production_class(
    release: Cluster, tmp_path: Path
) -> None:
    """As a dependency of an umbrella chart that sets `global` (as SPIRE's hardened chart's users
    do), installed with `helm install`: its pod runs, and the ClusterSPIFFEID the API server
    stores names the hardened chart's production class. The CRD is a stand-in (no
    spire-controller-manager here), so no entry follows from it."""
    release.kubectl("apply", "-f", str(K8S / "clusterspiffeid-crd.yaml"))
    release.kubectl("wait", "--for=condition=Established", "crd/clusterspiffeids.spire.spiffe.io")
    umbrella = umbrella_chart(
        tmp_path,
        {
            "global": {"spire": {"recommendations": {"enabled": True}}},
            "spire-health-exporter": {"image": REGISTRY_IMAGE_VALUES, "clusterSPIFFEID": {"enabled": True}},
        },
    )
    namespace = "she-platform"
    release.helm("install", "platform", str(umbrella), "--namespace", namespace, "--create-namespace")
    try:
        release.rollout(namespace, "daemonset/platform-spire-health-exporter")
        (cs,) = release.kubectl_json("get", "clusterspiffeids")["items"]
        print(f"\nthe umbrella's ClusterSPIFFEID: {cs['metadata']['name']}, class {cs['spec']['className']}")
        assert cs["spec"]["className"] == "spire-mgmt-spire"
        assert cs["metadata"]["labels"]["app.kubernetes.io/instance"] == "platform"
        (p,) = release.kubectl_json("get", "pods", "-n", namespace)["items"]
        assert p["status"]["phase"] == "Running" and p["spec"]["containers"][0]["image"] == REGISTRY_IMAGE
    finally:
        release.helm("uninstall", "platform", "--namespace", namespace, "--wait")
        release.kubectl("delete", "namespace", namespace, timeout=180)
        release.kubectl("delete", "-f", str(K8S / "clusterspiffeid-crd.yaml"))


def test_down_leaves_no_process_mount_cgroup_or_device(cluster: Cluster) -> None:
    assert_down_leaves_nothing(cluster)
