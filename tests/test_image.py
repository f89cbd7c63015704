"""The image built from the Dockerfile (scripts/build-image), run as the chart runs it: a read-only
root, UID 65532, only the agent socket mounted, the host's PIDs visible, probing the real agent.

podman runs it with runc on the host network (no bridge, no new network device); the container
is removed afterwards and the test checks that no mount or network device was left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid

import pytest
from conftest import CHART_EXAMPLES, ROOT, WORKLOAD_RPCS, chart_example, host_state, record_output, require

from harness.local_spire import free_port
from harness.promtext import Samples, get, parse

NONROOT = 65532
SOCKET_DIR = "/run/spire/agent-sockets"  # where the chart mounts the agent's socket directory
PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs", "--events-backend", "file"]

pytestmark = [pytest.mark.spire, pytest.mark.image]


def podman(*args: str, timeout: float = 120) -> str:
    done = subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args[:2])} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


@pytest.fixture(scope="module")
def image() -> str:
    if os.getuid() != 0:
        require("building and running the image needs root")
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            require(f"{tool} is missing (apt-get install podman runc debootstrap)")
    done = subprocess.run(
        [str(ROOT / "scripts" / "build-image"), "localhost/spire-health-exporter:test"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    record_output(text)
    return parse(text)


def test_image_runs_read_only_as_nonroot_and_probes_the_real_agent(image, healthy_spire) -> None:
    spire = healthy_spire
    before = host_state()
    # The non-root UID reaches the socket and has its own registration entry, as in a pod.
    for directory in (spire.dir, spire.agent_socket.parent):
        directory.chmod(0o755)
    spiffe_id = f"spiffe://{spire.trust_domain}/image"
    entry = spire.create_entry(spiffe_id=spiffe_id, uid=NONROOT)
    name = f"she-test-{uuid.uuid4().hex[:8]}"
    port = free_port()
    podman(
        "run", "-d", "--name", name,
        "--read-only", "--user", f"{NONROOT}:{NONROOT}",
        "--network", "host", "--pid", "host",
        "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
        "--volume", f"{spire.agent_socket.parent}:{SOCKET_DIR}:ro",
        image,
        "--spiffe.endpoint-socket", f"unix://{SOCKET_DIR}/{spire.agent_socket.name}",
        "--web.listen-address", f"127.0.0.1:{port}",
        "--probes.interval", "1s", "--probes.timeout", "800ms",
        "--agent.cmdline-pattern", f"{spire.dir}/agent/agent.conf",
    )  # fmt: skip
    try:
        rpcs = (*WORKLOAD_RPCS, "health_check")
        samples: Samples = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                samples = scrape(port)
            except OSError:
                samples = {}
            if all(get(samples, "spire_health_probe_success", rpc=r) == 1 for r in rpcs) and (
                get(samples, "spire_health_agent_process_up") == 1
            ):
                break
            time.sleep(0.5)
        failing = [r for r in rpcs if get(samples, "spire_health_probe_success", rpc=r) != 1]
        assert not failing, (failing, podman("logs", name)[-2000:])
        assert get(samples, "spire_health_svid_expiry_timestamp_seconds", kind="x509", spiffe_id=spiffe_id)
        # The agent process, found through the host's PIDs as the chart's hostPID gives them.
        assert get(samples, "spire_health_agent_process_up") == 1
        assert get(samples, "spire_health_agent_process_peak_resident_memory_bytes")

        info = json.loads(podman("inspect", name))[0]
        assert info["HostConfig"]["ReadonlyRootfs"] is True
        assert info["Config"]["User"] == f"{NONROOT}:{NONROOT}"
        pid = info["State"]["Pid"]
        with open(f"/proc/{pid}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        assert status["Uid"].split() == [str(NONROOT)] * 4, status["Uid"]
        rss_mib = int(status["VmRSS"].split()[0]) / 1024
        size_mib = int(podman("image", "inspect", "--format", "{{.Size}}", image)) / 2**20
        # Printed for docs/benchmarks.md; the process' own gauge and /proc agree.
        own_rss_mib = (get(samples, "process_resident_memory_bytes") or 0) / 2**20
        print(
            f"\nimage {image}: {size_mib:.0f} MiB; exporter RSS in the container {rss_mib:.1f} MiB "
            f"(its own process_resident_memory_bytes {own_rss_mib:.1f} MiB)"
        )
        assert abs(own_rss_mib - rss_mib) < 5
    finally:
        subprocess.run([*PODMAN, "stop", "--time", "10", name], capture_output=True, timeout=60)
        logs = subprocess.run([*PODMAN, "logs", name], capture_output=True, text=True, timeout=60)
        record_output(logs.stdout + logs.stderr)
        podman("rm", "--force", name)
        spire.delete_entry(entry)
    # SIGTERM from `podman stop` is a clean stop; nothing of the container stays on the host.
    assert "msg=stopping" in logs.stderr, logs.stderr[-1000:]
    assert info["State"]["Status"] == "running"
    mounts, devices = host_state()
    assert mounts <= before[0], mounts - before[0]
    assert devices == before[1], devices ^ before[1]


@pytest.mark.parametrize("example", CHART_EXAMPLES, ids=lambda p: p.stem)
def test_each_chart_example_passes_check_config_in_the_image(image, example, tmp_path) -> None:
    """The configuration the chart renders from each example, judged by the image's own
    check-config, read-only as UID 65532 with the container's environment, as in the pod."""
    config_text, env = chart_example(example)
    (tmp_path / "config.yml").write_text(config_text)
    tmp_path.chmod(0o755)
    (tmp_path / "config.yml").chmod(0o644)
    env_args = [arg for name, value in env.items() for arg in ("--env", f"{name}={value}")]
    checked = podman(
        "run", "--rm", "--read-only", "--user", f"{NONROOT}:{NONROOT}", "--network", "none",
        "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024",
        "--volume", f"{tmp_path}:/etc/spire-health-exporter:ro", *env_args,
        image, "check-config", "/etc/spire-health-exporter/config.yml",
    )  # fmt: skip
    assert "configuration is valid" in checked, checked
