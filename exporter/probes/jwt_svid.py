"""FetchJWTSVID for the configured audience; the agent normally answers from its cache."""

from __future__ import annotations

import time

from exporter import names
from exporter.answers import jwt_svids
from exporter.client import WorkloadClient
from exporter.config import ProbeSettings
from exporter.probes.base import timed
from exporter.state import ProbeResult

RPC = names.FETCH_JWT_SVID


def probe(client: WorkloadClient, settings: ProbeSettings) -> ProbeResult:
    audience = [settings.audience]
    return timed(
        RPC,
        lambda: client.fetch_jwt_svid(audience, settings.timeout),
        lambda answer: (jwt_svids(answer, audience, time.time()), ()),
    )
