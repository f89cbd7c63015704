#!/usr/bin/env python3
"""A real one-node Kubernetes cluster on this host, with SPIRE in it, for the tests and for a person.

    scripts/cluster up                 # the cluster, then SPIRE's server and agent as pods
    scripts/cluster kubectl get pods -A
    scripts/cluster helm install ...   # helm and kubectl run inside the cluster's namespaces
    scripts/cluster down               # leaves no process, mount, cgroup or network device

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd and a kubelet (versions.env,
built by scripts/build-kubernetes) run inside one network namespace and one private mount
namespace that a holder process keeps open. The network namespace has only loopback, a bridge
with no ports carrying the node's address, and a CNI bridge for pods, so nothing the cluster does can
reach beyond it. The mount namespace puts a fresh tmpfs on /run, so containerd's state, the pod
network namespaces and the agent's socket directory never appear on the host, and every mount the
kubelet and containerd make dies with the namespace. Images are made with podman (scripts/build-image)
and imported into this containerd; nothing is pulled.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness import cluster_files, versions
from harness.local_spire import find_spire_bin_dir, wait_until
from harness.paths import K8S, ROOT

SCRIPTS = ROOT / "scripts"
CLUSTER = "she"
NODE = "she-node"
NODE_IP = "10.231.0.1"
POD_SUBNET = "10.232.0.0/24"
SERVICE_SUBNET = "10.233.0.0/24"
SERVICE_IP = "10.233.0.1"  # the first address of SERVICE_SUBNET: the kubernetes Service
API_PORT = 6443
TRUST_DOMAIN = "example.org"
EXPORTER_IMAGE = "localhost/spire-health-exporter:dev"
# A registry on the cluster's network (Debian's docker-registry), which the chart's release pulls
# the exporter's image from, as users pull it from theirs: the chart's image values for it.
REGISTRY = f"{NODE_IP}:5000"
REGISTRY_IMAGE_VALUES = {"registry": REGISTRY, "repository": "spire-health-exporter", "tag": "dev"}
REGISTRY_IMAGE = f"{REGISTRY}/{REGISTRY_IMAGE_VALUES['repository']}:{REGISTRY_IMAGE_VALUES['tag']}"
SPIRE_IMAGE = f"localhost/spire-health-exporter-spire:{versions.SPIRE}"
PAUSE_IMAGE = "localhost/spire-health-exporter-pause:1"
BASE_IMAGE = "localhost/spire-health-exporter-base:debian12-python3"
# prometheus-operator and what it manages, in images made like SPIRE's; only Cluster.monitoring()
# builds them. Prometheus comes from the Go module proxy (scripts/build-prometheus-operator):
# Debian's has no Kubernetes service discovery. Alertmanager is Debian's.
MONITORING_IMAGES = {
    "operator": f"localhost/spire-health-exporter-prometheus-operator:{versions.PROMETHEUS_OPERATOR}",
    "prometheus-config-reloader": (
        f"localhost/spire-health-exporter-prometheus-config-reloader:{versions.PROMETHEUS_OPERATOR}"
    ),
    "prometheus": f"localhost/spire-health-exporter-prometheus:{versions.PROMETHEUS}",
    "alertmanager": f"localhost/spire-health-exporter-alertmanager:{versions.ALERTMANAGER}",
    "kube-state-metrics": f"localhost/spire-health-exporter-kube-state-metrics:{versions.KUBE_STATE_METRICS}",
}
WEBHOOK_PORT = 19095
WEBHOOK_URL = f"http://{NODE_IP}:{WEBHOOK_PORT}"
# The node alias every agent of this cluster gets (k8s_psat), and the exporter's own entry: the
# selectors a real install gives, from the chart's namespace, service account and pod label.
NODE_ALIAS = f"spiffe://{TRUST_DOMAIN}/k8s-cluster/{CLUSTER}"
EXPORTER_NAMESPACE = "spire-system"
EXPORTER_RELEASE = "spire-health-exporter"
EXPORTER_ID = f"spiffe://{TRUST_DOMAIN}/ns/{EXPORTER_NAMESPACE}/sa/{EXPORTER_RELEASE}"
EXPORTER_SELECTORS = (
    f"k8s:ns:{EXPORTER_NAMESPACE}",
    f"k8s:sa:{EXPORTER_RELEASE}",
    f"k8s:pod-label:app.kubernetes.io/name:{EXPORTER_RELEASE}",
)
DEFAULT_DIR = Path(tempfile.gettempdir()) / "spire-health-exporter-cluster"
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
# The kubelet (cgroupfs driver) puts every pod under this cgroup in each v1 hierarchy.
POD_CGROUP = "kubepods"


def shipped_alertmanager_config(group_wait: int = 1) -> str:
    """alerts/alertmanager.example.yml as shipped, its receivers pointed at the webhook pod and
    its group_wait shortened (as harness/prom_stack.py does)."""
    config = yaml.safe_load((ROOT / "alerts" / "alertmanager.example.yml").read_text())
    config["route"].update(group_wait=f"{group_wait}s", group_interval="1s")
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = f"{WEBHOOK_URL}/{receiver['name']}"
    return str(yaml.safe_dump(config))


class ClusterError(RuntimeError):
    """Something the cluster needs is missing or did not come up; the message says which, in one line."""


def _run(
    cmd: list[str], timeout: float = 120, check: bool = True, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    done: subprocess.CompletedProcess[str] = subprocess.run(  # type: ignore[call-overload]
        cmd, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )
    if check and done.returncode != 0:
        raise ClusterError(f"{' '.join(cmd[:4])} … failed: {(done.stderr or done.stdout).strip()[-1500:]}")
    return done


def find_built(script: str, what: str) -> Path:
    done = subprocess.run(
        [str(SCRIPTS / script)], stdout=subprocess.PIPE, stderr=sys.stderr, text=True, check=False
    )
    if done.returncode != 0:
        raise ClusterError(f"{what} could not be built (scripts/{script} exited {done.returncode})")
    return Path(done.stdout.strip().splitlines()[-1])


class Cluster:
    """The cluster in `directory`: started by up(), reached by kubectl()/helm(), removed by down()."""

    def __init__(self, directory: Path = DEFAULT_DIR) -> None:
        self.dir = directory
        self.pki = directory / "pki"
        self.logs = directory / "logs"
        self.kubeconfig = directory / "admin.kubeconfig"
        self.bin = directory / "bin"  # links to the cached builds, so commands stay short
        # The daemons this process started, to reap once killed (a CLI `up` leaves them to init).
        self.children: list[subprocess.Popen[bytes]] = []

    # --- reaching inside --------------------------------------------------------------------

    def holder_pid(self) -> int | None:
        """The process holding the namespaces open, if it is alive and really in other namespaces."""
        try:
            pid = int((self.dir / "holder.pid").read_text())
            if os.readlink(f"/proc/{pid}/ns/net") == os.readlink("/proc/self/ns/net"):
                return None
        except (OSError, ValueError):
            return None
        return pid

    def inside(self, cmd: list[str]) -> list[str]:
        pid = self.holder_pid()
        if pid is None:
            raise ClusterError(f"no cluster is up in {self.dir}: run scripts/cluster up")
        return ["nsenter", "--target", str(pid), "--mount", "--net", f"--wd={os.getcwd()}", "--", *cmd]

    def run(
        self, cmd: list[str], timeout: float = 120, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return _run(self.inside(cmd), timeout=timeout, check=check, input=stdin)

    # The commands, as the tests run them and as `scripts/cluster kubectl|helm|spire-server` does.
    def kubectl_command(self) -> list[str]:
        return [str(self.bin / "kubectl"), f"--kubeconfig={self.kubeconfig}"]

    def helm_command(self) -> list[str]:
        home = self.dir / "helm"  # Helm's cache and config stay with the cluster
        env = [f"KUBECONFIG={self.kubeconfig}", f"HELM_CACHE_HOME={home}", f"HELM_CONFIG_HOME={home}"]
        return ["env", *env, f"HELM_DATA_HOME={home}", str(self.bin / "helm")]

    def spire_server_command(self) -> list[str]:
        exec_ = ["exec", "-n", "spire-server", "spire-server-0", "-c", "spire-server", "--"]
        return [*self.kubectl_command(), *exec_, "/opt/spire/bin/spire-server"]

    def kubectl(self, *args: str, timeout: float = 120, check: bool = True, stdin: str | None = None) -> str:
        cmd = [*self.kubectl_command(), f"--request-timeout={int(timeout)}s", *args]
        return self.run(cmd, timeout=timeout + 10, check=check, stdin=stdin).stdout

    def kubectl_json(self, *args: str) -> dict:  # type: ignore[type-arg]
        return json.loads(self.kubectl(*args, "-o", "json"))  # type: ignore[no-any-return]

    def helm(self, *args: str, timeout: float = 300) -> str:
        return self.run([*self.helm_command(), *args], timeout=timeout).stdout

    def spire_server(self, *args: str) -> str:
        return self.run([*self.spire_server_command(), *args]).stdout

    def rollout(self, namespace: str, workload: str, timeout: int = 180) -> None:
        """Wait until a DaemonSet or StatefulSet has rolled out: every pod updated and ready."""
        self.kubectl(
            "rollout", "status", "-n", namespace, workload, f"--timeout={timeout}s", timeout=timeout + 10
        )

    def raw(self, path: str, timeout: float = 20) -> str:
        """GET a path through the API server, e.g. a pod's /metrics by its proxy subresource."""
        return self.kubectl("get", "--raw", path, timeout=timeout)

    # --- up ---------------------------------------------------------------------------------

    def up(self) -> None:
        if self.holder_pid() is not None:
            raise ClusterError(f"a cluster is already up in {self.dir}: run scripts/cluster down first")
        if os.getuid() != 0:
            raise ClusterError("the cluster needs root (namespaces, cgroups, containerd)")
        tools = (
            "containerd",
            "runc",
            "etcd",
            "nsenter",
            "unshare",
            "ip",
            "iptables",
            "podman",
            "docker-registry",
        )
        for tool in tools:
            if shutil.which(tool) is None:
                raise ClusterError(
                    f"{tool} is missing: apt-get install containerd runc etcd-server"
                    " containernetworking-plugins podman iptables docker-registry"
                )
        if not Path("/usr/lib/cni/bridge").exists():
            raise ClusterError("the CNI plugins are missing: apt-get install containernetworking-plugins")
        self.down()  # whatever a killed run left behind
        started = time.monotonic()
        self.dir.mkdir(parents=True)
        for d in (self.pki, self.logs, self.bin):
            d.mkdir()
        kubernetes = find_built("build-kubernetes", f"Kubernetes {versions.KUBERNETES}")
        for name in ("kubelet", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl"):
            (self.bin / name).symlink_to(kubernetes / name)
        helm = os.environ.get("HELM_BIN") or shutil.which("helm") or str(find_built("build-helm", "Helm"))
        (self.bin / "helm").symlink_to(helm)
        images = self._images()
        self._pki()
        self._namespaces()
        self._control_plane()
        self._node(images)
        self._spire()
        print(
            f"cluster up in {time.monotonic() - started:.0f} s; node {NODE} Ready; SPIRE serving",
            file=sys.stderr,
        )

    def _images(self) -> list[Path]:
        """The exporter's image (scripts/build-image), SPIRE's and the pod sandbox's, saved for containerd."""
        _run([str(SCRIPTS / "build-image"), EXPORTER_IMAGE], timeout=3600)
        spire_bin = find_spire_bin_dir()
        builds = {
            # Where SPIRE's own images have them, which the runbooks' commands name.
            SPIRE_IMAGE: f"FROM {BASE_IMAGE}\nCOPY spire-server spire-agent /opt/spire/bin/\n"
            'CMD ["/opt/spire/bin/spire-agent"]\n',
            # containerd needs a sandbox image whose config has a command; it only has to wait.
            PAUSE_IMAGE: f'FROM {BASE_IMAGE}\nCMD ["/bin/sleep", "infinity"]\n',
        }
        files = [spire_bin / "spire-server", spire_bin / "spire-agent"]
        return [*self._build(builds, files), self._save(EXPORTER_IMAGE)]

    def _build(self, builds: dict[str, str], files: list[Path]) -> list[Path]:
        """Builds each image from its Containerfile with `files` in the context; saved for containerd."""
        context = self.dir / "image-context"
        context.mkdir()
        for path in files:
            shutil.copy2(path, context / path.name)
        for image, containerfile in builds.items():
            (context / "Containerfile").write_text(containerfile)
            _run(
                [
                    *PODMAN,
                    "build",
                    "--network",
                    "host",
                    "-t",
                    image,
                    "-f",
                    str(context / "Containerfile"),
                    str(context),
                ],
                timeout=600,
            )
        shutil.rmtree(context)
        return [self._save(image) for image in builds]

    def _save(self, image: str) -> Path:
        tar = self.dir / f"{image.rsplit('/', 1)[1].replace(':', '_')}.tar"
        _run([*PODMAN, "save", "--format", "docker-archive", "-o", str(tar), image], timeout=600)
        return tar

    def _import(self, tars: list[Path]) -> None:
        for tar in tars:
            self.run(["ctr", "--namespace", "k8s.io", "images", "import", str(tar)], timeout=300)
            tar.unlink()

    def _pki(self) -> None:
        tokens = cluster_files.write_pki(self.pki, NODE, NODE_IP, SERVICE_IP)
        server = f"https://127.0.0.1:{API_PORT}"
        cluster_files.write_kubeconfig(self.kubeconfig, server, self.pki / "ca.crt", tokens["admin"])
        cluster_files.write_kubeconfig(
            self.dir / "kubelet.kubeconfig", server, self.pki / "ca.crt", tokens["node"]
        )

    def _namespaces(self) -> None:
        """The holder process and the one-time set-up of its namespaces."""
        holder = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "--", "sleep", "infinity"],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.children.append(holder)
        (self.dir / "holder.pid").write_text(str(holder.pid))
        wait_until(self.holder_pid, 10, "the namespace holder")
        hosts = self.dir / "hosts"
        hosts.write_text(f"127.0.0.1 localhost\n{NODE_IP} {NODE}\n")
        script = f"""
            set -e
            mount -t tmpfs -o mode=0755 tmpfs /run
            mount --bind {hosts} /etc/hosts
            ip link set lo up
            ip link add she0 type bridge
            ip addr add {NODE_IP}/24 dev she0
            ip link set she0 up
            ip route add default dev she0
            # The one Service anything here uses, the API server's, without a kube-proxy.
            for chain in OUTPUT PREROUTING; do
              iptables -t nat -A $chain -d {SERVICE_IP} -p tcp --dport 443 \
                -j DNAT --to-destination {NODE_IP}:{API_PORT}
            done
        """
        self.run(["sh", "-c", script])

    def _spawn(self, name: str, command: str) -> None:
        """Start a daemon inside the namespaces; `command` is split on whitespace (no paths here
        have spaces: the cluster's directory is made without)."""
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 - the daemon keeps it
        proc = subprocess.Popen(
            self.inside(command.split()),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.children.append(proc)
        (self.dir / f"{name}.pid").write_text(str(proc.pid))

    def _ok(self, *args: str) -> bool:
        return self.kubectl(*args, timeout=5, check=False) != ""

    def _control_plane(self) -> None:
        d, pki, bin_ = self.dir, self.pki, self.bin
        loopback = "http://127.0.0.1"
        self._spawn(
            "etcd",
            f"""etcd --name {NODE} --data-dir {d}/etcd
            --listen-client-urls {loopback}:2379 --advertise-client-urls {loopback}:2379
            --listen-peer-urls {loopback}:2380 --initial-advertise-peer-urls {loopback}:2380
            --initial-cluster {NODE}={loopback}:2380""",
        )
        self._spawn(
            "kube-apiserver",
            f"""{bin_}/kube-apiserver --etcd-servers={loopback}:2379
            --advertise-address={NODE_IP} --secure-port={API_PORT} --allow-privileged=true --profiling=false
            --tls-cert-file={pki}/apiserver.crt --tls-private-key-file={pki}/apiserver.key
            --client-ca-file={pki}/ca.crt --token-auth-file={pki}/tokens.csv
            --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction
            --service-account-key-file={pki}/sa.pub --service-account-signing-key-file={pki}/sa.key
            --service-account-issuer=https://kubernetes.default.svc
            --service-cluster-ip-range={SERVICE_SUBNET}
            --kubelet-client-certificate={pki}/apiserver-kubelet-client.crt
            --kubelet-client-key={pki}/apiserver-kubelet-client.key""",
        )
        wait_until(lambda: self._ok("get", "--raw", "/readyz"), 120, "the API server's /readyz")
        common = (
            f"--kubeconfig={self.kubeconfig} --leader-elect=false --bind-address=127.0.0.1 --profiling=false"
        )
        self._spawn(
            "kube-controller-manager",
            f"""{bin_}/kube-controller-manager {common}
            --service-account-private-key-file={pki}/sa.key --root-ca-file={pki}/ca.crt
            --use-service-account-credentials=false""",
        )
        self._spawn("kube-scheduler", f"{bin_}/kube-scheduler {common}")

    def _node(self, images: list[Path]) -> None:
        d = self.dir
        cluster_files.write_cni_config(d / "cni", POD_SUBNET, d / "cni-ipam")
        default = _run(["containerd", "config", "default"]).stdout
        cluster_files.write_registry_hosts(d / "registry-hosts", REGISTRY)
        try:
            config = cluster_files.containerd_config(
                default, d / "containerd", d / "cni", PAUSE_IMAGE, d / "registry-hosts"
            )
        except ValueError as e:
            raise ClusterError(str(e)) from None
        (d / "containerd.toml").write_text(config)
        self._spawn("containerd", f"containerd --config {d}/containerd.toml")
        self._registry()
        ctr = ["ctr", "--namespace", "k8s.io"]
        wait_until(
            lambda: self.run([*ctr, "version"], timeout=10, check=False).returncode == 0, 30, "containerd"
        )
        self._import(images)
        cluster_files.write_kubelet_config(d / "kubelet.yaml", d, self.pki / "ca.crt")
        self._spawn(
            "kubelet",
            f"""{self.bin}/kubelet --config={d}/kubelet.yaml --kubeconfig={d}/kubelet.kubeconfig
            --root-dir={d}/kubelet --hostname-override={NODE} --node-ip={NODE_IP}""",
        )
        wait_until(lambda: self._ok("get", "node", NODE), 60, f"node {NODE} to register")
        self.kubectl("wait", "--for=condition=Ready", f"node/{NODE}", "--timeout=120s", timeout=130)

    def _registry(self) -> None:
        """The registry on the cluster's network, with the exporter's image pushed to it: podman
        runs in the cluster's network namespace only, so it keeps the host's image store."""
        cluster_files.write_registry_config(self.dir / "registry.yml", self.dir / "registry", REGISTRY)
        self._spawn("docker-registry", f"docker-registry serve {self.dir}/registry.yml")
        probe = [
            "python3",
            "-c",
            f"import urllib.request; urllib.request.urlopen('http://{REGISTRY}/v2/', timeout=2)",
        ]
        wait_until(lambda: self.run(probe, timeout=10, check=False).returncode == 0, 30, "the registry")
        pid = str(self.holder_pid())
        push = ["nsenter", "--target", pid, "--net", "--", *PODMAN, "push", "--tls-verify=false", "--quiet"]
        _run([*push, EXPORTER_IMAGE, f"docker://{REGISTRY_IMAGE}"], timeout=300)

    def _spire(self) -> None:
        manifest = string.Template((K8S / "spire.yaml").read_text()).substitute(
            TRUST_DOMAIN=TRUST_DOMAIN,
            CLUSTER=CLUSTER,
            NODE_IP=NODE_IP,
            SPIRE_IMAGE=SPIRE_IMAGE,
            AGENT_LOG_LEVEL="DEBUG",
            AGENT_MEMORY_LIMIT=os.environ.get("SHE_AGENT_MEMORY_LIMIT", "256Mi"),
        )
        self.kubectl("apply", "-f", "-", stdin=manifest)
        self.rollout("spire-server", "statefulset/spire-server")
        self.rollout("spire-system", "daemonset/spire-agent")
        self.spire_server(
            "entry", "create", "-node", "-spiffeID", NODE_ALIAS, "-selector", f"k8s_psat:cluster:{CLUSTER}"
        )
        self.create_exporter_entry()

    # --- prometheus-operator -------------------------------------------------------------

    def monitoring(self, alertmanager_config: str, scrape_interval: str = "5s") -> None:
        """prometheus-operator with its CRDs, a Prometheus and an Alertmanager it manages (the
        latter configured by `alertmanager_config`), PodMonitors for SPIRE's telemetry and a
        webhook receiver at WEBHOOK_URL (harness/k8s/monitoring.yaml)."""
        started = time.monotonic()
        operator = find_built(
            "build-prometheus-operator", f"prometheus-operator {versions.PROMETHEUS_OPERATOR}"
        )
        alertmanager = shutil.which("prometheus-alertmanager")
        if alertmanager is None:
            raise ClusterError("prometheus-alertmanager is missing: apt-get install prometheus-alertmanager")
        shutil.copy2(alertmanager, self.dir / "alertmanager")
        # Debian's Alertmanager reads its notification templates from here.
        templates = sorted(Path("/usr/share/prometheus/alertmanager").glob("*.tmpl"))
        ksm = find_built("build-kube-state-metrics", f"kube-state-metrics {versions.KUBE_STATE_METRICS}")
        binaries = [operator / n for n in ("operator", "prometheus-config-reloader", "prometheus")]
        files = [*binaries, ksm / "kube-state-metrics", self.dir / "alertmanager", *templates]
        copy_templates = "".join(f"COPY {t.name} {t}\n" for t in templates)
        # The operator gives each container its arguments only, so each image's entrypoint is its binary.
        builds = {
            image: f"FROM {BASE_IMAGE}\nCOPY {name} /bin/{name}\n"
            + (copy_templates if name == "alertmanager" else "")
            + f'USER 65534\nENTRYPOINT ["/bin/{name}"]\n'
            for name, image in MONITORING_IMAGES.items()
        }
        self._import(self._build(builds, files))
        (self.dir / "alertmanager").unlink()
        # Server-side: the CRDs are larger than client-side apply's annotation allows.
        self.kubectl("apply", "--server-side", "-f", str(operator / "crds"), timeout=120)
        for crd in ("prometheuses", "alertmanagers", "podmonitors", "servicemonitors", "prometheusrules"):
            self.kubectl("wait", "--for=condition=Established", f"crd/{crd}.monitoring.coreos.com")
        self.kubectl(
            "create", "secret", "generic", "alertmanager-main", "-n", "default",
            f"--from-file=alertmanager.yaml={self._write('alertmanager.yaml', alertmanager_config)}",
        )  # fmt: skip
        manifest = string.Template((K8S / "monitoring.yaml").read_text()).substitute(
            OPERATOR_IMAGE=MONITORING_IMAGES["operator"],
            RELOADER_IMAGE=MONITORING_IMAGES["prometheus-config-reloader"],
            PROMETHEUS_IMAGE=MONITORING_IMAGES["prometheus"],
            PROMETHEUS_VERSION=versions.PROMETHEUS,
            ALERTMANAGER_IMAGE=MONITORING_IMAGES["alertmanager"],
            ALERTMANAGER_VERSION=versions.ALERTMANAGER,
            KSM_IMAGE=MONITORING_IMAGES["kube-state-metrics"],
            WEBHOOK_IMAGE=SPIRE_IMAGE,  # SPIRE's image has the base's Python
            NODE_IP=NODE_IP,
            WEBHOOK_PORT=WEBHOOK_PORT,
            SCRAPE_INTERVAL=scrape_interval,
        )
        self.kubectl("apply", "-f", "-", stdin=manifest)
        self.rollout("default", "deployment/prometheus-operator")
        self.rollout("default", "deployment/kube-state-metrics")
        # The operator creates the StatefulSets; wait for them to exist, then to be ready.
        for workload in ("statefulset/prometheus-main", "statefulset/alertmanager-main"):
            wait_until(functools.partial(self._ok, "get", "-n", "default", workload), 120, workload)
            try:
                self.rollout("default", workload)
            except ClusterError as e:
                logs = self.kubectl(
                    "logs", "-n", "default", workload, "--all-containers", "--tail=3", check=False
                )
                raise ClusterError(f"{workload} not ready: {e}; last log lines: {logs[-1500:]}") from None
        self.kubectl(
            "wait", "--for=condition=Ready", "pod/webhook", "-n", "default", "--timeout=120s", timeout=130
        )
        print(
            f"prometheus-operator, Prometheus and Alertmanager up in {time.monotonic() - started:.0f} s",
            file=sys.stderr,
        )

    def _write(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text)
        return path

    def prometheus(self, path: str, **params: str) -> Any:
        """GET Prometheus' HTTP API through the API server's pod proxy, e.g. ("api/v1/query", query=...)."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        return json.loads(
            self.raw(f"/api/v1/namespaces/default/pods/prometheus-main-0:9090/proxy/{path}{query}")
        )

    def alertmanager_alerts(self) -> list[Any]:
        answer: list[Any] = json.loads(
            self.raw("/api/v1/namespaces/default/pods/alertmanager-main-0:9093/proxy/api/v2/alerts")
        )
        return answer

    def webhook_received(self) -> list[Any]:
        """What Alertmanager delivered to the webhook receiver: [{"path": ..., "payload": ...}]."""
        answer: list[Any] = json.loads(
            self.raw(f"/api/v1/namespaces/default/pods/webhook:{WEBHOOK_PORT}/proxy/received")
        )
        return answer

    def create_exporter_entry(self) -> str:
        args = ["entry", "create", "-parentID", NODE_ALIAS, "-spiffeID", EXPORTER_ID, "-output", "json"]
        for selector in EXPORTER_SELECTORS:
            args += ["-selector", selector]
        answer = json.loads(self.spire_server(*args))
        return str(answer["results"][0]["entry"]["id"])

    def delete_entry(self, entry_id: str) -> None:
        self.spire_server("entry", "delete", "-entryID", entry_id)

    def exporter_entry_ids(self) -> list[str]:
        answer = json.loads(self.spire_server("entry", "show", "-spiffeID", EXPORTER_ID, "-output", "json"))
        return [str(e["id"]) for e in answer.get("entries") or []]

    # --- down -------------------------------------------------------------------------------

    def down(self) -> None:
        """Kill every process of the cluster and its pods, then remove its cgroups and files.
        The namespaces, and with them every mount and network device, go with the last process."""
        holder = self.holder_pid()
        if holder is not None:
            with contextlib.suppress(OSError, ValueError):
                os.kill(int((self.dir / "kubelet.pid").read_text()), signal.SIGKILL)
            mount_ns = os.readlink(f"/proc/{holder}/ns/mnt")
            wait_until(
                lambda: not _kill_all(_pod_pids() | _pids_in(mount_ns)), 60, "the cluster's processes to end"
            )
        # Also what a run killed before its holder was recorded left in the pods' cgroups.
        wait_until(lambda: not _kill_all(_pod_pids()), 30, "the pods' processes to end")
        for child in self.children:
            child.wait(10)
        self.children.clear()
        _remove_pod_cgroups()
        if self.dir.exists():
            shutil.rmtree(self.dir)


def _kill_all(pids: set[int]) -> set[int]:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _pids_in(mount_ns: str) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{entry}/ns/mnt") == mount_ns:
                    found.add(int(entry))
    return found


def _pod_cgroup_dirs() -> Iterator[Path]:
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / POD_CGROUP
        if top.is_dir():
            yield top


def _pod_pids() -> set[int]:
    pids: set[int] = set()
    for top in _pod_cgroup_dirs():
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def _remove_pod_cgroups() -> None:
    for top in _pod_cgroup_dirs():
        for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/cluster", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("SHE_CLUSTER_DIR", DEFAULT_DIR)),
        help=f"where the cluster keeps its files (default {DEFAULT_DIR}, or $SHE_CLUSTER_DIR)",
    )
    parser.add_argument("command", choices=["up", "down", "kubectl", "helm", "spire-server"])
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()
    cluster = Cluster(options.dir)
    try:
        if options.command == "up":
            try:
                cluster.up()
            except BaseException:
                print(f"cluster up failed; logs in {cluster.logs}; tearing down", file=sys.stderr)
                _show_logs(cluster)
                cluster.down()
                raise
            print("kubectl: scripts/cluster kubectl get pods -A\nhelm:    scripts/cluster helm install ...")
        elif options.command == "down":
            cluster.down()
        else:
            cmd = {
                "kubectl": cluster.kubectl_command,
                "helm": cluster.helm_command,
                "spire-server": cluster.spire_server_command,
            }[options.command]()
            return subprocess.call(cluster.inside([*cmd, *options.args]))
    except (ClusterError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _show_logs(cluster: Cluster) -> None:
    if cluster.logs.is_dir():
        for log in sorted(cluster.logs.iterdir()):
            lines = log.read_text(errors="replace").splitlines()[-15:]
            print(f"--- {log.name} (last lines)\n" + "\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
