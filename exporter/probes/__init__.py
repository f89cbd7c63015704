"""One module per prober, all with the signature probe(client, settings) -> ProbeResult."""

from __future__ import annotations

from exporter.config import ROUNDTRIP_PROBE
from exporter.probes import (
    health_check,
    jwt_bundles,
    jwt_roundtrip,
    jwt_svid,
    validate_jwt_svid,
    x509_bundles,
    x509_svid,
)
from exporter.probes.base import Probe


def build_probes() -> dict[str, Probe]:
    """A fresh set of probers; the round-trip one keeps the previous token's claims between calls."""
    return {
        x509_svid.RPC: x509_svid.probe,
        x509_bundles.RPC: x509_bundles.probe,
        jwt_svid.RPC: jwt_svid.probe,
        jwt_bundles.RPC: jwt_bundles.probe,
        validate_jwt_svid.RPC: validate_jwt_svid.probe,
        health_check.RPC: health_check.probe,
        ROUNDTRIP_PROBE: jwt_roundtrip.RoundTripProbe(),
    }
