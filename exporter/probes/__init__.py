"""One module per prober, all with the signature probe(client, settings) -> ProbeResult."""

from __future__ import annotations

from exporter.probes import (
    health_check,
    jwt_bundles,
    jwt_roundtrip,
    jwt_svid,
    validate_jwt_svid,
    x509_bundles,
    x509_svid,
)
from exporter.probes.base import Prober


def build_probes() -> dict[str, Prober]:
    """A fresh set of probers; the round-trip one keeps the previous token's claims between calls."""
    probers = [
        Prober(x509_svid.RPC, x509_svid.probe),
        Prober(x509_bundles.RPC, x509_bundles.probe),
        Prober(jwt_svid.RPC, jwt_svid.probe),
        Prober(jwt_bundles.RPC, jwt_bundles.probe),
        Prober(validate_jwt_svid.RPC, validate_jwt_svid.probe, validate_jwt_svid.CODES),
        Prober(health_check.RPC, health_check.probe, health_check.CODES),
        Prober(jwt_roundtrip.RPC, jwt_roundtrip.RoundTripProbe(), jwt_roundtrip.CODES),
    ]
    return {p.name: p for p in probers}
