"""`probe --once`: every enabled probe once, as a table an operator reads inside the pod."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from exporter.agent.monitor import AgentMonitor
from exporter.answers import SvidInfo
from exporter.client import WorkloadClient
from exporter.config import Config
from exporter.probes import spec
from exporter.result import ProbeResult
from exporter.store.agent import AgentStore


def _row(result: ProbeResult, now: float) -> list[str]:
    svids = [f for f in result.facts if isinstance(f, SvidInfo)]
    ids = ", ".join(sorted({s.spiffe_id for s in svids})) or "-"
    expiry = min((s.expiry for s in svids), default=None)
    left = "-" if expiry is None else f"{(expiry - now) / 60:.1f} min"
    detail = "" if result.ok else result.message
    return [result.rpc, result.outcome, f"{result.duration * 1000:.1f} ms", ids, left, detail]


def run_once(config: Config, out: TextIO = sys.stdout) -> int:
    with WorkloadClient(config.endpoint) as client:
        results = [spec(name).build()(client, settings) for name, settings in config.enabled()]
    now = time.time()
    table = [
        ["RPC", "RESULT", "LATENCY", "SPIFFE ID", "EXPIRES IN", "ERROR"],
        *(_row(r, now) for r in results),
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip(), file=out
        )
    store = AgentStore()
    AgentMonitor(config.agent, config.endpoint, store)()
    snap = store.snapshot()
    if snap.process is not None:
        p = snap.process
        limit = snap.cgroup.limit if snap.cgroup else None
        print(
            f"agent pid {p.pid}: RSS {p.rss / 2**20:.1f} MiB, peak {(p.peak_rss or 0) / 2**20:.1f} MiB, "
            f"cgroup limit {'none' if limit is None else f'{limit / 2**20:.0f} MiB'}",
            file=out,
        )
    elif snap.process_up is False:
        print("agent process: not found", file=out)
    return 0 if all(r.ok for r in results) else 1
