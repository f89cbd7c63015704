"""ValidateJWTSVID of a token fetched just before, as a resource server would check it.

The token comes from the agent's cache (the same audience as the fetch_jwt_svid probe) and
lives only in this function's frame. The fetch and the validation share one deadline, so the
probe never outlasts its timeout; when there is no token to validate, the result is NO_TOKEN
with the time the fetch took, since ValidateJWTSVID itself was never called.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence

import grpc
from google.protobuf import struct_pb2

from exporter._proto import workload_pb2
from exporter.answers import MalformedAnswer, audiences, jwt_svids
from exporter.client import WorkloadClient
from exporter.probes import jwt_svid
from exporter.probes.base import ProbeSpec, classify, stateless, timed
from exporter.result import ProbeResult
from exporter.settings import AudienceSettings, ProbeSettings
from exporter.unavailable import reason

NAME = "validate_jwt_svid"
NO_TOKEN = "NO_TOKEN"


@dataclasses.dataclass(frozen=True)
class ValidateSettings(ProbeSettings):
    # Not a setting of its own: the fetch_jwt_svid probe's audience (see settle).
    audience: str = ""


def settle(own: ValidateSettings, probes: Mapping[str, ProbeSettings]) -> ValidateSettings:
    fetch = probes[jwt_svid.NAME]
    assert isinstance(fetch, AudienceSettings)
    return dataclasses.replace(own, audience=fetch.audience)


def probe(client: WorkloadClient, settings: ValidateSettings) -> ProbeResult:
    audience = [settings.audience]
    start = time.perf_counter()
    try:
        fetched = client.fetch_jwt_svid(audience, settings.timeout)
        spiffe_id = jwt_svids(fetched, audience, time.time())[0].spiffe_id
    except grpc.RpcError as e:
        code, message = classify(e)
        return ProbeResult(
            NAME, NO_TOKEN, time.perf_counter() - start, f"no token to validate: {code} {message}",
            reason=reason(code, message),
        )  # fmt: skip
    except MalformedAnswer as e:
        return ProbeResult(NAME, NO_TOKEN, time.perf_counter() - start, f"no token to validate: {e}")
    remaining = settings.timeout - (time.perf_counter() - start)
    if remaining <= 0:
        return ProbeResult(
            NAME,
            "DEADLINE_EXCEEDED",
            time.perf_counter() - start,
            "fetching the token used the whole deadline",
        )
    token = fetched.svids[0].svid

    def judge(validated: workload_pb2.ValidateJWTSVIDResponse) -> Sequence[object]:
        if validated.spiffe_id != spiffe_id:
            raise MalformedAnswer("validation names a different SPIFFE ID than the token")
        if settings.audience not in audiences(_aud(validated.claims)):
            raise MalformedAnswer("validated claims lack the audience")
        return ()

    return timed(NAME, lambda: client.validate_jwt_svid(settings.audience, token, remaining), judge)


SPEC: ProbeSpec[ValidateSettings] = ProbeSpec(
    NAME,
    "ValidateJWTSVID of a token just fetched for fetch_jwt_svid's audience.",
    stateless(probe),
    ValidateSettings,
    codes=(NO_TOKEN,),
    settle=settle,
)


def _aud(claims: struct_pb2.Struct) -> object:
    """The `aud` claim as plain Python, read alone: other claims may hold what JSON can't (inf)."""
    if "aud" not in claims.fields:
        return None
    value = claims.fields["aud"]
    if value.WhichOneof("kind") == "string_value":
        return value.string_value
    if value.WhichOneof("kind") == "list_value":
        return [
            v.string_value if v.WhichOneof("kind") == "string_value" else None
            for v in value.list_value.values
        ]
    return None  # a number, bool, null or object is no audience
