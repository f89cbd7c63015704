"""FetchX509Bundles: time to the first bundles response, and each trust domain's CAs."""

from __future__ import annotations

from exporter import names
from exporter.answers import x509_bundles
from exporter.client import WorkloadClient
from exporter.config import ProbeSettings
from exporter.probes.base import timed
from exporter.state import ProbeResult

RPC = names.FETCH_X509_BUNDLES


def probe(client: WorkloadClient, settings: ProbeSettings) -> ProbeResult:
    clock: list[float] = []
    return timed(
        RPC,
        lambda: client.fetch_x509_bundles(settings.timeout, clock=clock),
        lambda answer: ((), x509_bundles(answer.bundles)),
        clock,
    )
