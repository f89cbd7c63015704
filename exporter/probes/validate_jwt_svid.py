"""ValidateJWTSVID of a token fetched just before, as a resource server would check it.

The token comes from the agent's cache (the same audience as the fetch_jwt_svid probe) and
lives only in this function's frame.
"""

from __future__ import annotations

import time

import grpc

from exporter._proto import workload_pb2
from exporter.answers import MalformedAnswer, jwt_svids
from exporter.client import WorkloadClient
from exporter.config import ProbeSettings
from exporter.probes.base import Judged, classify, timed
from exporter.state import ProbeResult

RPC = "validate_jwt_svid"


def probe(client: WorkloadClient, settings: ProbeSettings) -> ProbeResult:
    audience = [settings.audience]
    try:
        fetched = client.fetch_jwt_svid(audience, settings.timeout)
        spiffe_id = jwt_svids(fetched, audience, time.time())[0].spiffe_id
    except grpc.RpcError as e:
        code, message = classify(e)
        return ProbeResult(RPC, code, 0.0, f"no token to validate: {message}")
    except MalformedAnswer as e:
        return ProbeResult(RPC, e.code, 0.0, f"no token to validate: {e}")
    token = fetched.svids[0].svid

    def judge(validated: workload_pb2.ValidateJWTSVIDResponse) -> Judged:
        if validated.spiffe_id != spiffe_id:
            raise MalformedAnswer("validation names a different SPIFFE ID than the token")
        aud = validated.claims["aud"] if "aud" in validated.claims.fields else None
        auds = [aud] if isinstance(aud, str) else list(aud or [])
        if settings.audience not in auds:
            raise MalformedAnswer("validated claims lack the audience")
        return (), ()

    return timed(RPC, lambda: client.validate_jwt_svid(settings.audience, token, settings.timeout), judge)
