#!/usr/bin/env python3
"""Benchmark 5, detection time: seconds from pausing the agent (SIGSTOP) to probe_success 0 and
the DEADLINE_EXCEEDED counter rising for FetchX509SVID, at the default and at a fast schedule.

    .venv/bin/python -m bench.detection [--repeats 3]
"""

from __future__ import annotations

import argparse
import re
import time
import urllib.request

from bench.common import exporter, local_spire, median, table
from harness.local_spire import LocalSpire

SUCCESS = re.compile(r'^spire_health_probe_success\{rpc="fetch_x509_svid"\} (\S+)$', re.M)
DEADLINES = re.compile(
    r'^spire_health_probes_total\{code="DEADLINE_EXCEEDED",rpc="fetch_x509_svid"\} (\S+)$', re.M
)


def read(url: str) -> tuple[float, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    success, deadlines = SUCCESS.search(text), DEADLINES.search(text)
    assert success and deadlines, "the exporter's page lacks probe_success or the deadline count"
    return float(success.group(1)), float(deadlines.group(1))


def detect(spire: LocalSpire, url: str, limit: float) -> tuple[float, float]:
    while read(url)[0] != 1:
        time.sleep(0.1)
    _, deadlines = read(url)
    spire.pause_agent()
    start = time.monotonic()
    to_zero = to_count = None
    try:
        while (to_zero is None or to_count is None) and time.monotonic() - start < limit:
            success, count = read(url)
            now = time.monotonic() - start
            if to_zero is None and success == 0:
                to_zero = now
            if to_count is None and count > deadlines:
                to_count = now
            time.sleep(0.05)
    finally:
        spire.resume_agent()
    return to_zero or float("inf"), to_count or float("inf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with local_spire() as spire:
        for label, interval, timeout in (("default", 15.0, 5.0), ("fast", 1.0, 0.5)):
            flags = ("--probes.interval", f"{interval}s", "--probes.timeout", f"{timeout}s")
            zero, count = [], []
            with exporter(spire, *flags) as (_proc, url):
                for _ in range(args.repeats):
                    z, c = detect(spire, url, interval + timeout + 10)
                    zero.append(z)
                    count.append(c)
                    time.sleep(interval + 1)
            target = interval + timeout + 1
            rows.append(
                [label, f"{interval:g} s / {timeout:g} s", f"{median(zero):.2f} s (max {max(zero):.2f})",
                 f"{median(count):.2f} s (max {max(count):.2f})", f"<= {target:g} s"]
            )  # fmt: skip
    print(f"seconds from SIGSTOP of the agent to detection, median of {args.repeats}\n")
    print(
        table(["schedule", "interval / deadline", "probe_success 0", "DEADLINE_EXCEEDED +1", "target"], rows)
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
