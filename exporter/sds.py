"""Envoy SDS as the SPIRE agent serves it: the request an Envoy sends, and the judgement of an
answer into public facts. Private keys are checked for presence only, never read.

Envoy subscribes to each secret on its own, and so does the probe: the agent refuses `ROOTCA`
and `ALL` in one request. The agent names resources `default` (the workload's certificate),
`ROOTCA` (its trust domain's bundle) and `ALL` (every bundle it may trust) by default; Istio
maps them differently (`sds.default_bundle_name = "null"`, `default_all_bundles_name =
"ROOTCA"`), so every name is a setting. A validation context is plain `trusted_ca` PEM for an
Envoy before 1.18, or where SPIRE is told so (`disable_spiffe_cert_validation`), and otherwise a
SPIFFECertValidatorConfig.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

from google.protobuf.message import DecodeError

from exporter._proto import sds_pb2
from exporter.answers import MalformedAnswer, load_pem_certificates, spiffe_uris, usable_now

SECRET_TYPE_URL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
SPIFFE_VALIDATOR = "envoy.tls.cert_validator.spiffe"
SPIFFE_VALIDATOR_TYPE_URL = (
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig"
)
TRUSTED_CA, SPIFFE = "trusted_ca", "spiffe"
VERSION = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


@dataclass(frozen=True)
class SdsFacts:
    certificate_expiry: float | None  # the workload certificate's notAfter, when one was asked for
    validation: tuple[tuple[str, str], ...]  # (resource name, TRUSTED_CA or SPIFFE), by name


def request(names: tuple[str, ...], envoy_version: str, node_id: str) -> sds_pb2.DiscoveryRequest:
    """What an Envoy of `envoy_version` sends: the SPIRE agent chooses the validation context's
    type by the node's user_agent_build_version."""
    major, minor, patch = (int(p) for p in VERSION.fullmatch(envoy_version).groups())  # type: ignore[union-attr]
    node = sds_pb2.Node(
        id=node_id,
        cluster="spire-health-exporter",
        user_agent_name="envoy",
        user_agent_build_version=sds_pb2.BuildVersion(
            version=sds_pb2.SemanticVersion(major_number=major, minor_number=minor, patch=patch)
        ),
    )
    return sds_pb2.DiscoveryRequest(node=node, resource_names=list(names), type_url=SECRET_TYPE_URL)


def judge(answer: sds_pb2.DiscoveryResponse, names: tuple[str, ...], svid_name: str, now: float) -> SdsFacts:
    expiry: float | None = None
    validation: dict[str, str] = {}
    seen: set[str] = set()
    for resource in answer.resources:
        if resource.type_url != SECRET_TYPE_URL:
            raise MalformedAnswer(f"SDS resource of type {resource.type_url[:80]!r}, not a Secret")
        secret = _parse(sds_pb2.Secret, resource.value, "Secret")
        if secret.name not in names:
            raise MalformedAnswer(f"SDS answered a resource it was not asked for: {secret.name[:80]!r}")
        seen.add(secret.name)
        kind = secret.WhichOneof("type")
        if kind == "tls_certificate":
            expiry = _certificate(secret.tls_certificate, secret.name, now)
        elif kind == "validation_context":
            validation[secret.name] = _validation(secret.validation_context, secret.name)
        else:
            raise MalformedAnswer(
                f"SDS secret {secret.name!r} is neither a certificate nor a validation context"
            )
    missing = [n for n in names if n not in seen]
    if missing:
        raise MalformedAnswer(f"SDS answer lacks {', '.join(missing)}")
    if svid_name in names and expiry is None:
        raise MalformedAnswer(f"SDS secret {svid_name!r} is not a certificate")
    return SdsFacts(expiry, tuple(sorted(validation.items())))


def judge_each(answers: list[tuple[str, sds_pb2.DiscoveryResponse]], svid_name: str, now: float) -> SdsFacts:
    """One answer per resource name, as Envoy subscribes to each secret on its own (the agent
    serves one bundle resource per request: ROOTCA and ALL together are refused)."""
    facts = [judge(answer, (name,), svid_name, now) for name, answer in answers]
    expiry = next((f.certificate_expiry for f in facts if f.certificate_expiry is not None), None)
    return SdsFacts(expiry, tuple(sorted(v for f in facts for v in f.validation)))


M = TypeVar("M", sds_pb2.Secret, sds_pb2.SPIFFECertValidatorConfig)


def _parse(message: type[M], data: bytes, what: str) -> M:
    try:
        return message.FromString(data)
    except DecodeError:
        raise MalformedAnswer(f"SDS {what} is not a valid protobuf message") from None


def _certificate(tls: sds_pb2.TlsCertificate, name: str, now: float) -> float:
    if not tls.private_key.inline_bytes:
        raise MalformedAnswer(f"SDS certificate {name!r} comes without its private key")
    leaf = load_pem_certificates(tls.certificate_chain.inline_bytes)[0]
    if len(spiffe_uris(leaf)) != 1:
        raise MalformedAnswer(f"SDS certificate {name!r} does not name one SPIFFE ID")
    return usable_now(leaf, f"SDS certificate {name!r}", now)[1]


def _validation(context: sds_pb2.CertificateValidationContext, name: str) -> str:
    if context.HasField("custom_validator_config"):
        custom = context.custom_validator_config
        if custom.name != SPIFFE_VALIDATOR or custom.typed_config.type_url != SPIFFE_VALIDATOR_TYPE_URL:
            raise MalformedAnswer(
                f"SDS validation context {name!r} has an unknown validator {custom.name[:80]!r}"
            )
        config = _parse(sds_pb2.SPIFFECertValidatorConfig, custom.typed_config.value, "SPIFFE validator")
        if not config.trust_domains:
            raise MalformedAnswer(f"SDS validation context {name!r} trusts no trust domain")
        for domain in config.trust_domains:
            load_pem_certificates(domain.trust_bundle.inline_bytes)
        return SPIFFE
    load_pem_certificates(context.trusted_ca.inline_bytes)
    return TRUSTED_CA
