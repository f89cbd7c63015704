"""FetchX509SVID: time to the first X.509-SVID response, and the SVIDs it carries."""

from __future__ import annotations

import time

from exporter.answers import x509_svids
from exporter.client import WorkloadClient
from exporter.probes.base import ProbeSpec, stateless, timed
from exporter.result import ProbeResult
from exporter.settings import ProbeSettings

NAME = "fetch_x509_svid"


def probe(client: WorkloadClient, settings: ProbeSettings) -> ProbeResult:
    clock: list[float] = []
    return timed(
        NAME,
        lambda: client.fetch_x509_svid(settings.timeout, clock=clock),
        lambda answer: x509_svids(answer, time.time()),
        clock,
    )


SPEC: ProbeSpec[ProbeSettings] = ProbeSpec(NAME, "FetchX509SVID, to its first answer.", stateless(probe))
