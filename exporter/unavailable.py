"""Why a call failed UNAVAILABLE: the agent was not reached, or it answered and said why.

The `reason` label is one of REASONS (bounded), never the message itself. SPIRE's own answers
are matched by their fixed message prefixes (pkg/agent/endpoints: v1.15.2+ "workload attestation
failed" and "rate limit exceeded for <method>"; all versions "could not fetch JWT-SVID");
everything else grpc reports on the client side of a broken or refused connection.
"""

from __future__ import annotations

AGENT_UNREACHABLE = "agent_unreachable"
WORKLOAD_ATTESTATION_FAILED = "workload_attestation_failed"
RATE_LIMITED = "rate_limited"
JWT_SVID_UNAVAILABLE = "jwt_svid_unavailable"
OTHER = "other"
REASONS = (AGENT_UNREACHABLE, WORKLOAD_ATTESTATION_FAILED, RATE_LIMITED, JWT_SVID_UNAVAILABLE, OTHER)

_ANSWERS = (
    ("workload attestation failed", WORKLOAD_ATTESTATION_FAILED),
    ("rate limit exceeded for ", RATE_LIMITED),
    ("could not fetch JWT-SVID", JWT_SVID_UNAVAILABLE),
)
# What grpc-core says when the socket is missing, refuses, or drops the connection.
_TRANSPORT = (
    "failed to connect",
    "connection refused",
    "no such file or directory",
    "socket closed",
    "connection reset",
    "broken pipe",
    "goaway",
    "connection attempt timed out",
    "permission denied",  # the socket file's mode, not the agent's PERMISSION_DENIED answer
)


def reason(code: str, message: str) -> str:
    """The reason for an UNAVAILABLE failure; "" for any other code."""
    if code != "UNAVAILABLE":
        return ""
    for prefix, found in _ANSWERS:
        if message.startswith(prefix):
            return found
    lowered = message.lower()
    if any(part in lowered for part in _TRANSPORT):
        return AGENT_UNREACHABLE
    return OTHER
