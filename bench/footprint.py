#!/usr/bin/env python3
"""Footprint: the exporter's RSS and CPU at default settings with every probe on, against the
real agent, and how its memory splits between the interpreter, grpcio and the rest.

    .venv/bin/python -m bench.footprint [--minutes 10]
    .venv/bin/python -m bench.footprint --minutes 5 --against HEAD~1   # side by side, one run

With --against, the exporter of that commit (its tree from `git archive`) runs at the same time,
against the same agent, so the two columns share the machine's noise.
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from bench.common import ROOT, cpu_seconds, exporter, local_spire, median, rss_bytes, table

IMPORTS = {
    "interpreter alone": "pass",
    "+ grpcio and protobuf": "import grpc, google.protobuf",
    "+ prometheus_client, cryptography, psutil, yaml": (
        "import grpc, google.protobuf, prometheus_client, cryptography.x509, psutil, yaml"
    ),
    "+ the exporter's modules": "import exporter.app, exporter.cli",
}
MIB = 2**20


def import_rss(code: str, source: Path | None = None) -> int:
    """RSS of a fresh interpreter after running `code` (resident pages from /proc/self/statm)."""
    report = "import os\nprint(int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE'))"
    done = subprocess.run(
        [sys.executable, "-c", f"{code}\n{report}"], capture_output=True, text=True, check=True, cwd=source
    )
    return int(done.stdout)


def checkout(rev: str, into: Path) -> Path:
    """The tree of `rev`, unpacked (no worktree is registered, nothing is left in .git)."""
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, capture_output=True, check=True).stdout
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(into, filter="data")
    return into


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--against", metavar="REV", help="run that commit's exporter beside this one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        cfg = Path(tmp) / "exporter.yml"
        # Every probe on, including the opt-in server round trip, at the default schedule.
        cfg.write_text("probes:\n  fetch_jwt_svid_roundtrip: {enabled: true}\n")
        trees: dict[str, Path | None] = {"this tree": None}
        if args.against:
            trees[args.against] = checkout(args.against, Path(tmp) / "against")
        spire = stack.enter_context(local_spire())
        procs = {
            name: stack.enter_context(exporter(spire, config=str(cfg), source=tree))[0]
            for name, tree in trees.items()
        }
        start = time.monotonic()
        start_cpu = {name: cpu_seconds(p.pid) for name, p in procs.items()}
        samples: dict[str, list[int]] = {name: [] for name in procs}
        end = start + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(10.0, max(0.0, end - time.monotonic())))
            for name, p in procs.items():
                samples[name].append(rss_bytes(p.pid))
        elapsed = time.monotonic() - start
        cpu = {name: cpu_seconds(p.pid) - start_cpu[name] for name, p in procs.items()}
        rss_end = {name: rss_bytes(p.pid) for name, p in procs.items()}
        print(f"footprint over {elapsed / 60:.1f} min at the default 15 s schedule, every probe on\n")
        print(
            table(
                ["figure", *procs],
                [
                    ["RSS, median of samples", *(f"{median(samples[n]) / MIB:.1f} MiB" for n in procs)],
                    ["RSS at the end", *(f"{rss_end[n] / MIB:.1f} MiB" for n in procs)],
                    [
                        "CPU, % of one core",
                        *(f"{100 * cpu[n] / elapsed:.3f} % ({cpu[n]:.2f} s)" for n in procs),
                    ],
                ],
            )
        )
        print("\nwhere the memory goes (RSS of a fresh interpreter after each import step)\n")
        rows = []
        for label, code in IMPORTS.items():
            rows.append([label, *(f"{import_rss(code, tree) / MIB:.1f} MiB" for tree in trees.values())])
        rows.append(
            ["running (threads, channel, state)", *(f"{median(samples[n]) / MIB:.1f} MiB" for n in procs)]
        )
        print(table(["step", *procs], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
