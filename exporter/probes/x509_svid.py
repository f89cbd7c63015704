"""FetchX509SVID: time to the first X.509-SVID response, and the SVIDs it carries."""

from __future__ import annotations

import time

from exporter import names
from exporter.answers import x509_svids
from exporter.client import WorkloadClient
from exporter.config import ProbeSettings
from exporter.probes.base import timed
from exporter.state import ProbeResult

RPC = names.FETCH_X509_SVID


def probe(client: WorkloadClient, settings: ProbeSettings) -> ProbeResult:
    clock: list[float] = []
    return timed(
        RPC,
        lambda: client.fetch_x509_svid(settings.timeout, clock=clock),
        lambda answer: (x509_svids(answer, time.time()), ()),
        clock,
    )
