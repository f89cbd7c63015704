#!/usr/bin/env python3
"""Benchmark 1, footprint: the exporter's RSS and CPU at default settings with every probe on,
against the real agent, and how its memory splits between the interpreter, grpcio and the rest.

    .venv/bin/python -m bench.footprint [--minutes 10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time

from bench.common import cpu_seconds, exporter, local_spire, median, rss_bytes, table

IMPORTS = {
    "interpreter alone": "pass",
    "+ grpcio and protobuf": "import grpc, google.protobuf",
    "+ prometheus_client, cryptography, psutil, yaml": (
        "import grpc, google.protobuf, prometheus_client, cryptography.x509, psutil, yaml"
    ),
    "+ the exporter's modules": "import exporter.app, exporter.cli",
}


def import_rss(code: str) -> int:
    """RSS of a fresh interpreter after running `code` (resident pages from /proc/self/statm)."""
    report = "import os\nprint(int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE'))"
    probe = f"{code}\n{report}"
    return int(
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as cfg:
        # Every probe on, including the opt-in server round trip, at the default schedule.
        cfg.write("probes:\n  fetch_jwt_svid_roundtrip: {enabled: true}\n")
        cfg.flush()
        with local_spire() as spire, exporter(spire, config=cfg.name) as (proc, _url):
            start_cpu, start = cpu_seconds(proc.pid), time.monotonic()
            samples = []
            end = start + args.minutes * 60
            while time.monotonic() < end:
                time.sleep(min(10.0, max(0.0, end - time.monotonic())))
                samples.append(rss_bytes(proc.pid))
            elapsed = time.monotonic() - start
            cpu = cpu_seconds(proc.pid) - start_cpu
            rss_end = rss_bytes(proc.pid)
    mib = 2**20
    print(f"footprint over {elapsed / 60:.1f} min at the default 15 s schedule, every probe on\n")
    print(
        table(
            ["figure", "measured", "target"],
            [
                ["RSS, median of samples", f"{median(samples) / mib:.1f} MiB", "<= 50 MiB"],
                ["RSS at the end", f"{rss_end / mib:.1f} MiB", ""],
                ["CPU", f"{100 * cpu / elapsed:.3f} % of one core ({cpu:.2f} s)", "<= 0.5 %"],
            ],
        )
    )
    print("\nwhere the memory goes (RSS of a fresh interpreter after each import step)\n")
    previous, rows = 0, []
    for label, code in IMPORTS.items():
        rss = import_rss(code)
        rows.append([label, f"{rss / mib:.1f} MiB", f"+{(rss - previous) / mib:.1f} MiB" if previous else ""])
        previous = rss
    rows.append(
        [
            "running (threads, channel, state)",
            f"{median(samples) / mib:.1f} MiB",
            f"+{(median(samples) - previous) / mib:.1f} MiB",
        ]
    )
    print(table(["step", "RSS", "added"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
