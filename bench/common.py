"""Shared pieces of the benchmarks: a real local SPIRE, an exporter subprocess, and statistics."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

from harness.local_spire import LocalSpire, free_port
from harness.paths import ROOT

__all__ = ["ROOT", "cpu_seconds", "exporter", "local_spire", "median", "pct", "rss_bytes", "table"]


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [list(map(str, headers)), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


@contextlib.contextmanager
def local_spire() -> Iterator[LocalSpire]:
    with LocalSpire() as spire:
        yield spire


@contextlib.contextmanager
def exporter(
    spire: LocalSpire,
    *extra: str,
    config: str | None = None,
    source: Path | None = None,
    agent_health: bool = True,
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """The exporter as its own process (as deployed), listening on a free loopback port; from
    `source`, another checkout's tree, instead of this one when given; reading the agent's HTTP
    health unless `agent_health` is False (a setting a default install doesn't have)."""
    port = free_port()
    args = [
        sys.executable, "-m", "exporter",
        "--spiffe.endpoint-socket", f"unix://{spire.agent_socket}",
        "--web.listen-address", f"127.0.0.1:{port}",
        "--agent.cmdline-pattern", f"{spire.dir}/agent/agent.conf",
        *(["--agent.health-url", f"http://127.0.0.1:{spire.health_port}"] if agent_health else []),
        "--log.level", "warn",
        *(["--config.file", config] if config else []),
        *extra,
    ]  # fmt: skip
    # `python -m exporter` imports the package from its working directory before the installed one.
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=source)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    try:
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(20)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
