"""FetchJWTSVID for the configured audience; the agent normally answers from its cache."""

from __future__ import annotations

import time

from exporter.answers import jwt_svids
from exporter.client import WorkloadClient
from exporter.probes.base import ProbeSpec, stateless, timed
from exporter.result import ProbeResult
from exporter.settings import AudienceSettings

NAME = "fetch_jwt_svid"


def probe(client: WorkloadClient, settings: AudienceSettings) -> ProbeResult:
    audience = [settings.audience]
    return timed(
        NAME,
        lambda: client.fetch_jwt_svid(audience, settings.timeout),
        lambda answer: jwt_svids(answer, audience, time.time()),
    )


SPEC: ProbeSpec[AudienceSettings] = ProbeSpec(
    NAME, "FetchJWTSVID for its audience, as the agent answers it from its cache.", stateless(probe),
    AudienceSettings,
)  # fmt: skip
