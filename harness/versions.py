"""The pinned versions, read from versions.env at the repository root (scripts/versions reads
the same file for the shell scripts). An environment variable of the same name wins."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from harness.paths import ROOT

FILE = ROOT / "versions.env"


def _read(path: Path = FILE) -> dict[str, str]:
    pinned: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Z_]+", key):
            pinned[key] = value.strip()
    return pinned


def version(key: str) -> str:
    """One pinned version by its key in versions.env, e.g. version("SPIRE_VERSION")."""
    pinned = _read()
    if key not in pinned:
        raise KeyError(f"{key} is not in {FILE}")
    return os.environ.get(key) or pinned[key]


SPIRE = version("SPIRE_VERSION")
SPIRE_MATRIX = tuple(version("SPIRE_MATRIX").split())
SPIRE_INCIDENT = version("SPIRE_INCIDENT_VERSION")
KUBERNETES = version("KUBERNETES_VERSION")
HELM = version("HELM_VERSION")
PROMETHEUS_OPERATOR = version("PROMETHEUS_OPERATOR_VERSION")
PROMETHEUS = version("PROMETHEUS_VERSION")
ALERTMANAGER = version("ALERTMANAGER_VERSION")
KUBE_STATE_METRICS = version("KUBE_STATE_METRICS_VERSION")


def spire_binary_version(bin_dir: Path) -> str:
    """The release a spire-agent binary reports, as "vX.Y.Z" (builds from the module proxy say
    "X.Y.Z-dev-unk"): what a test really ran, whatever SPIRE_VERSION claims."""
    out = subprocess.run(
        [str(bin_dir / "spire-agent"), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    found = re.search(r"(\d+\.\d+\.\d+)", out.stdout + out.stderr)
    if not found:
        raise RuntimeError(f"{bin_dir / 'spire-agent'} --version printed no version")
    return "v" + found.group(1)
