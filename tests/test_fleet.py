"""A simulated fleet through the real Prometheus (v3.5, the shipped rules) and two real
Alertmanagers (the example configuration, and the same without its inhibitions): every
scenario of bench/fleet.py at once, each in two clusters of its own, with every duration scaled
to a tenth. A fleet-wide cause pages at most once per cluster or trust domain, one node notifies
at most once, a healthy fleet and a fresh install page nothing, with or without inhibitions.
"""

from __future__ import annotations

import pytest
from conftest import require

from harness.prom_stack import binaries

pytestmark = [pytest.mark.prometheus]


@pytest.fixture(scope="module")
def results() -> dict:
    if binaries()[1] is None:
        require("prometheus-alertmanager (Debian package) is not installed")
    from bench.fleet import report, run_scenarios

    got = run_scenarios(nodes_per_cluster=30, scale=0.1)
    print("\n" + report(got))
    return got


def pages(results: dict, scenario: str, manager: str) -> list[dict]:
    return [g for g in results["scenarios"][scenario][manager].values() if g["receiver"] == "pager"]


@pytest.mark.parametrize("manager", ["with", "without"])
def test_each_scenario_pages_once_per_cause_with_and_without_inhibitions(results, manager) -> None:
    from bench.fleet import SCENARIOS

    for scenario in SCENARIOS:
        groups = list(results["scenarios"][scenario.name][manager].values())
        assert len(pages(results, scenario.name, manager)) <= scenario.max_pages, (scenario.name, groups)
        assert len(groups) <= scenario.max_notifications, (scenario.name, groups)


def test_the_pages_name_the_cause(results) -> None:
    """Not only few pages: the right ones, each for the scenario's own clusters."""
    expected = {
        "failing": {"SpireAgentsFailing"},
        "ca-stuck": {"SpireTrustBundleCAExpiringSoon"},
        # Cached JWT-SVIDs expired, none minted: every node fails FetchJWTSVID.
        "server-down": {"SpireAgentsFailing"},
    }
    for scenario, names in expected.items():
        for manager in ("with", "without"):
            got = pages(results, scenario, manager)
            assert got and {n for g in got for n in g["alerts"]} == names, (scenario, manager, got)
    # One frozen node among a hundred is a ticket naming it, not a page.
    (frozen,) = results["scenarios"]["frozen"]["with"].values()
    assert frozen == {"receiver": "ticket", "alerts": ["SpireAgentWorkloadAPIProbeFailing"]}
    # A fresh install: the nodes without an entry say so, in one ticket per cluster.
    fresh = results["scenarios"]["fresh-install"]["with"].values()
    assert fresh and {n for g in fresh for n in g["alerts"]} == {"SpireHealthExporterNoRegistrationEntry"}


@pytest.mark.parametrize("scenario", ["healthy"])
def test_a_healthy_fleet_notifies_nothing(results, scenario) -> None:
    assert results["scenarios"][scenario] == {"with": {}, "without": {}}


def test_a_default_exporter_stays_within_100_series_per_node() -> None:
    """The budget that makes 5,000 nodes affordable: the exporter's own collectors over a state
    a default install has (every default probe OK, one SVID of each kind, one trust domain, the
    agent's process and a memory limit), as bench/series.py measures it against a real agent."""
    import time

    from bench.fleet_nodes import HEALTHY, Group
    from harness.promtext import parse

    group = Group(HEALTHY, time.time(), 0)
    group.tick(time.time())
    series = parse(group.metrics().decode())
    assert 80 <= len(series) <= 100, len(series)
