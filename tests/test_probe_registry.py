"""A probe is one module and one registration line: a probe that exists only in this test, with
a setting, a failure code and a series of its own, is configured, documented, scheduled and
exported once it is in the registry, and nothing else is touched."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
from prometheus_client.core import GaugeMetricFamily, Metric
from running import RunningExporter, fast_config

from exporter import config, probes
from exporter.answers import MalformedAnswer, SvidInfo, x509_svids
from exporter.client import WorkloadClient
from exporter.probes.base import ProbeSpec, stateless, timed
from exporter.result import ProbeResult
from exporter.settings import ConfigError, ProbeSettings, integer
from harness import generated

NAME = "count_svids"


@dataclasses.dataclass(frozen=True)
class CountSettings(ProbeSettings):
    minimum: int = integer(1, "SVIDs the agent must hand out.", minimum=1)


class TooFew(MalformedAnswer):
    code = "TOO_FEW"


def probe(client: WorkloadClient, settings: CountSettings) -> ProbeResult:
    def judge(answer: object) -> list[SvidInfo]:
        svids = x509_svids(answer, time.time())  # type: ignore[arg-type]
        if len(svids) < settings.minimum:
            raise TooFew(f"{len(svids)} SVIDs, fewer than {settings.minimum}")
        return svids

    return timed(NAME, lambda: client.fetch_x509_svid(settings.timeout), judge)


def series(latest: ProbeResult | None) -> Iterator[Metric]:
    family = GaugeMetricFamily("spire_health_test_counted_svids", "SVIDs the latest count saw.")
    if latest is not None:
        family.add_metric([], len(latest.facts))
    yield family


SPEC = ProbeSpec(NAME, "Counts the X.509-SVIDs.", stateless(probe), CountSettings, ("TOO_FEW",), series)


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setattr(probes, "REGISTRY", (*probes.REGISTRY, SPEC))


def test_its_settings_are_parsed_checked_and_documented(registered) -> None:
    cfg = config.build({"workload_api": {"socket": "/a.sock"}, "probes": {NAME: {"minimum": 3}}}, environ={})
    assert cfg.each[NAME] == CountSettings(True, 15.0, 5.0, 3)
    with pytest.raises(ConfigError, match=rf"^probes\.{NAME}\.minimum: must be at least 1$"):
        config.build({"workload_api": {"socket": "/a.sock"}, "probes": {NAME: {"minimum": 0}}}, environ={})
    assert f"probes.{NAME}.minimum" in {s.key for s in config.table()}
    assert f"`probes.{NAME}.minimum`" in generated.settings_table()
    assert NAME in generated.probes_schema()["properties"]


def test_it_is_scheduled_and_exported_with_its_own_code_and_series(registered, fake_agent) -> None:
    cfg = fast_config(
        f"unix://{fake_agent.socket_path}",
        **{"agent.process.enabled": False, "watch.enabled": False, f"probes.{NAME}.minimum": 2},
    )
    with RunningExporter(cfg) as running:
        s = running.wait_for(
            lambda s: s.get(("spire_health_probes_total", (("code", "TOO_FEW"), ("rpc", NAME))), 0) >= 2,
            10,
            "the registered probe to run and fail with its own code",
        )
        assert s[("spire_health_probes_total", (("code", "OK"), ("rpc", NAME)))] == 0
        assert s[("spire_health_probe_success", (("rpc", NAME),))] == 0
        assert s[("spire_health_test_counted_svids", ())] == 0  # a failed answer hands over no facts
