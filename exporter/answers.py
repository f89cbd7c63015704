"""Judges Workload API answers: parses SVIDs, bundles and tokens, and rejects malformed ones.

Only public facts are kept (SPIFFE ID, serial, validity, counts). Private keys are checked for
presence, never read, and tokens are decoded only to read their public claims.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509

from exporter._proto import workload_pb2

INVALID_RESPONSE = "INVALID_RESPONSE"
# How far an SVID's start may lie ahead of this node's clock and still count as usable. Verifiers
# differ: Go's crypto/x509 allows no skew at all (SPIRE backdates notBefore by 10 s for it),
# go-jose allows a token's iat up to 1 minute ahead. An SVID that starts later than this is one
# the workloads on this node reject, whatever its signature.
CLOCK_SKEW_TOLERANCE = 60.0
# The latest time X.509 can express (9999-12-31T23:59:59Z); a later or negative time is no time.
LATEST_TIME = 253402300799.0


class MalformedAnswer(Exception):
    """The agent answered, but the answer is not something a workload could use."""

    code = INVALID_RESPONSE


@dataclass(frozen=True)
class SvidInfo:
    kind: str  # "x509" or "jwt"
    spiffe_id: str
    issued: float  # Unix seconds: the leaf's notBefore, or the token's iat
    expiry: float  # Unix seconds: the leaf's notAfter, or the token's exp
    serial: str  # leaf serial number, or the token's jti (iat when it has none)


@dataclass(frozen=True)
class BundleInfo:
    kind: str  # "x509" or "jwt"
    trust_domain: str
    items: int  # CA certificates, or JWKS keys
    # The newest CA's notAfter and notBefore (None for JWT bundles): SPIRE keeps an expired CA in
    # the bundle for a day, so only the newest says whether a successor has been published, and
    # its lifetime says when SPIRE should publish the next one.
    latest_expiry: float | None = None
    latest_issued: float | None = None


def split_der(blob: bytes) -> list[bytes]:
    """Split concatenated DER SEQUENCEs (a certificate chain or bundle)."""
    parts: list[bytes] = []
    i = 0
    while i < len(blob):
        if blob[i] != 0x30 or i + 2 > len(blob):
            raise MalformedAnswer("certificate data is not a DER sequence")
        first = blob[i + 1]
        if first < 0x80:
            length, header = first, 2
        else:
            n = first & 0x7F
            if n == 0 or n > 4 or i + 2 + n > len(blob):
                raise MalformedAnswer("certificate data has a bad DER length")
            length, header = int.from_bytes(blob[i + 2 : i + 2 + n], "big"), 2 + n
        end = i + header + length
        if end > len(blob):
            raise MalformedAnswer("certificate data is truncated")
        parts.append(blob[i:end])
        i = end
    return parts


def load_certificates(blob: bytes) -> list[x509.Certificate]:
    certs = []
    for der in split_der(blob):
        try:
            certs.append(x509.load_der_x509_certificate(der))
        except (ValueError, x509.InvalidVersion) as e:
            raise MalformedAnswer(f"unparseable certificate: {e}") from None
    if not certs:
        raise MalformedAnswer("no certificates")
    return certs


def load_pem_certificates(blob: bytes) -> list[x509.Certificate]:
    """PEM certificates, as SDS carries them (chains and bundles)."""
    try:
        certs = x509.load_pem_x509_certificates(blob)
    except (ValueError, x509.InvalidVersion) as e:
        raise MalformedAnswer(f"unparseable PEM certificate: {e}") from None
    if not certs:
        raise MalformedAnswer("no certificates")
    return certs


def spiffe_uris(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://")]


def _ts(when: dt.datetime) -> float:
    return when.timestamp()


def x509_svids(answer: workload_pb2.X509SVIDResponse, now: float) -> list[SvidInfo]:
    if not answer.svids:
        raise MalformedAnswer("response holds no X.509-SVIDs")
    infos = []
    for svid in answer.svids:
        if not svid.spiffe_id.startswith("spiffe://"):
            raise MalformedAnswer("SVID has no SPIFFE ID")
        if not svid.x509_svid_key:
            raise MalformedAnswer(f"SVID {svid.spiffe_id} comes without its private key")
        try:
            infos.append(_x509_svid(svid, now))
        # cryptography parses extensions lazily, on first access.
        except (ValueError, x509.DuplicateExtension) as e:
            raise MalformedAnswer(
                f"SVID {svid.spiffe_id} has an unparseable certificate field: {e}"
            ) from None
    return infos


def _x509_svid(svid: workload_pb2.X509SVID, now: float) -> SvidInfo:
    leaf = load_certificates(svid.x509_svid)[0]
    if _is_ca(leaf):
        raise MalformedAnswer(f"SVID {svid.spiffe_id} chain starts with a CA, not a leaf")
    if spiffe_uris(leaf) != [svid.spiffe_id]:
        raise MalformedAnswer(f"leaf certificate's URI SAN does not name {svid.spiffe_id}")
    if not svid.bundle:
        raise MalformedAnswer(f"SVID {svid.spiffe_id} comes without a trust bundle")
    load_certificates(svid.bundle)
    issued, expiry = usable_now(leaf, f"SVID {svid.spiffe_id}", now)
    return SvidInfo("x509", svid.spiffe_id, issued, expiry, format(leaf.serial_number, "x"))


def usable_now(leaf: x509.Certificate, what: str, now: float) -> tuple[float, float]:
    """(notBefore, notAfter) of a leaf that a verifier on this node accepts now."""
    expiry = _ts(leaf.not_valid_after_utc)
    if expiry <= now:
        raise MalformedAnswer(f"{what} has expired")
    issued = _ts(leaf.not_valid_before_utc)
    _started(what, issued, now)
    return issued, expiry


def _started(what: str, start: float, now: float) -> None:
    """Reject what starts beyond the skew tolerance: a server clock ahead of this node's."""
    ahead = start - now
    if ahead > CLOCK_SKEW_TOLERANCE:
        raise MalformedAnswer(
            f"{what} is not valid for another {ahead:.0f}s (clock skew beyond "
            f"{CLOCK_SKEW_TOLERANCE:.0f}s between the server and this node)"
        )


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def x509_bundles(bundles: Mapping[str, bytes]) -> list[BundleInfo]:
    items = dict(bundles)
    if not items:
        raise MalformedAnswer("response holds no X.509 bundles")
    infos = []
    for td, blob in sorted(items.items()):
        certs = load_certificates(blob)
        newest = max(certs, key=lambda c: c.not_valid_after_utc)
        infos.append(
            BundleInfo(
                "x509",
                trust_domain_name(td),
                len(certs),
                _ts(newest.not_valid_after_utc),
                _ts(newest.not_valid_before_utc),
            )
        )
    return infos


def jwt_bundles(bundles: Mapping[str, bytes]) -> list[BundleInfo]:
    items = dict(bundles)
    if not items:
        raise MalformedAnswer("response holds no JWT bundles")
    infos = []
    for td, blob in sorted(items.items()):
        try:
            doc = json.loads(blob)
        except (ValueError, UnicodeDecodeError):
            raise MalformedAnswer(f"JWT bundle for {td} is not JSON") from None
        keys = doc.get("keys") if isinstance(doc, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, dict) and "kty" in k for k in keys):
            raise MalformedAnswer(f"JWT bundle for {td} is not a JWKS")
        infos.append(BundleInfo("jwt", trust_domain_name(td), len(keys), None))
    return infos


def trust_domain_name(key: str) -> str:
    """Bundle maps are keyed by 'spiffe://td' (SPIRE) or a bare name; the label is the bare name."""
    name = key.removeprefix("spiffe://").rstrip("/")
    if not name or "/" in name:
        raise MalformedAnswer("bundle keyed by something that is not a trust domain")
    return name


def _b64url(part: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise MalformedAnswer("JWT segment is not base64url") from None


def jwt_claims(token: str) -> dict[str, object]:
    """Public claims of a compact JWS; the signature is the agent's to check (ValidateJWTSVID)."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise MalformedAnswer("JWT is not three dot-separated segments")
    try:
        header = json.loads(_b64url(parts[0]))
        claims = json.loads(_b64url(parts[1]))
    except (ValueError, UnicodeDecodeError):
        raise MalformedAnswer("JWT header or claims are not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise MalformedAnswer("JWT header or claims are not JSON objects")
    return claims


def _time(claims: dict[str, object], name: str) -> float:
    """A NumericDate claim; JSON allows numbers no clock can hold (1e400, NaN, 10**400)."""
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedAnswer(f"JWT has no numeric {name}")
    try:
        seconds = float(value)
    except OverflowError:
        raise MalformedAnswer(f"JWT {name} is not a time") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= LATEST_TIME:
        raise MalformedAnswer(f"JWT {name} is not a time")
    return seconds


def audiences(value: object) -> list[str]:
    """The `aud` claim, a string or a list of strings (RFC 7519); anything else is malformed."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(a, str) for a in value):
        return value
    raise MalformedAnswer("JWT aud is not a string or a list of strings")


def jwt_svid(spiffe_id: str, token: str, audience: list[str], now: float) -> SvidInfo:
    claims = jwt_claims(token)
    if claims.get("sub") != spiffe_id:
        raise MalformedAnswer("JWT sub does not match the SVID's SPIFFE ID")
    if not set(audience) <= set(audiences(claims.get("aud"))):
        raise MalformedAnswer("JWT aud does not hold the requested audience")
    exp = _time(claims, "exp")
    if exp <= now:
        raise MalformedAnswer("JWT has expired")
    iat = _time(claims, "iat") if "iat" in claims else exp
    if "iat" in claims:
        _started("JWT-SVID", iat, now)
    if "nbf" in claims:
        _started("JWT-SVID", _time(claims, "nbf"), now)
    jti = claims.get("jti")
    return SvidInfo(
        "jwt", spiffe_id, iat, exp, str(jti) if isinstance(jti, str) and jti else f"iat:{iat:.0f}"
    )


def jwt_svids(answer: workload_pb2.JWTSVIDResponse, audience: list[str], now: float) -> list[SvidInfo]:
    if not answer.svids:
        raise MalformedAnswer("response holds no JWT-SVIDs")
    for svid in answer.svids:
        if not svid.spiffe_id.startswith("spiffe://"):
            raise MalformedAnswer("JWT-SVID has no SPIFFE ID")
    return [jwt_svid(s.spiffe_id, s.svid, audience, now) for s in answer.svids]
