"""Shared fixtures: the real local SPIRE, a fake Workload API for fault injection, and helpers.

Under CI=true a real component that can't be had fails the run instead of skipping.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from harness import versions
from harness.local_spire import LocalSpire, SpireUnavailable
from harness.paths import CHART
from harness.paths import ROOT as ROOT  # the tests import it from here

if TYPE_CHECKING:
    from harness.local_cluster import Cluster

# The five Workload API probes by their names, as the exporter's rpc label gives them.
WORKLOAD_RPCS = (
    "fetch_x509_svid",
    "fetch_x509_bundles",
    "fetch_jwt_svid",
    "fetch_jwt_bundles",
    "validate_jwt_svid",
)


def tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        require(f"{name} is not installed (Debian's prometheus / prometheus-alertmanager packages)")
    return path


def shipped_alerts() -> list[dict]:
    from alerts.generate import RULES_FILE

    groups = yaml.safe_load((ROOT / "alerts" / RULES_FILE).read_text())["groups"]
    return [r for g in groups for r in g["rules"] if "alert" in r]


def metric_source(metric: str) -> str:
    if ":" in metric:
        return "rule"
    if metric.startswith("spire_server_"):
        return "server"
    if metric.startswith("spire_agent_"):
        return "agent"
    return "exporter"


def spire_names_read() -> set[str]:
    """Every name of SPIRE's own telemetry that a shipped rule or dashboard reads."""
    shipped_text = (ROOT / "alerts" / "spire-health-exporter.rules.yml").read_text() + "".join(
        (ROOT / "dashboards" / n).read_text() for n in ("spire-health-fleet.json", "spire-health-node.json")
    )
    return {
        m
        # Not a part of a recording's name (level:metric:operations).
        for m in re.findall(r"(?<![:\w])spire_(?:agent|server)_\w+(?![\w:])", shipped_text)
        if metric_source(m) != "exporter" and not m.endswith("_")
    }


# SPIRE server names emitted only in some configurations, by what they need: the entry cache's
# full reloads (SPIRE's default; the contract and end-to-end tests), its events-based cache
# (tests/test_datastore.py's servers), or a federated trust domain (the end-to-end test's).
NEEDS = {
    "spire_server_entry_cache_reload_elapsed_time": "full_reload",
    "spire_server_entry_skipped_entry_event_ids_count": "events_cache",
    "spire_server_node_skipped_node_event_ids_count": "events_cache",
    "spire_server_bundle_manager_fetch_federated_bundle": "federation",
}


def spire_names_emitted(*without: str) -> set[str]:
    """spire_names_read() less the names that need one of `without`, which this test's SPIRE lacks."""
    return {n for n in spire_names_read() if NEEDS.get(n) not in without}


def umbrella_chart(directory: Path, values: dict[str, Any]) -> Path:
    """A small umbrella chart, "platform", with the chart as its one dependency and `values`."""
    umbrella = directory / "platform"
    (umbrella / "charts").mkdir(parents=True)
    shutil.copytree(CHART, umbrella / "charts" / "spire-health-exporter")
    (umbrella / "Chart.yaml").write_text(
        "apiVersion: v2\nname: platform\nversion: 0.1.0\n"
        "dependencies:\n  - name: spire-health-exporter\n    version: '>=0.0.0-0'\n"
    )
    (umbrella / "values.yaml").write_text(yaml.safe_dump(values))
    return umbrella


def fill(expr: str, node: str) -> str:
    from harness.promtext import fill_dashboard_variables

    return fill_dashboard_variables(expr, node)


IN_CI = os.environ.get("CI") == "true"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=float(os.environ.get("SOAK_SECONDS", "60")),
        help="length of the soak test (default 60 s, or $SOAK_SECONDS; the full run is 600)",
    )


def cli(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The command as installed; `env`, if given, is the whole environment (PATH is kept)."""
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {"PATH": os.environ["PATH"], **env},
    )


# The Kubernetes version the offline schemas and `helm template` are given (versions.env).
K8S_VERSION = versions.version("CHART_KUBE_VERSION").removeprefix("v")


def helm() -> str:
    path = os.environ.get("HELM_BIN") or shutil.which("helm")
    if not path:
        require("helm is not available (scripts/build-helm builds it with Go)")
    return path


CHART_EXAMPLES = sorted((ROOT / "deploy" / "helm" / "examples").glob("*.yaml"))


def chart_example(values: Path) -> tuple[str, dict[str, str]]:
    """The exporter's config.yml the chart renders with `values`, and the container's environment
    with Kubernetes' $(VAR) expansion done as it would be (the node's IP a documentation address)."""
    done = subprocess.run(
        [helm(), "template", "she", str(CHART), "--namespace", "spire-system", "--kube-version", K8S_VERSION,
         "--values", str(values)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    (cm,) = [d for d in docs if d["kind"] == "ConfigMap" and "config.yml" in d["data"]]
    (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
    (container,) = ds["spec"]["template"]["spec"]["containers"]
    assert "--config.file=/etc/spire-health-exporter/config.yml" in container["args"]
    env: dict[str, str] = {"HOST_IP": "192.0.2.7"}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), item["value"])
    return cm["data"]["config.yml"], env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The image and cluster tests run after the others, so that .ci/run's background builds of
    Kubernetes and the image overlap the rest; tests marked `last` run after all (the secrets
    check searches their output). Otherwise the files' order."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("last") is not None,
            any(item.get_closest_marker(m) for m in ("image", "cluster")),
        )
    )


def require(reason: str) -> None:
    """Skip locally, fail in CI: a missing real component is never skipped silently there."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def host_state() -> tuple[set[str], set[str]]:
    """The host's mount points and network devices, to compare before and after a harness ran."""
    with open("/proc/mounts") as f:
        mounts = {line.split()[1] for line in f}
    return mounts, set(os.listdir("/sys/class/net"))


# Every log line and page the exporter produced in this run, for test_no_secrets.py.
OUTPUTS: list[str] = []


def record_output(text: str) -> None:
    OUTPUTS.append(text)


class _Recorder(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        OUTPUTS.append(self.format(record))


@pytest.fixture(scope="session", autouse=True)
def record_logs() -> Iterator[None]:
    """Keep every log line of in-process exporters, at debug level, as logfmt would print it."""
    from exporter.logs import Formatter

    handler = _Recorder(logging.DEBUG)
    handler.setFormatter(Formatter("logfmt"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield
    root.removeHandler(handler)
    root.setLevel(level)


def started_spire(**options: str) -> LocalSpire:
    """A started LocalSpire with these options; a missing SPIRE skips, or fails in CI."""
    try:
        local = LocalSpire(**options)
    except SpireUnavailable as e:
        require(str(e))
    try:
        local.start()
    except Exception:
        local.stop()
        raise
    return local


@pytest.fixture(scope="session")
def spire() -> Iterator[LocalSpire]:
    local = started_spire()
    yield local
    local.stop()


@pytest.fixture
def healthy_spire(spire: LocalSpire) -> Iterator[LocalSpire]:
    """The shared SPIRE, put back to health before and after a test that disturbs it."""
    _heal(spire)
    yield spire
    _heal(spire)


def _heal(spire: LocalSpire) -> None:
    if spire.server is None or spire.server.poll() is not None:
        spire.start_server()
    if spire.agent is None or spire.agent.poll() is not None:
        spire.start_agent()
    else:
        spire.resume_agent()
    entries = spire.server_cli("entry", "show", "-spiffeID", spire.workload_id)
    if spire.entry_id is None or spire.entry_id not in entries:
        spire.entry_id = spire.create_entry()
    spire.wait_for_svid()


@pytest.fixture
def endpoint(spire: LocalSpire) -> str:
    return f"unix://{spire.agent_socket}"


@pytest.fixture
def fake_agent(tmp_path: Path) -> Iterator:
    from harness.fake_agent import FakeAgent

    agent = FakeAgent(str(tmp_path / "fake.sock")).start()
    yield agent
    agent.stop()


@pytest.fixture
def fake_client(fake_agent) -> Iterator:
    from exporter.client import WorkloadClient

    with WorkloadClient(f"unix://{fake_agent.socket_path}") as client:
        yield client


def settings(name: str, timeout: float = 2.0, interval: float = 5.0, audience: str = "test-audience"):
    """A probe's own settings class, filled in as the configuration would."""
    from exporter.probes import spec

    cls = spec(name).settings
    values = {"enabled": True, "interval": interval, "timeout": timeout}
    if any(f.name == "audience" for f in dataclasses.fields(cls)):
        values["audience"] = audience
    return cls(**values)


def probe(name: str):
    """A fresh, guarded probe by its name."""
    from exporter.probes import spec

    return spec(name).build()


def run(client, name: str, timeout: float = 2.0):
    """One run of a probe by its name, with test settings."""
    return probe(name)(client, settings(name, timeout=timeout))


def render(registry) -> dict:
    """Every sample a registry renders, parsed back from the text format."""
    from prometheus_client import generate_latest

    from harness.promtext import parse

    return parse(generate_latest(registry).decode())


def state_registry(state):
    """A registry of the exporter's collectors over `state`."""
    from prometheus_client import CollectorRegistry

    from exporter import collect

    registry = CollectorRegistry()
    collect.register(registry, state)
    return registry


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A one-node cluster with SPIRE in it (harness/local_cluster.py), for one test module."""
    from harness.local_cluster import Cluster

    if os.getuid() != 0:
        require("the cluster needs root")
    for tool in ("containerd", "etcd", "podman", "runc", "iptables", "debootstrap"):
        if shutil.which(tool) is None:
            require(
                f"{tool} is missing (apt-get install containerd etcd-server podman runc iptables debootstrap)"
            )
    if not os.environ.get("HELM_BIN") and shutil.which("helm") is None:
        require("Helm is missing (scripts/test builds it; or set HELM_BIN)")
    before = host_state()
    local = Cluster(Path(tempfile.mkdtemp(prefix="she-cluster-")))
    started = time.monotonic()
    try:
        local.up()
    except BaseException:  # whatever failed, nothing of the cluster may stay behind
        local.down()
        raise
    print(f"\ncluster up in {time.monotonic() - started:.0f} s")
    local.before = before  # type: ignore[attr-defined]
    yield local
    local.down()


def assert_down_leaves_nothing(cluster: Cluster) -> None:
    """`down` stops every process of the cluster and leaves no mount, cgroup or network device."""
    holder = cluster.holder_pid()
    assert holder is not None
    cluster.down()
    assert not Path(f"/proc/{holder}").exists()
    mounts, devices = host_state()
    before_mounts, before_devices = cluster.before  # type: ignore[attr-defined]
    assert mounts <= before_mounts, mounts - before_mounts
    assert devices == before_devices, devices ^ before_devices
    assert not list(Path("/sys/fs/cgroup").glob("*/kubepods"))
    assert not cluster.dir.exists()
