"""The agent's Debug API probe (GetInfo on the admin socket): against the real agent, its last
sync stops when the server does and the shipped alert fires in a real Prometheus; against the
fake, malformed answers and a failing admin socket."""

from __future__ import annotations

import time

import grpc
import pytest
from conftest import ROOT, require, settings
from running import RunningExporter, fast_config

from exporter._proto import debug_pb2
from exporter.client import WorkloadClient
from exporter.probes import spec
from exporter.probes.debug_get_info import AgentInfo
from harness.local_spire import wait_until
from harness.prom_stack import PromStack, Webhook, binaries

LAST_SYNC = ("spire_health_agent_last_sync_success_timestamp_seconds", ())


def debug_config(spire, **more: str):
    return fast_config(
        f"unix://{spire.agent_socket}",
        **{
            "probes.debug_get_info.socket": f"unix://{spire.admin_socket}",
            "agent.process.enabled": False,
            **more,
        },
    )


@pytest.mark.spire
@pytest.mark.prometheus
def test_last_sync_stops_with_the_server_and_the_alert_fires(healthy_spire, tmp_path) -> None:
    if None in binaries():
        require("prometheus and prometheus-alertmanager (Debian packages) are not installed")
    from alerts import generate

    spire = healthy_spire
    # The shipped rules with the sync alert's threshold at 10 s (1 s intervals, 10 of them) and
    # every `for:` shortened; the expressions are the shipped ones.
    shipped = generate.load_config(ROOT / "alerts" / "config.yml")
    shipped["alerts"]["SpireAgentNotSynced"].update(sync_interval=1, intervals=10)
    rules = tmp_path / "rules.yml"
    rules.write_text(generate.render(shipped, "3s")[generate.RULES_FILE])
    webhook = Webhook()
    with RunningExporter(debug_config(spire)) as running:
        s = running.wait_for(lambda s: LAST_SYNC in s, 15, "the agent's last sync")
        assert abs(time.time() - s[LAST_SYNC]) < 20, "a healthy agent synced within seconds"
        assert s[("spire_health_agent_svid_expiry_timestamp_seconds", ())] > time.time() + 60
        assert s[("spire_health_agent_cached_svids", (("kind", "x509"),))] >= 1
        assert s[("spire_health_probe_success", (("rpc", "debug_get_info"),))] == 1
        prom = PromStack(
            tmp_path, running.url.removeprefix("http://"), rules, webhook, {"node": "n", "cluster": "c"}
        )
        try:
            time.sleep(5)
            assert not prom.query('ALERTS{alertname="SpireAgentNotSynced"}')["data"]["result"]
            spire.stop_server()
            stopped = time.time()
            time.sleep(7)  # past the agent's 5 s GetInfo cache and the exporter's next probe
            last = running.scrape()[LAST_SYNC]
            time.sleep(12)
            assert running.scrape()[LAST_SYNC] == last, "the last sync moved with the server stopped"
            assert last <= stopped + 1
            wait_until(lambda: prom.firing("SpireAgentNotSynced"), 60, "SpireAgentNotSynced", 1)
        finally:
            prom.stop()
            webhook.close()


def test_opt_in_probes_add_no_series_when_off(fake_agent) -> None:
    cfg = fast_config(f"unix://{fake_agent.socket_path}", **{"agent.process.enabled": False})
    assert not {"debug_get_info", "sds_fetch_secrets"} & set(dict(cfg.enabled()))
    with RunningExporter(cfg) as running:
        time.sleep(1.5)
        text = running.text()
    assert "debug_get_info" not in text and "sds_fetch_secrets" not in text
    assert "\nspire_health_sds_" not in text
    assert "\nspire_health_agent_last_sync" not in text and "\nspire_health_agent_cached" not in text


def run_debug(fake_agent, timeout: float = 2.0):
    probe = spec("debug_get_info").build()
    own = settings("debug_get_info", timeout=timeout)
    import dataclasses

    own = dataclasses.replace(own, socket=f"unix://{fake_agent.socket_path}")
    return probe, own


def test_malformed_answers_are_invalid_and_failures_keep_the_last_answer(fake_agent) -> None:
    probe, own = run_debug(fake_agent)
    with WorkloadClient(f"unix://{fake_agent.socket_path}") as unused:
        good = probe(unused, own)
        assert good.code == "OK", good.message
        (info,) = good.facts
        assert isinstance(info, AgentInfo) and info.last_sync is not None
        assert 3500 < info.svid_lifetime <= 3600

        fake_agent.set("GetInfo", answer=lambda _r: debug_pb2.GetInfoResponse(uptime=5))
        bad = probe(unused, own)
        assert (bad.code, bad.message) == ("INVALID_RESPONSE", "GetInfo holds no agent SVID")
        assert bad.facts == (info,), "a failed call keeps what the agent said last"

        never = debug_pb2.GetInfoResponse(
            svid_chain=[debug_pb2.GetInfoResponse.Cert(expires_at=int(time.time()) + 60)]
        )
        fake_agent.set("GetInfo", answer=lambda _r: never)
        (fresh,) = probe(unused, own).facts
        assert fresh.last_sync is None, "Go's zero time is no sync at all"

        fake_agent.set("GetInfo", code=grpc.StatusCode.UNAVAILABLE)
        assert probe(unused, own).code == "UNAVAILABLE"


def test_renewal_seen_gives_the_lifetime(fake_agent) -> None:
    probe, own = run_debug(fake_agent)
    issued = int(time.time())

    def chain(expiry: int):
        return lambda _r: debug_pb2.GetInfoResponse(
            svid_chain=[debug_pb2.GetInfoResponse.Cert(expires_at=expiry)], last_sync_success=issued
        )

    with WorkloadClient(f"unix://{fake_agent.socket_path}") as unused:
        fake_agent.set("GetInfo", answer=chain(issued + 1000))  # first seen part-way through its life
        (first,) = probe(unused, own).facts
        fake_agent.set("GetInfo", answer=chain(issued + 3600))  # renewed now: a 1 h SVID
        (renewed,) = probe(unused, own).facts
    assert first.svid_lifetime <= 1000
    assert 3590 < renewed.svid_lifetime <= 3600
