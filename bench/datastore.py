#!/usr/bin/env python3
"""Benchmark 10: what a slow datastore does, measured. Two SPIRE servers on one real PostgreSQL
(harness/server_stack.py), every query they send delayed by 0, 50, 200 and 1,000 ms in turn.

For each delay: the round-trip probe's p50 and p99 and its failures (the exporter's own probe
code, called every 5 s as the exporter would), the cached X.509-SVID fetch's (every second),
the servers' worst datastore and NewJWTSVID 99th percentiles from SPIRE's telemetry through the
shipped recordings, and the seconds from the delay until each server alert's condition held in a
real Prometheus with the shipped rules (their `for:` set to 0; a page comes that much later).

    .venv/bin/python -m bench.datastore [--seconds 60]     # about 6 minutes
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from alerts import generate
from bench.common import ROOT, exporter, pct, table
from exporter import config
from exporter.client import WorkloadClient
from exporter.probes import spec
from exporter.result import ProbeResult
from harness.local_spire import wait_until
from harness.prom_stack import PromStack, Webhook
from harness.server_stack import EVENTS_CACHE, ServerStack

DELAYS_MS = (0, 50, 200, 1000)
ROUND_TRIP, CACHED = "fetch_jwt_svid_roundtrip", "fetch_x509_svid"
SERVER_ALERTS = (
    "SpireServerDatastoreSlow",
    "SpireServerDatastoreErrors",
    "SpireServerDatastoreUnresponsive",
    "SpireServerSigningSlow",
    "SpireServerPathFailing",
    "SpireAgentServerRoundTripFailing",
)


class Prober:
    """The exporter's own probe with its settings, kept across the delays: the round trip takes
    its audiences in turn, so that each call finds no token of the same audience still cached."""

    def __init__(self, endpoint: str, name: str) -> None:
        self.endpoint = endpoint
        self.settings = config.build(
            # Audiences of its own: the exporter's round trip would otherwise leave its tokens in
            # the agent's cache for this one to find, and it would not reach the server.
            {
                "workload_api": {"socket": endpoint},
                "probes": {
                    ROUND_TRIP: {
                        "enabled": True,
                        "interval": "5s",
                        "timeout": "5s",
                        "audience": "bench/roundtrip",
                    }
                },
            },
            environ={},
        ).each[name]
        self.probe = spec(name).build()

    def loop(self, every: float, until: float, out: list[ProbeResult]) -> None:
        """One call per `every` seconds, as the exporter's scheduler makes them."""
        with WorkloadClient(self.endpoint) as client:
            while time.monotonic() < until:
                started = time.monotonic()
                out.append(self.probe(client, self.settings))
                time.sleep(max(0.0, every - (time.monotonic() - started)))


def value(prom: PromStack, expr: str) -> float | None:
    result = prom.query(expr)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def ms(seconds: float | None) -> str:
    return "-" if seconds is None or seconds != seconds else f"{seconds * 1000:.0f}"


def fired(alerts: dict[str, float]) -> str:
    return ", ".join(f"{a} {'still' if s < 0 else f'{s:.0f}'}" for a, s in alerts.items()) or "none"


def phase(
    stack: ServerStack, prom: PromStack, probers: dict[str, Prober], delay_ms: int, seconds: float
) -> dict[str, Any]:
    stack.set_delay(delay_ms / 1000)
    set_at = time.monotonic()
    until = set_at + seconds
    results: dict[str, list[ProbeResult]] = {ROUND_TRIP: [], CACHED: []}
    threads = [
        threading.Thread(target=probers[ROUND_TRIP].loop, args=(5.0, until, results[ROUND_TRIP])),
        threading.Thread(target=probers[CACHED].loop, args=(1.0, until, results[CACHED])),
    ]
    for t in threads:
        t.start()
    firing = 'count(ALERTS{alertname="%s", alertstate="firing"})'
    # Still firing from the delay before: no time of its own (-1).
    fired: dict[str, float] = {a: -1.0 for a in SERVER_ALERTS if value(prom, firing % a)}
    worst_datastore = worst_signing = 0.0
    while any(t.is_alive() for t in threads):
        for alert in SERVER_ALERTS:
            if alert not in fired and value(prom, firing % alert):
                fired[alert] = time.monotonic() - set_at
        datastore = value(prom, "max(instance_operation:spire_server_datastore_elapsed_seconds:p99)")
        signing = value(
            prom,
            'max(instance_method:spire_server_rpc_elapsed_seconds:p99{method="svid_v1_svid_new_jwtsvid"})',
        )
        worst_datastore = max(worst_datastore, datastore or 0.0)
        worst_signing = max(worst_signing, signing or 0.0)
        time.sleep(1)
    for t in threads:
        t.join()
    trips = [r.duration for r in results[ROUND_TRIP] if r.ok]
    cached = [r.duration for r in results[CACHED] if r.ok]
    return {
        "delay": delay_ms,
        "trip_p50": pct(trips, 0.5),
        "trip_p99": pct(trips, 0.99),
        "trip_failed": f"{sum(not r.ok for r in results[ROUND_TRIP])}/{len(results[ROUND_TRIP])}",
        "cached_p50": pct(cached, 0.5),
        "cached_p99": pct(cached, 0.99),
        "cached_failed": sum(not r.ok for r in results[CACHED]),
        "datastore_p99": worst_datastore,
        "signing_p99": worst_signing,
        "fired": fired,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60, help="measured seconds per delay")
    args = parser.parse_args()
    # Stopped with SIGTERM, it still stops every process it started (the context managers' exits).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    workdir = Path(tempfile.mkdtemp(prefix="bench-datastore-"))
    rules = workdir / "rules.yml"
    shipped = generate.load_config(ROOT / "alerts" / "config.yml")
    rules.write_text(generate.render(shipped, "0s")[generate.RULES_FILE])
    webhook = Webhook()
    rows = []
    with ServerStack(server_extra=EVENTS_CACHE) as stack:
        assert stack.a
        exporter_config = workdir / "exporter.yml"
        exporter_config.write_text(f"probes:\n  {ROUND_TRIP}:\n    enabled: true\n    interval: 15s\n")
        with exporter(stack.a, config=str(exporter_config)) as (_, url):
            jobs: dict[str, str | list[str]] = {
                "spire-agent": f"127.0.0.1:{stack.a.telemetry_port}",
                "spire-server": list(stack.server_telemetry().values()),
            }
            prom = PromStack(
                workdir, url.removeprefix("http://"), rules, webhook, {"cluster": "bench", "node": "n0"}, jobs
            )
            try:
                wait_until(
                    lambda: value(
                        prom, "count(instance_operation:spire_server_datastore_elapsed_seconds:p99)"
                    ),
                    60,
                    "the servers' datastore timings",
                )
                endpoint = f"unix://{stack.a.agent_socket}"
                probers = {name: Prober(endpoint, name) for name in (ROUND_TRIP, CACHED)}
                for delay in DELAYS_MS:
                    row = phase(stack, prom, probers, delay, args.seconds)
                    rows.append(row)
                    print(f"{delay} ms per query: {row}", flush=True)
            finally:
                prom.stop()
                webhook.close()
    fors = {name: shipped["alerts"][name]["for"] for name in SERVER_ALERTS}
    print()
    print(
        table(
            ["delay per query", "round trip p50 / p99 (ms)", "round trips failed",
             "cached X.509 p50 / p99 (ms)", "datastore p99, worst op (ms)", "NewJWTSVID p99 (ms)",
             "alert conditions held after (s)"],
            [
                [
                    f"{r['delay']} ms",
                    f"{ms(r['trip_p50'])} / {ms(r['trip_p99'])}",
                    r["trip_failed"],
                    f"{r['cached_p50'] * 1000:.1f} / {r['cached_p99'] * 1000:.1f}",
                    ms(r["datastore_p99"]),
                    ms(r["signing_p99"]),
                    fired(r["fired"]),
                ]
                for r in rows
            ],
        )
    )  # fmt: skip
    print(f"\nEach alert pages its `for:` after its condition holds: {fors}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
