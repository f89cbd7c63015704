"""The seed's third cause against the real agent: clients that open a source per request, and
sources that leak. Real SPIRE (telemetry on, debug logs), the exporter, a real
Prometheus scraping both with the shipped rules (only `for:` shortened), and the clients of
harness/workload_clients.py run as separate processes, one after another:

- a well-behaved client (one channel, one stream) fires nothing;
- a leaking client raises SPIRE's in-flight gauge and the exporter's socket count together,
  and fires SpireAgentWorkloadAPIStreamsGrowing;
- a channel-per-request client raises SPIRE's started-RPC counter and fires
  SpireAgentWorkloadAPIChurnHigh; the agent's debug log names its PID, as the runbook says.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import ROOT, require
from running import RunningExporter

from exporter import config
from harness.local_spire import LocalSpire, SpireUnavailable, wait_until
from harness.prom_stack import PromStack, Webhook, binaries

pytestmark = [pytest.mark.spire, pytest.mark.prometheus, pytest.mark.slow]
LABELS = {"node": "churn-node", "cluster": "test"}
CLIENTS = "harness.workload_clients"
CHURN, GROWING = "SpireAgentWorkloadAPIChurnHigh", "SpireAgentWorkloadAPIStreamsGrowing"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalSpire, PromStack]]:
    if None in binaries():
        require("prometheus and prometheus-alertmanager (Debian packages) are not installed")
    try:
        spire = LocalSpire(agent_log_level="DEBUG")
    except SpireUnavailable as e:
        require(str(e))
    workdir = tmp_path_factory.mktemp("churn")
    from alerts import generate

    rules = workdir / "rules.yml"
    rules.write_text(
        generate.render(generate.load_config(ROOT / "alerts" / "config.yml"), "3s")[generate.RULES_FILE]
    )
    # The shipped schedule: the exporter's own calls are part of every node's baseline.
    cfg = config.build(
        {
            "workload_api": {"socket": f"unix://{spire.agent_socket}"},
            "agent": {"sample_interval": "1s"},
            "web": {"listen_address": "127.0.0.1:0"},
        },
        environ={},
    )
    webhook = Webhook()
    with spire:
        spire.create_entry()
        spire.wait_for_svid()
        with RunningExporter(cfg) as running:
            prom = PromStack(
                workdir,
                running.url.removeprefix("http://"),
                rules,
                webhook,
                LABELS,
                jobs={"spire-agent": f"127.0.0.1:{spire.telemetry_port}"},
            )
            try:
                yield spire, prom
            finally:
                prom.stop()
                webhook.close()


def client(spire: LocalSpire, mode: str, *args: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", CLIENTS, mode, "--socket", str(spire.agent_socket), *args]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]


def value(prom: PromStack, expr: str) -> float | None:
    result = prom.query(expr)["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def alert_state(prom: PromStack, name: str) -> str | None:
    alerts = prom.query(f'ALERTS{{alertname="{name}"}}')["data"]["result"]
    states = {a["metric"]["alertstate"] for a in alerts}
    return "firing" if "firing" in states else "pending" if states else None


def test_a_well_behaved_client_fires_nothing(stack: tuple[LocalSpire, PromStack]) -> None:
    spire, prom = stack
    wait_until(lambda: value(prom, 'up{job="spire-agent"}') == 1, 60, "Prometheus scraping the agent")
    wait_until(
        lambda: value(prom, "spire_health_agent_socket_connections") is not None, 60, "the socket count"
    )
    good = client(spire, "good", "--seconds", "30", "--rate", "0.5")
    time.sleep(5)
    # Its one stream is in flight the whole time, on its one connection.
    open_during = value(prom, "spire_health_agent_socket_connections")
    result = finish(good)
    assert result["svid_updates"] >= 1 and result["calls"] >= 10, result
    time.sleep(3)
    for name in (CHURN, GROWING):
        fired = prom.query(f'max_over_time(ALERTS{{alertname="{name}"}}[2m])')["data"]["result"]
        assert not fired, (name, fired)
    rate = value(prom, 'sum(rate(spire_agent_workload_api_connection{job="spire-agent"}[1m]))')
    print(
        f"\nwell-behaved client: {rate:.2f} Workload API calls started per second; "
        f"{open_during:.0f} connections open"
    )
    assert rate is not None and rate < 2


def test_a_leaking_client_shows_in_both_counts_and_fires(stack: tuple[LocalSpire, PromStack]) -> None:
    spire, prom = stack
    in_flight = 'spire_agent_workload_api_connections{job="spire-agent"}'
    sockets = 'spire_health_agent_socket_connections{job="spire-health-exporter"}'
    before = (value(prom, in_flight), value(prom, sockets))
    leak = client(spire, "leak", "--seconds", "60", "--rate", "2", "--max", "30")
    started = time.monotonic()
    try:
        wait_until(lambda: alert_state(prom, GROWING) == "firing", 60, f"{GROWING} firing")
        fired_after = time.monotonic() - started
        wait_until(
            lambda: value(prom, in_flight) == before[0] + 30, 30, "all 30 leaked streams in SPIRE's gauge"
        )
        # The exporter's own count, from the agent's network namespace, moves with SPIRE's.
        wait_until(lambda: value(prom, sockets) >= before[1] + 29, 10, "the leaked connections in our count")
        after = (value(prom, in_flight), value(prom, sockets))
    finally:
        result = finish(leak)
    assert result["streams"] == 30
    print(
        f"\nleak of 30 sources: SPIRE's in-flight RPCs {before[0]:.0f} -> {after[0]:.0f}, "
        f"our socket connections {before[1]:.0f} -> {after[1]:.0f}; "
        f"{GROWING} firing after {fired_after:.0f} s"
    )
    assert abs((after[1] - before[1]) - (after[0] - before[0])) <= 1
    assert alert_state(prom, CHURN) != "firing"
    wait_until(lambda: alert_state(prom, GROWING) is None, 60, f"{GROWING} resolved once the sources closed")


def test_a_client_with_a_channel_per_request_fires_churn(stack: tuple[LocalSpire, PromStack]) -> None:
    spire, prom = stack
    churn = client(spire, "per-call", "--seconds", "120", "--rate", "20")
    started = time.monotonic()
    try:
        wait_until(lambda: alert_state(prom, CHURN) == "firing", 110, f"{CHURN} firing")
        fired_after = time.monotonic() - started
        rate = value(prom, 'sum(rate(spire_agent_workload_api_connection{job="spire-agent"}[30s]))')
    finally:
        churn.terminate()
        churn.communicate(timeout=30)
    print(
        f"\nchannel per request at 20/s: {rate:.1f} calls started per second; "
        f"{CHURN} firing after {fired_after:.0f} s"
    )
    assert rate is not None and rate > 10
    # The runbook's way to the culprit: the agent's debug line names each caller's PID.
    log = (spire.dir / "spire-agent.log").read_text(errors="replace")
    attested = [line for line in log.splitlines() if "PID attested to have selectors" in line]
    assert sum(f"pid={churn.pid} " in line or f'"pid":{churn.pid},' in line for line in attested) > 100, (
        attested[-3:]
    )
