"""Test-only SPIFFE material: a CA, SVID leaves, JWTs and JWKS, made fresh for each test run."""

from __future__ import annotations

import base64
import datetime as dt
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID, NameOID


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


class TestCA:
    __test__ = False

    def __init__(self, trust_domain: str = "fake.test", days: int = 1) -> None:
        self.trust_domain = trust_domain
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.not_after = now + dt.timedelta(days=days)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name("ca"))
            .issuer_name(_name("ca"))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(self.not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                False,
            )
            .sign(self.key, hashes.SHA256())
        )

    @property
    def der(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.DER)

    def leaf(
        self, spiffe_id: str | None, lifetime: float = 3600, not_before_ago: float = 60, ca: bool = False
    ) -> tuple[bytes, bytes, x509.Certificate]:
        """(DER cert, PKCS#8 DER key, cert) for an SVID leaf; spiffe_id None leaves out the URI SAN."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name("svid"))
            .issuer_name(_name("ca"))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(seconds=not_before_ago))
            .not_valid_after(now - dt.timedelta(seconds=not_before_ago) + dt.timedelta(seconds=lifetime))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if spiffe_id:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), False
            )
        cert = builder.sign(self.key, hashes.SHA256())
        key_der = key.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return cert.public_bytes(serialization.Encoding.DER), key_der, cert


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, object], header: dict[str, object] | None = None) -> str:
    head = b64url(json.dumps(header or {"alg": "ES256", "kid": "k1", "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(claims).encode())}.{b64url(b'not-a-real-signature')}"


def jwks(n_keys: int = 1) -> bytes:
    return json.dumps(
        {"keys": [{"kty": "EC", "kid": f"k{i}", "crv": "P-256", "x": "AA", "y": "AA"} for i in range(n_keys)]}
    ).encode()


def _hour_leaf(ca: TestCA) -> x509.CertificateBuilder:
    """A nameless leaf under `ca`, valid for the coming hour, before its extensions."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(ec.generate_private_key(ec.SECP256R1()).public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
    )


def malformed_san_leaf(ca: TestCA) -> bytes:
    """A leaf whose SAN extension does not parse: cryptography raises ValueError on reading it."""
    cert = (
        _hour_leaf(ca)
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x03\x86\x01"), False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


# Two private-use extension OIDs of the same encoded length, so one can be overwritten by the other.
_EXT_A = x509.ObjectIdentifier("1.3.6.1.4.1.99999.1")
_EXT_B = x509.ObjectIdentifier("1.3.6.1.4.1.99999.2")


def broken_leaf(ca: TestCA, how: str) -> bytes:
    """A leaf that cryptography refuses with an exception other than ValueError.

    "version": the version field says 20, so loading raises InvalidVersion.
    "duplicate extension": one extension appears twice, so reading extensions raises
    DuplicateExtension. Both were found in fuzzed answers; the signature no longer matches,
    which no probe checks.
    """
    cert = (
        _hour_leaf(ca)
        .add_extension(x509.UnrecognizedExtension(_EXT_A, b"\x05\x00"), False)
        .add_extension(x509.UnrecognizedExtension(_EXT_B, b"\x05\x00"), False)
        .sign(ca.key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    if how == "version":
        v3 = b"\xa0\x03\x02\x01\x02"  # [0] EXPLICIT INTEGER 2, the tbsCertificate's first field
        assert der.count(v3) == 1
        return der.replace(v3, b"\xa0\x03\x02\x01\x14")
    if how == "duplicate extension":
        a, b = _oid_der(_EXT_A), _oid_der(_EXT_B)
        assert der.count(b) == 1
        return der.replace(b, a)
    raise ValueError(f"unknown breakage {how!r}")


def _oid_der(oid: x509.ObjectIdentifier) -> bytes:
    """The DER of an OBJECT IDENTIFIER, as it appears inside the certificate."""
    first, second, *rest = (int(p) for p in oid.dotted_string.split("."))
    body = bytearray([40 * first + second])
    for arc in rest:
        chunk = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            chunk.append(0x80 | (arc & 0x7F))
        body += bytes(reversed(chunk))
    return bytes([0x06, len(body)]) + bytes(body)
