#!/usr/bin/env python3
"""Benchmark 3, cost to the agent: agent CPU seconds per 1,000 FetchX509SVID probes with the
channel reused (as the exporter does) versus a new channel per probe, and the agent's CPU at
the exporter's default schedule as a percentage of one core (minus the idle agent's own).

    .venv/bin/python -m bench.agent_cost [--probes 1000] [--minutes 5]
"""

from __future__ import annotations

import argparse
import time

from bench.common import cpu_seconds, exporter, local_spire, table
from exporter.client import WorkloadClient
from exporter.probes import x509_svid
from exporter.settings import ProbeSettings
from harness.local_spire import LocalSpire

SETTINGS = ProbeSettings(True, 15.0, 5.0)


def cost(spire: LocalSpire, probes: int, reuse: bool) -> float:
    before = cpu_seconds(spire.agent_pid)
    if reuse:
        with WorkloadClient(f"unix://{spire.agent_socket}") as client:
            for _ in range(probes):
                assert x509_svid.probe(client, SETTINGS).ok
    else:
        for _ in range(probes):
            with WorkloadClient(f"unix://{spire.agent_socket}") as client:
                assert x509_svid.probe(client, SETTINGS).ok
    time.sleep(1)
    return (cpu_seconds(spire.agent_pid) - before) * 1000 / probes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--probes", type=int, default=1000)
    parser.add_argument("--minutes", type=float, default=5.0)
    args = parser.parse_args()
    with local_spire() as spire:
        time.sleep(5)
        reused = cost(spire, args.probes, reuse=True)
        fresh = cost(spire, args.probes, reuse=False)
        period = args.minutes * 60
        before = cpu_seconds(spire.agent_pid)
        time.sleep(period)
        idle = cpu_seconds(spire.agent_pid) - before
        with exporter(spire):
            before = cpu_seconds(spire.agent_pid)
            time.sleep(period)
            busy = cpu_seconds(spire.agent_pid) - before
    print(f"agent CPU per 1,000 FetchX509SVID probes ({args.probes} probes each)\n")
    print(
        table(
            ["channel", "agent CPU per 1,000 probes"],
            [["reused (the exporter)", f"{reused:.3f} s"], ["new channel per probe", f"{fresh:.3f} s"]],
        )
    )
    print(f"\nagent CPU over {args.minutes:.0f} min, idle and with the exporter at its default schedule\n")
    print(
        table(
            ["agent", "CPU seconds", "% of one core"],
            [
                ["idle", f"{idle:.2f}", f"{100 * idle / period:.3f} %"],
                ["with the exporter", f"{busy:.2f}", f"{100 * busy / period:.3f} %"],
                ["caused by the exporter", f"{busy - idle:.2f}", f"{100 * (busy - idle) / period:.3f} %"],
            ],
        )
    )
    print("\ntarget: the default schedule costs the agent <= 0.2 % of one core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
