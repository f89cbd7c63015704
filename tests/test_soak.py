"""Soak: thousands of fast probe cycles while the real agent and server are disturbed every way
the harness can, bounded in time (--soak-seconds) and stopping by itself. Afterwards FDs and
threads are back at their baseline, RSS grew by at most 5 MiB, no probe outlived its deadline,
and /metrics never stopped answering."""

from __future__ import annotations

import gc
import os
import re
import threading
import time
import urllib.request

import psutil
import pytest
from running import RunningExporter, fast_config, get

from exporter import app
from exporter.config import RPCS

pytestmark = [pytest.mark.spire, pytest.mark.slow]
INTERVAL, TIMEOUT = 0.3, 0.25


class Timed:
    """Wraps every prober to record how long each call really took, deadline or not."""

    def __init__(self, build):
        self.build = build
        self.longest = 0.0
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self):
        def wrap(probe):
            def timed(client, settings):
                start = time.monotonic()
                try:
                    return probe(client, settings)
                finally:
                    with self.lock:
                        self.longest = max(self.longest, time.monotonic() - start)
                        self.calls += 1

            return timed

        return {name: wrap(p) for name, p in self.build().items()}


def own_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_soak_against_a_disturbed_real_agent(healthy_spire, request, monkeypatch) -> None:
    spire = healthy_spire
    seconds = request.config.getoption("--soak-seconds")
    timed = Timed(app.build_probes)
    monkeypatch.setattr(app, "build_probes", timed)
    cfg = fast_config(
        f"unix://{spire.agent_socket}",
        **{
            "probes.interval": f"{INTERVAL}s",
            "probes.timeout": f"{TIMEOUT}s",
            "agent.sample_interval": "500ms",
            "agent.process.cmdline_pattern": re.escape(f"{spire.dir}/agent/agent.conf"),
        },
    )
    process = psutil.Process()
    with RunningExporter(cfg) as running:
        running.wait_for(
            lambda s: all(get(s, "spire_workload_api_probe_success", rpc=r) == 1 for r in RPCS), 15, "ok"
        )
        time.sleep(2)
        gc.collect()
        baseline = (own_fds(), threading.active_count(), process.memory_info().rss)

        scrapes = {"ok": 0, "failed": 0, "slowest": 0.0}
        stop = threading.Event()

        def scrape_forever() -> None:
            while not stop.wait(0.2):
                start = time.monotonic()
                try:
                    with urllib.request.urlopen(running.url + "/metrics", timeout=2) as r:
                        r.read()
                    scrapes["ok"] += 1
                except OSError:
                    scrapes["failed"] += 1
                scrapes["slowest"] = max(scrapes["slowest"], time.monotonic() - start)

        scraper = threading.Thread(target=scrape_forever, daemon=True)
        scraper.start()

        def restore_entry() -> None:
            spire.entry_id = spire.create_entry()

        def denied(s) -> bool:
            return get(s, "spire_workload_api_probe_success", rpc="fetch_x509_svid") == 0

        # (name, disturb, until it is seen or this long, restore); the agent notices a deleted
        # entry only at its next sync, every 5 s.
        disturbances = [
            ("pause", spire.pause_agent, 1.5, spire.resume_agent),
            ("kill", spire.kill_agent, 1.5, spire.start_agent),
            ("server down", spire.stop_server, 3.0, spire.start_server),
            ("entry deleted", lambda: spire.delete_entry(spire.entry_id), denied, restore_entry),
        ]
        end = time.monotonic() + seconds
        rounds, done = 0, []
        try:
            while time.monotonic() < end:
                name, disturb, hold, restore = disturbances[rounds % len(disturbances)]
                done.append(name)
                disturb()
                if callable(hold):
                    running.wait_for(hold, 20, f"{name} to show")
                else:
                    time.sleep(hold)
                restore()
                spire.wait_for_svid(60)
                time.sleep(1.0)
                rounds += 1
        finally:
            if spire.agent:
                spire.resume_agent()
            stop.set()
            scraper.join(5)

        running.wait_for(
            lambda s: all(get(s, "spire_workload_api_probe_success", rpc=r) == 1 for r in RPCS),
            30,
            "recovery",
        )
        time.sleep(3)
        gc.collect()
        after = (own_fds(), threading.active_count(), process.memory_info().rss)
        samples = running.scrape()

    total = sum(v for (n, _), v in samples.items() if n == "spire_workload_api_probes_total")
    print(
        f"soak: {seconds:.0f} s, {rounds} disturbances, {timed.calls} probes ({total:.0f} counted), "
        f"longest probe {timed.longest:.3f} s, scrapes ok/failed {scrapes['ok']}/{scrapes['failed']}, "
        f"slowest scrape {scrapes['slowest'] * 1000:.0f} ms; fds {baseline[0]}->{after[0]}, "
        f"threads {baseline[1]}->{after[1]}, rss +{(after[2] - baseline[2]) / 2**20:.2f} MiB"
    )
    assert set(done) == {d[0] for d in disturbances}, f"only {sorted(set(done))} happened"
    assert timed.calls >= 20 * seconds  # 7 probes every 0.3 s: thousands in a full-length run
    assert timed.longest <= TIMEOUT + 0.5, f"a probe ran {timed.longest:.3f} s past a {TIMEOUT} s deadline"
    assert scrapes["failed"] == 0 and scrapes["ok"] >= 2 * seconds
    assert after[0] <= baseline[0] + 2, f"file descriptors {baseline[0]} -> {after[0]}"
    assert after[1] <= baseline[1] + 1, f"threads {baseline[1]} -> {after[1]}"
    assert after[2] - baseline[2] <= 5 * 2**20, f"RSS grew {(after[2] - baseline[2]) / 2**20:.1f} MiB"
    for code in ("DEADLINE_EXCEEDED", "UNAVAILABLE", "PERMISSION_DENIED"):
        assert any(n == "spire_workload_api_probes_total" and ("code", code) in labels and v > 0
                   for (n, labels), v in samples.items()), f"the soak never produced {code}"  # fmt: skip
