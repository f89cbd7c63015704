"""Shared fixtures: the real local SPIRE, a fake Workload API for fault injection, and helpers.

Under CI=true a real component that can't be had fails the run instead of skipping.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from local_cluster import Cluster

ROOT = Path(__file__).resolve().parent.parent


def load(path: Path) -> ModuleType:
    """A script of the repository (alerts/generate.py, dashboards/generate.py) as a module."""
    name = path.stem + "_under_test_" + path.parent.name
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from local_spire import LocalSpire, SpireUnavailable  # noqa: E402

IN_CI = os.environ.get("CI") == "true"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak-seconds",
        type=float,
        default=float(os.environ.get("SOAK_SECONDS", "60")),
        help="length of the soak test (default 60 s, or $SOAK_SECONDS; the full run is 600)",
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


# Every log line and page the exporter produced in this run, for test_zz_no_secrets.py.
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


@pytest.fixture(scope="session")
def spire() -> Iterator[LocalSpire]:
    try:
        local = LocalSpire()
    except SpireUnavailable as e:
        require(str(e))
    try:
        local.start()
    except Exception:
        local.stop()
        raise
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
    from fake_agent import FakeAgent

    agent = FakeAgent(str(tmp_path / "fake.sock")).start()
    yield agent
    agent.stop()


@pytest.fixture
def fake_client(fake_agent) -> Iterator:
    from exporter.client import WorkloadClient

    with WorkloadClient(f"unix://{fake_agent.socket_path}") as client:
        yield client


def settings(name: str, timeout: float = 2.0, interval: float = 5.0, audience: str = "test-audience"):
    from exporter.config import ProbeSettings

    return ProbeSettings(name, True, interval, timeout, audience)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A one-node cluster with SPIRE in it (scripts/local_cluster.py), for one test module."""
    from local_cluster import Cluster

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
