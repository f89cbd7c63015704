"""FetchJWTBundles: time to the first JWKS response, and each trust domain's key count."""

from __future__ import annotations

from exporter.answers import jwt_bundles
from exporter.client import WorkloadClient
from exporter.probes.base import ProbeSpec, stateless, timed
from exporter.result import ProbeResult
from exporter.settings import ProbeSettings

NAME = "fetch_jwt_bundles"


def probe(client: WorkloadClient, settings: ProbeSettings) -> ProbeResult:
    clock: list[float] = []
    return timed(
        NAME,
        lambda: client.fetch_jwt_bundles(settings.timeout, clock=clock),
        lambda answer: jwt_bundles(answer.bundles),
        clock,
    )


SPEC: ProbeSpec[ProbeSettings] = ProbeSpec(NAME, "FetchJWTBundles, to its first answer.", stateless(probe))
