#!/usr/bin/env python3
"""The harm a misbehaving client does to its neighbours: the agent's CPU, and the p99 latency of
a well-behaved client on the same agent, while each client of harness/workload_clients.py runs.

    .venv/bin/python -m bench.client_harm [--seconds 30]

The well-behaved client holds one channel and one SVID stream and fetches the X.509 bundles ten
times a second on that channel, timing each call. Each scenario runs for --seconds and stops.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

from bench.common import ROOT, cpu_seconds, local_spire, table
from harness.local_spire import LocalSpire

CLIENTS = "harness.workload_clients"
SCENARIOS = [
    ("well-behaved client alone", None),
    ("+ a new channel per request, 20/s", ["per-call", "--rate", "20"]),
    ("+ a new channel per request, as fast as it goes", ["per-call", "--rate", "1000"]),
    ("+ 200 leaked sources (new channel and stream, never closed)", ["leak", "--rate", "50", "--max", "200"]),
]


def run(spire: LocalSpire, seconds: float, other: list[str] | None) -> tuple[float, float, str]:
    socket = ["--socket", str(spire.agent_socket), "--seconds", str(seconds)]
    neighbour = None
    if other:
        neighbour = subprocess.Popen(
            [sys.executable, "-m", CLIENTS, *other, *socket], stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        time.sleep(1)
    before = cpu_seconds(spire.agent_pid)
    good = subprocess.run(
        [sys.executable, "-m", CLIENTS, "good", "--rate", "10", *socket],
        capture_output=True, text=True, check=True, timeout=seconds + 60, cwd=ROOT,
    )  # fmt: skip
    cpu = (cpu_seconds(spire.agent_pid) - before) / seconds
    done = ""
    if neighbour:
        out, _ = neighbour.communicate(timeout=seconds + 60)
        done = out.splitlines()[-1]
    return json.loads(good.stdout.splitlines()[-1])["p99_seconds"], cpu, done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    rows = []
    with local_spire() as spire:
        time.sleep(3)
        for name, other in SCENARIOS:
            p99, cpu, done = run(spire, args.seconds, other)
            rows.append([name, f"{p99 * 1000:.1f} ms", f"{cpu * 100:.1f} %", done or "-"])
    print(table(["scenario", "well-behaved p99", "agent CPU (one core)", "the other client did"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
