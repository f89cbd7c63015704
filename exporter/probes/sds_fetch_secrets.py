"""Envoy's path to an identity: SDS FetchSecrets on the agent socket, as an Envoy (Istio's proxy,
or any Envoy pointed at SPIRE) asks for its certificate and validation contexts. Opt-in.

Some failures happen on this path alone: the SDS API switched off (`disable_sds_api`, then
UNIMPLEMENTED), resource names the agent does not map (INVALID_ARGUMENT), SDS rate limits.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from collections.abc import Iterator, Mapping

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter._proto import sds_pb2
from exporter.client import WorkloadClient
from exporter.probes.base import ProbeSpec, latest_fact, stateless, timed
from exporter.result import ProbeResult
from exporter.sds import SdsFacts, judge_each, request
from exporter.settings import ConfigError, ProbeSettings, boolean, text

NAME = "sds_fetch_secrets"


@dataclasses.dataclass(frozen=True)
class SdsSettings(ProbeSettings):
    enabled: bool = boolean(
        False, "Whether this probe runs (SDS, as Envoy and Istio ask for their identity)."
    )
    svid_name: str = text(
        "default",
        "Resource name of the workload certificate (the agent's sds.default_svid_name); empty: not asked.",
    )
    bundle_name: str = text(
        "ROOTCA", "Resource name of the trust domain's bundle (sds.default_bundle_name); empty: not asked."
    )
    all_bundles_name: str = text(
        "ALL", "Resource name of every trusted bundle (sds.default_all_bundles_name); empty: not asked."
    )
    envoy_version: str = text(
        "1.34.0",
        "Envoy version the probe announces; from 1.18 the agent answers with a SPIFFE validator, "
        "before with trusted_ca.",
        pattern=r"^\d+\.\d+\.\d+$",
        expect="a version like 1.34.0",
    )
    stream: bool = boolean(True, "Keep a StreamSecrets stream open and count the agent's pushes.")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(n for n in (self.svid_name, self.bundle_name, self.all_bundles_name) if n)


def settle(own: SdsSettings, _probes: Mapping[str, ProbeSettings]) -> SdsSettings:
    if own.enabled and not own.names:
        raise ConfigError(f"probes.{NAME}: every resource name is empty, so there is nothing to ask for")
    if len(set(own.names)) != len(own.names):
        raise ConfigError(f"probes.{NAME}: resource names must differ, got {', '.join(own.names)}")
    return own


# The node ID an Envoy would send; SPIRE only logs it.
NODE_ID = f"spire-health-exporter~{socket.gethostname()}~{os.getpid()}"


def probe(client: WorkloadClient, settings: SdsSettings) -> ProbeResult:
    """One FetchSecrets per resource name, all under the probe's one deadline."""
    deadline = time.monotonic() + settings.timeout

    def fetch_each() -> list[tuple[str, sds_pb2.DiscoveryResponse]]:
        answers = []
        for name in settings.names:
            left = max(deadline - time.monotonic(), 0.001)
            answers.append(
                (name, client.fetch_secrets(request((name,), settings.envoy_version, NODE_ID), left))
            )
        return answers

    return timed(NAME, fetch_each, lambda answers: (judge_each(answers, settings.svid_name, time.time()),))


def series(latest: ProbeResult | None) -> Iterator[Metric]:
    facts = latest_fact(latest, SdsFacts)
    expiry = GaugeMetricFamily(
        "spire_health_sds_certificate_expiry_timestamp_seconds",
        "Unix time at which the certificate the agent serves over SDS expires.",
    )
    validation = GaugeMetricFamily(
        "spire_health_sds_validation_context_info",
        "The type of each validation context SDS served (trusted_ca or spiffe), by resource name; always 1.",
        labels=["resource", "type"],
    )
    if facts is not None:
        if facts.certificate_expiry is not None:
            expiry.add_metric([], facts.certificate_expiry)
        for resource, kind in facts.validation:
            validation.add_metric([resource, kind], 1)
    yield from (expiry, validation)


SPEC: ProbeSpec[SdsSettings] = ProbeSpec(
    NAME,
    "SDS FetchSecrets on the agent socket, as Envoy asks: the certificate and validation contexts.",
    stateless(probe),
    SdsSettings,
    series=series,
    settle=settle,
)
