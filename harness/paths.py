"""Where things are in the repository."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "spire-health-exporter"
K8S = Path(__file__).resolve().parent / "k8s"
