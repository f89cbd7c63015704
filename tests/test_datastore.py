"""The SPIRE server and its datastore, slowed and broken for real, named by the shipped rules.

Two SPIRE servers on one PostgreSQL (harness/server_stack.py), the agent behind a load balancer,
the exporter with the round-trip probe on, and a real Prometheus with the shipped rules (only
`for:` shortened) scraping the exporter and SPIRE's own telemetry under the jobs the rules select.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, metric_source, require, spire_names_emitted, spire_names_read
from running import RunningExporter, fast_config

from harness.local_spire import SpireUnavailable, wait_until
from harness.postgres import PostgresUnavailable
from harness.prom_stack import PromStack, Webhook, binaries
from harness.server_stack import EVENTS_CACHE, ServerStack

pytestmark = [pytest.mark.spire, pytest.mark.prometheus]
LABELS = {"node": "test-node", "cluster": "test"}
ROUND_TRIP = "fetch_jwt_svid_roundtrip"


class Stack:
    def __init__(self, spire: ServerStack, exporter: RunningExporter, prom: PromStack) -> None:
        self.spire, self.exporter, self.prom = spire, exporter, prom

    def firing(self, alertname: str) -> list[dict[str, str]]:
        return self.prom.firing(alertname)

    def all_firing(self) -> set[str]:
        alerts = self.prom.query('ALERTS{alertstate="firing"}')["data"]["result"]
        return {a["metric"]["alertname"] for a in alerts}

    def until_firing(self, alertname: str, timeout: float) -> list[dict[str, str]]:
        found: list[dict[str, str]] = wait_until(
            lambda: self.firing(alertname), timeout, alertname, interval=1
        )
        return found

    def value(self, expr: str) -> float | None:
        result = self.prom.query(expr)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def round_trip(self) -> tuple[float, float]:
        """The round-trip probe's (sum of seconds, count) of successful attempts so far."""
        text = self.exporter.text()

        def read(suffix: str) -> float:
            match = re.search(
                rf'^spire_health_probe_duration_seconds_{suffix}{{rpc="{ROUND_TRIP}"}} (\S+)$', text, re.M
            )
            return float(match.group(1)) if match else 0.0

        return read("sum"), read("count")

    def cached_ok(self) -> bool:
        return 'spire_health_probe_success{rpc="fetch_x509_svid"} 1.0' in self.exporter.text()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from alerts import generate

    if None in binaries():
        require("prometheus and prometheus-alertmanager (Debian packages) are not installed")
    workdir = tmp_path_factory.mktemp("datastore")
    rules = workdir / "rules.yml"
    rules.write_text(
        generate.render(generate.load_config(ROOT / "alerts" / "config.yml"), "3s")[generate.RULES_FILE]
    )
    try:
        spire = ServerStack(server_extra=EVENTS_CACHE).start()
    except (SpireUnavailable, PostgresUnavailable) as e:
        require(str(e))
    try:
        yield from _stack(spire, workdir, rules)
    finally:
        spire.stop()


def _stack(spire: ServerStack, workdir: Path, rules: Path) -> Iterator[Stack]:
    agent = spire.a
    assert agent
    cfg = fast_config(
        f"unix://{agent.agent_socket}",
        **{
            "agent.process.cmdline_pattern": re.escape(f"{agent.dir}/agent/agent.conf"),
            f"probes.{ROUND_TRIP}": {"enabled": True, "interval": "5s", "timeout": "5s"},
        },
    )
    webhook = Webhook()
    try:
        with RunningExporter(cfg) as running:
            jobs: dict[str, str | list[str]] = {
                "spire-agent": f"127.0.0.1:{agent.telemetry_port}",
                "spire-server": list(spire.server_telemetry().values()),
            }
            prom = PromStack(workdir, running.url.removeprefix("http://"), rules, webhook, LABELS, jobs)
            try:
                stack = Stack(spire, running, prom)
                wait_until(lambda: stack.round_trip()[1] >= 3, 60, "three round trips")
                wait_until(
                    lambda: stack.value(
                        "count(instance_operation:spire_server_datastore_elapsed_seconds:p99 >= 0)"
                    ),
                    60,
                    "the servers' datastore timings in Prometheus",
                )
                yield stack
            finally:
                prom.stop()
    finally:
        webhook.close()


def test_every_server_series_a_rule_or_panel_reads_is_emitted_and_documented(stack: Stack) -> None:
    """On PostgreSQL with the events-based cache, under the job the rules select; docs/metrics.md
    lists each (and the full reload's, which the SQLite tests check)."""
    names = {n for n in spire_names_read() if metric_source(n) == "server"}
    docs = (ROOT / "docs" / "metrics.md").read_text()
    section = docs[docs.index("## SPIRE server series the rules and panels read") :]
    missing = [
        n
        for n in sorted(names & spire_names_emitted("full_reload", "federation"))
        if not stack.value(f'count({{__name__="{n}", job="spire-server"}})')
    ]
    # A Summary's _sum and _count are listed as the Summary; a gauge may end in _count itself.
    undocumented = [
        n
        for n in sorted(names)
        if f"`{n}`" not in section and f"`{n.removesuffix('_sum').removesuffix('_count')}`" not in section
    ]
    assert not missing, f"SPIRE emits none of {missing}"
    assert not undocumented, f"docs/metrics.md does not list {undocumented}"
    # The datastore operations, which the rules match by a name pattern: each server reports them.
    per_server = stack.prom.query(
        "count by (instance) (instance_operation:spire_server_datastore_calls:total)"
    )["data"]["result"]
    assert len(per_server) == 2 and all(float(s["value"][1]) >= 5 for s in per_server), per_server


def test_a_node_with_a_bad_join_token_fires_node_attestation_failing(stack: Stack) -> None:
    assert not stack.firing("SpireServerNodeAttestationFailing")
    # SPIRE's agent retries a refused attestation every few seconds, as a misconfigured node does.
    started = time.monotonic()
    with stack.spire.servers["a"].a_node_with_a_bad_join_token():
        (alert,) = stack.until_firing("SpireServerNodeAttestationFailing", 90)
    took = time.monotonic() - started
    print(f"\nSpireServerNodeAttestationFailing fired {took:.0f} s after the bad node started")
    # The server refuses a token it never issued as InvalidArgument; the alert carries that.
    assert (alert["cluster"], alert["status"]) == ("test", "InvalidArgument"), alert
    assert stack.cached_ok(), "a stranger's failed attestation reached this node's identity"


def test_a_slow_database_pages_once_naming_the_operation(stack: Stack) -> None:
    assert stack.cached_ok()
    before = stack.round_trip()
    wait_until(lambda: stack.round_trip()[1] >= before[1] + 2, 60, "two round trips")
    base = stack.round_trip()
    fast = (base[0] - before[0]) / (base[1] - before[1])
    stack.spire.set_delay(0.25)
    try:
        stack.until_firing("SpireServerDatastoreSlow", 120)
        start = stack.round_trip()
        wait_until(lambda: stack.round_trip()[1] >= start[1] + 3, 60, "three slow round trips")
        end = stack.round_trip()
        slow_alerts = stack.firing("SpireServerDatastoreSlow")
        assert all(a["cluster"] == "test" and a["severity"] == "critical" for a in slow_alerts), slow_alerts
        # Each names an operation the servers report, one alert per operation.
        operations = [a["operation"] for a in slow_alerts]
        reported = {
            s["metric"]["operation"]
            for s in stack.prom.query("instance_operation:spire_server_datastore_calls:total")["data"][
                "result"
            ]
        }
        assert len(set(operations)) == len(operations) and set(operations) <= reported, (operations, reported)
        slow = (end[0] - start[0]) / (end[1] - start[1])
        print(f"\nround trip {fast * 1000:.0f} ms -> {slow * 1000:.0f} ms at 250 ms per query: {operations}")
        assert slow > fast + 0.5, (fast, slow)
        # The cause pages; the node-side pages and warnings it explains do not.
        firing = stack.all_firing()
        assert not firing & {
            "SpireServerPathFailing",
            "SpireAgentServerRoundTripFailing",
            "SpireAgentsNotSyncing",
            "SpireAgentServerSyncFailing",
            "SpireAgentWorkloadAPIProbeFailing",
        }, firing
        assert stack.cached_ok(), "a slow database reached the agent's cached X.509-SVID"
    finally:
        stack.spire.set_delay(0)


def test_a_stopped_database_fires_the_datastore_error_alert(stack: Stack) -> None:
    stack.spire.postgres.stop()
    try:
        alerts = stack.until_firing("SpireServerDatastoreErrors", 120)
        servers = {a["instance"] for a in alerts}
        assert servers <= set(stack.spire.server_telemetry().values()) and servers, alerts
        assert stack.cached_ok()
    finally:
        stack.spire.postgres.start()
    # Restarted, the servers reconnect by themselves: round trips succeed again.
    count = stack.round_trip()[1]
    wait_until(lambda: stack.round_trip()[1] >= count + 2, 90, "round trips after the database restart")


def test_one_of_two_servers_stopped_names_it_and_the_other_serves(stack: Stack) -> None:
    a = stack.spire.servers["a"]
    stack.spire.servers["a"].stop_server()
    try:
        (alert,) = stack.until_firing("SpireServerInstanceDown", 60)
        assert alert["instance"] == stack.spire.server_telemetry()["a"], alert
        assert not stack.firing("SpireServerDown")
        count = stack.round_trip()[1]
        wait_until(lambda: stack.round_trip()[1] >= count + 3, 60, "round trips through the other server")
        assert stack.cached_ok()
    finally:
        a.start_server()
    wait_until(lambda: not stack.firing("SpireServerInstanceDown"), 60, "SpireServerInstanceDown to resolve")


def test_a_database_that_stops_answering_is_named(stack: Stack) -> None:
    """No call fails and none ends: only the count of completed calls says so (2-minute window)."""
    assert stack.spire.db_proxy
    stack.spire.db_proxy.stall()
    try:
        servers = set(stack.spire.server_telemetry().values())
        wait_until(
            lambda: {a["instance"] for a in stack.firing("SpireServerDatastoreUnresponsive")} == servers,
            240,
            "SpireServerDatastoreUnresponsive for both servers",
        )
        assert stack.cached_ok()
    finally:
        stack.spire.db_proxy.resume()
