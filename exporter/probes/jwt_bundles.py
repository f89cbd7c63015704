"""FetchJWTBundles: time to the first JWKS response, and each trust domain's key count."""

from __future__ import annotations

from exporter import names
from exporter.answers import jwt_bundles
from exporter.client import WorkloadClient
from exporter.config import ProbeSettings
from exporter.probes.base import timed
from exporter.state import ProbeResult

RPC = names.FETCH_JWT_BUNDLES


def probe(client: WorkloadClient, settings: ProbeSettings) -> ProbeResult:
    clock: list[float] = []
    return timed(
        RPC,
        lambda: client.fetch_jwt_bundles(settings.timeout, clock=clock),
        lambda answer: ((), jwt_bundles(answer.bundles)),
        clock,
    )
