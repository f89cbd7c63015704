"""Probe names, defined once: each is a config key under `probes`, a job and an `rpc` label value."""

from __future__ import annotations

FETCH_X509_SVID = "fetch_x509_svid"
FETCH_X509_BUNDLES = "fetch_x509_bundles"
FETCH_JWT_SVID = "fetch_jwt_svid"
FETCH_JWT_BUNDLES = "fetch_jwt_bundles"
VALIDATE_JWT_SVID = "validate_jwt_svid"
HEALTH_CHECK = "health_check"
FETCH_JWT_SVID_ROUNDTRIP = "fetch_jwt_svid_roundtrip"

WORKLOAD_RPCS = (FETCH_X509_SVID, FETCH_X509_BUNDLES, FETCH_JWT_SVID, FETCH_JWT_BUNDLES, VALIDATE_JWT_SVID)
PROBES = (*WORKLOAD_RPCS, HEALTH_CHECK, FETCH_JWT_SVID_ROUNDTRIP)
# The two jobs that are not probes.
AGENT_JOB = "agent"
WATCH_JOB = "watch"
