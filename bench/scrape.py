#!/usr/bin/env python3
"""Benchmark 4, scrape latency: /metrics p50 and p99 with 1, 10 and 50 concurrent scrapers, with
the agent healthy and with it paused (SIGSTOP) so that every probe hangs until its deadline.

    .venv/bin/python -m bench.scrape [--requests 1000]
"""

from __future__ import annotations

import argparse
import threading
import time
import urllib.request

from bench.common import exporter, local_spire, pct, table


def load(url: str, scrapers: int, requests: int) -> list[float]:
    times: list[float] = []
    lock = threading.Lock()
    per = max(1, requests // scrapers)

    def worker() -> None:
        mine = []
        for _ in range(per):
            start = time.perf_counter()
            with urllib.request.urlopen(url, timeout=10) as r:
                r.read()
            mine.append(time.perf_counter() - start)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(scrapers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    rows = []
    with (
        local_spire() as spire,
        exporter(spire, "--probes.interval", "1s", "--probes.timeout", "900ms") as (_p, url),
    ):
        time.sleep(3)
        for state in ("healthy", "paused"):
            if state == "paused":
                spire.pause_agent()
                time.sleep(2)
            try:
                for scrapers in (1, 10, 50):
                    times = load(url + "/metrics", scrapers, args.requests)
                    rows.append(
                        [
                            state,
                            scrapers,
                            len(times),
                            f"{pct(times, 0.5) * 1000:.2f} ms",
                            f"{pct(times, 0.99) * 1000:.2f} ms",
                        ]
                    )
            finally:
                spire.resume_agent()
    print("/metrics latency, exporter probing every 1 s (0.9 s deadline)\n")
    print(table(["agent", "scrapers", "requests", "p50", "p99"], rows))
    print("\ntarget: p99 <= 20 ms at 10 scrapers, healthy and paused alike")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
