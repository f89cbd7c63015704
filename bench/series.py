#!/usr/bin/env python3
"""Benchmark 6, series count: the series one exporter exposes, by metric, against the real agent,
and what they cost Prometheus across a fleet. At the default settings (the budget is 100 per
node), or with --every-probe: the round trip and the Debug API probe on, and the agent's HTTP
health read as well.

    .venv/bin/python -m bench.series [--nodes 5000] [--every-probe]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import urllib.request
from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from bench.common import exporter, local_spire, table

# A common planning figure for Prometheus 2.x: a few KiB of memory per active series.
BYTES_PER_SERIES = 4096


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--scrape-interval", type=float, default=30.0)
    parser.add_argument("--every-probe", action="store_true")
    args = parser.parse_args()
    every = args.every_probe
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as cfg, local_spire() as spire:
        cfg.write(
            "probes:\n  fetch_jwt_svid_roundtrip: {enabled: true}\n"
            f"  debug_get_info: {{socket: 'unix://{spire.admin_socket}'}}\n"
            if every
            else "{}\n"
        )
        cfg.flush()
        with exporter(spire, config=cfg.name, agent_health=every) as (_p, url):
            time.sleep(20)  # every probe ran once: the first cycle is spread over the 15 s interval
            with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
                text = r.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        counts[family.name] += len(family.samples)
    total = sum(counts.values())
    what = "every probe on, the agent's HTTP health read" if args.every_probe else "default settings"
    print(f"series per exporter (one node, one SVID of each kind, one trust domain, {what})\n")
    print(
        table(
            ["metric", "series"],
            [[name, n] for name, n in sorted(counts.items(), key=lambda kv: -kv[1])] + [["total", total]],
        )
    )
    print(
        f"\n{args.nodes} nodes: {total * args.nodes:,} series; at ~{BYTES_PER_SERIES // 1024} KiB each "
        f"about {total * args.nodes * BYTES_PER_SERIES / 2**30:.1f} GiB of Prometheus memory, and "
        f"{total * args.nodes / args.scrape_interval:,.0f} samples/s scraped every {args.scrape_interval:g} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
