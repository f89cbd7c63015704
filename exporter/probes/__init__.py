"""Every probe, registered once. Adding a probe: a module with its SPEC, and one line here.

Everything else (the configuration, the scheduler, the collectors, the docs) asks registered()
or spec(), so what this tuple holds when they ask is the whole truth.
"""

from __future__ import annotations

from typing import Any

from exporter.probes import (
    debug_get_info,
    health_check,
    jwt_bundles,
    jwt_roundtrip,
    jwt_svid,
    sds_fetch_secrets,
    validate_jwt_svid,
    x509_bundles,
    x509_svid,
)
from exporter.probes.base import ProbeSpec

REGISTRY: tuple[ProbeSpec[Any], ...] = (
    x509_svid.SPEC,
    x509_bundles.SPEC,
    jwt_svid.SPEC,
    jwt_bundles.SPEC,
    validate_jwt_svid.SPEC,
    health_check.SPEC,
    jwt_roundtrip.SPEC,
    debug_get_info.SPEC,
    sds_fetch_secrets.SPEC,
)


def registered() -> tuple[ProbeSpec[Any], ...]:
    return REGISTRY


def spec(name: str) -> ProbeSpec[Any]:
    for candidate in REGISTRY:
        if candidate.name == name:
            return candidate
    raise KeyError(name)
