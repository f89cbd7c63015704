"""FetchX509Bundles: time to the first bundles response, and each trust domain's CAs."""

from __future__ import annotations

from exporter.answers import x509_bundles
from exporter.client import WorkloadClient
from exporter.probes.base import ProbeSpec, stateless, timed
from exporter.result import ProbeResult
from exporter.settings import ProbeSettings

NAME = "fetch_x509_bundles"


def probe(client: WorkloadClient, settings: ProbeSettings) -> ProbeResult:
    clock: list[float] = []
    return timed(
        NAME,
        lambda: client.fetch_x509_bundles(settings.timeout, clock=clock),
        lambda answer: x509_bundles(answer.bundles),
        clock,
    )


SPEC: ProbeSpec[ProbeSettings] = ProbeSpec(NAME, "FetchX509Bundles, to its first answer.", stateless(probe))
