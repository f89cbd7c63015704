"""Runs a command in a cgroup whose path looks like a Kubernetes pod container's, so that a real
SPIRE agent's `k8s` workload attestor takes it for a pod and asks the kubelet about it.

The cgroup is made under a directory of its own and removed afterwards. Root only.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import uuid
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def _hierarchy() -> Path:
    """cgroup v1's pids hierarchy when mounted (hybrid hosts), else the v2 unified one."""
    pids = CGROUP / "pids"
    return pids if (pids / "cgroup.procs").exists() else CGROUP


def run_as_pod(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `cmd` with /proc/PID/cgroup naming a pod UID and a 64-hex container ID."""
    top = _hierarchy() / f"spire-health-test-{uuid.uuid4().hex[:8]}"
    container = top / f"pod{uuid.uuid4()}" / uuid.uuid4().hex.ljust(64, "0")
    container.mkdir(parents=True)
    try:
        # The shell joins the cgroup first, then becomes the command: no moment outside it.
        script = f"echo $$ > {shlex.quote(str(container / 'cgroup.procs'))} && exec {shlex.join(cmd)}"
        return subprocess.run(
            ["sh", "-c", script], capture_output=True, text=True, timeout=timeout, check=False
        )
    finally:
        for d in (container, container.parent, top):
            with contextlib.suppress(OSError):
                d.rmdir()
