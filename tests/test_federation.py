"""Two real SPIRE servers, federated: the federated trust domain's bundle series follow its CA
rotations, and when its server stops, the shipped stale-bundle alert (from the exporter) and
federation-fetch alert (from the local server's own telemetry) fire in a real Prometheus."""

from __future__ import annotations

import time

import pytest
from conftest import ROOT, require
from running import RunningExporter, fast_config

from harness.federation import REFRESH_HINT, REMOTE_TRUST_DOMAIN, Federation
from harness.local_spire import SpireUnavailable, wait_until
from harness.prom_stack import PromStack, Webhook, binaries

pytestmark = [pytest.mark.spire, pytest.mark.prometheus]
CHANGED = (
    "spire_health_federated_bundle_changed_timestamp_seconds",
    (("trust_domain", REMOTE_TRUST_DOMAIN),),
)


def test_federated_bundle_follows_rotation_and_goes_stale_without_its_server(tmp_path) -> None:
    if None in binaries():
        require("prometheus and prometheus-alertmanager (Debian packages) are not installed")
    from alerts import generate

    # The shipped rules, with the remote's 1-minute refresh hint and two of them: its CA rotates
    # every minute, and a refresh may take one more.
    shipped = generate.load_config(ROOT / "alerts" / "config.yml")
    shipped["alerts"]["SpireFederatedBundleStale"].update(refresh_hint=REFRESH_HINT, intervals=2)
    # Every fetch in the window failed: two of the remote's refresh hints rather than 15 minutes.
    shipped["alerts"]["SpireServerFederationFetchFailing"]["window"] = f"{2 * REFRESH_HINT}s"
    rules = tmp_path / "rules.yml"
    rules.write_text(generate.render(shipped, "3s")[generate.RULES_FILE])
    try:
        federation = Federation().start()
    except SpireUnavailable as e:
        require(str(e))
    webhook = Webhook()
    try:
        cfg = fast_config(f"unix://{federation.local.agent_socket}", **{"agent.process.enabled": False})
        with RunningExporter(cfg) as running:
            s = running.wait_for(lambda s: CHANGED in s, 30, "the federated bundle")
            first = s[CHANGED]
            own = (
                "spire_health_federated_bundle_changed_timestamp_seconds",
                (("trust_domain", "example.org"),),
            )
            assert own not in s, "the own trust domain is not federated"
            # The remote publishes its next CA within a minute, and the local server fetches it
            # within another.
            s = running.wait_for(lambda s: s[CHANGED] > first, 150, "the federated bundle to change")
            expiry = ("spire_health_trust_bundle_latest_expiry_timestamp_seconds", CHANGED[1])
            assert s[expiry] > time.time()
            prom = PromStack(
                tmp_path,
                running.url.removeprefix("http://"),
                rules,
                webhook,
                {"node": "n", "cluster": "c"},
                {"spire-server": f"127.0.0.1:{federation.local.server_telemetry_port}"},
            )
            try:
                time.sleep(5)
                assert not prom.firing("SpireFederatedBundleStale"), "stale while the remote is up"
                assert not prom.firing("SpireServerFederationFetchFailing"), (
                    "fetch failing while the remote is up"
                )
                federation.remote.stop_server()
                stopped, stopped_at = time.monotonic(), time.time()
                deadline = stopped + 300

                def fired(alertname: str) -> tuple[dict[str, str], float]:
                    wait = deadline - time.monotonic()
                    (alert,) = wait_until(lambda: prom.firing(alertname), wait, alertname, 2)
                    return alert, time.monotonic() - stopped

                stale, fired_after = fired("SpireFederatedBundleStale")
                assert stale["trust_domain"] == REMOTE_TRUST_DOMAIN
                fetch, fetch_failing_after = fired("SpireServerFederationFetchFailing")
                # SPIRE's sink writes the trust domain with "_" for ".", in the label it names.
                assert fetch["trust_domain_id"] == REMOTE_TRUST_DOMAIN.replace(".", "_"), fetch
                # The bundle stopped changing when its server stopped.
                changed = running.scrape()[CHANGED]
                assert changed <= stopped_at + REFRESH_HINT + 15
                print(
                    f"after the remote server stopped, SpireFederatedBundleStale fired in {fired_after:.0f} s"
                    f" and SpireServerFederationFetchFailing in {fetch_failing_after:.0f} s"
                )
            finally:
                prom.stop()
    finally:
        webhook.close()
        federation.stop()
