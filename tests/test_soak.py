"""Soak: thousands of fast probe cycles while the real agent and server are disturbed every way
the harness can, bounded in time (--soak-seconds) and stopping by itself. The exporter runs as
its own process, as deployed; afterwards its FDs and threads are back at their baseline, its RSS
grew by at most 5 MiB, no probe outlived its deadline, and /metrics never stopped answering."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import WORKLOAD_RPCS as RPCS
from conftest import record_output

from harness.local_spire import free_port, wait_until

pytestmark = [pytest.mark.spire, pytest.mark.slow]
INTERVAL, TIMEOUT = 0.3, 0.25


def status(pid: int) -> tuple[int, int, int]:
    """(open FDs, threads, RSS bytes) of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"]), int(fields["VmRSS"].split()[0]) * 1024


class Logs:
    """Reads the exporter's JSON log as it comes: per-probe debug lines are tallied, not kept."""

    def __init__(self, stream) -> None:
        self.probes = 0
        self.longest = 0.0
        self.codes: set[str] = set()
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            entry = json.loads(line)
            if entry["msg"] == "probe done":
                self.probes += 1
                self.longest = max(self.longest, float(entry["duration_seconds"]))
                self.codes.add(entry["code"])
            else:
                record_output(line)


def metrics(url: str) -> str:
    with urllib.request.urlopen(url + "/metrics", timeout=2) as r:
        return r.read().decode()


def all_ok(url: str) -> bool:
    text = metrics(url)
    return all(f'spire_health_probe_success{{rpc="{rpc}"}} 1.0' in text for rpc in RPCS)


def test_soak_against_a_disturbed_real_agent(healthy_spire, request) -> None:
    spire = healthy_spire
    seconds = request.config.getoption("--soak-seconds")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "exporter",
            "--spiffe.endpoint-socket", f"unix://{spire.agent_socket}",
            "--web.listen-address", f"127.0.0.1:{port}",
            "--probes.interval", f"{INTERVAL}s", "--probes.timeout", f"{TIMEOUT}s",
            "--agent.cmdline-pattern", re.escape(f"{spire.dir}/agent/agent.conf"),
            "--log.level", "debug", "--log.format", "json",
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    logs = Logs(proc.stderr)
    try:
        wait_until(lambda: _quiet(all_ok, url), 20, "every probe to succeed")
        time.sleep(3)
        baseline = status(proc.pid)

        scrapes = {"ok": 0, "failed": 0, "slowest": 0.0}
        stop = threading.Event()

        def scrape_forever() -> None:
            while not stop.wait(0.2):
                start = time.monotonic()
                try:
                    metrics(url)
                    scrapes["ok"] += 1
                except OSError:
                    scrapes["failed"] += 1
                scrapes["slowest"] = max(scrapes["slowest"], time.monotonic() - start)

        scraper = threading.Thread(target=scrape_forever, daemon=True)
        scraper.start()

        def restore_entry() -> None:
            spire.entry_id = spire.create_entry()

        def denied() -> bool:
            return 'spire_health_probe_success{rpc="fetch_x509_svid"} 0.0' in metrics(url)

        # (name, disturb, until it is seen or this long, restore); the agent notices a deleted
        # entry only at its next sync, every 5 s.
        disturbances = [
            ("pause", spire.pause_agent, 1.5, spire.resume_agent),
            ("kill", spire.kill_agent, 1.5, spire.start_agent),
            ("server down", spire.stop_server, 3.0, spire.start_server),
            ("entry deleted", lambda: spire.delete_entry(spire.entry_id), denied, restore_entry),
        ]
        end = time.monotonic() + seconds
        done: list[str] = []
        try:
            while time.monotonic() < end:
                name, disturb, hold, restore = disturbances[len(done) % len(disturbances)]
                done.append(name)
                disturb()
                if callable(hold):
                    wait_until(hold, 20, f"{name} to show")
                else:
                    time.sleep(hold)
                restore()
                spire.wait_for_svid(60)
                time.sleep(1.0)
        finally:
            if spire.agent:
                spire.resume_agent()
            stop.set()
            scraper.join(5)

        wait_until(lambda: _quiet(all_ok, url), 30, "recovery")
        time.sleep(3)
        after = status(proc.pid)
        assert proc.poll() is None, "the exporter exited"
    finally:
        proc.terminate()
        proc.wait(20)
        logs.thread.join(5)

    mib = 2**20
    print(
        f"soak: {seconds:.0f} s, {len(done)} disturbances, {logs.probes} probes, "
        f"longest {logs.longest:.3f} s, codes {sorted(logs.codes)}; "
        f"scrapes ok/failed {scrapes['ok']}/{scrapes['failed']}, slowest {scrapes['slowest'] * 1000:.0f} ms; "
        f"fds {baseline[0]}->{after[0]}, threads {baseline[1]}->{after[1]}, "
        f"RSS {baseline[2] / mib:.1f}->{after[2] / mib:.1f} MiB"
    )
    assert set(done) == {d[0] for d in disturbances}, f"only {sorted(set(done))} happened"
    assert logs.probes >= 15 * seconds  # 6 probes every 0.3 s: thousands in a full-length run
    assert {"DEADLINE_EXCEEDED", "UNAVAILABLE", "PERMISSION_DENIED", "OK"} <= logs.codes
    assert logs.longest <= TIMEOUT + 0.5, f"a probe ran {logs.longest:.3f} s past a {TIMEOUT} s deadline"
    assert scrapes["failed"] == 0 and scrapes["ok"] >= 2 * seconds
    assert after[0] <= baseline[0], f"file descriptors {baseline[0]} -> {after[0]}"
    assert after[1] <= baseline[1], f"threads {baseline[1]} -> {after[1]}"
    assert after[2] - baseline[2] <= 5 * 2**20, f"RSS grew {(after[2] - baseline[2]) / 2**20:.1f} MiB"


def _quiet(predicate, url: str) -> bool:
    try:
        return bool(predicate(url))
    except OSError:
        return False
