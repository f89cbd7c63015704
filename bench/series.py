#!/usr/bin/env python3
"""Benchmark 6, series count: the series one exporter exposes, by metric, against the real agent
with every probe on, and what they cost Prometheus across a cluster.

    .venv/bin/python -m bench.series [--nodes 5000]
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
    args = parser.parse_args()
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as cfg:
        cfg.write("probes:\n  fetch_jwt_svid_roundtrip: {enabled: true}\n")
        cfg.flush()
        with (
            local_spire() as spire,
            exporter(spire, "--probes.interval", "1s", "--probes.timeout", "900ms", config=cfg.name) as (
                _p,
                url,
            ),
        ):
            time.sleep(5)
            with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
                text = r.read().decode()
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        counts[family.name] += len(family.samples)
    total = sum(counts.values())
    print("series per exporter (one node, one SVID of each kind, one trust domain, every probe on)\n")
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
