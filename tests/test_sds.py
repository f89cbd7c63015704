"""The SDS probe and stream against real agents: SPIRE's default resource names, Istio's mapping,
the SDS API switched off, an old Envoy, and a push counted when the SVID rotates; and its judge
against answers no agent sends."""

from __future__ import annotations

import dataclasses
import time

import pytest
from conftest import started_spire
from running import RunningExporter, fast_config

from exporter import config
from exporter._proto import sds_pb2
from exporter.answers import MalformedAnswer
from exporter.client import WorkloadClient
from exporter.probes import spec
from exporter.sds import SECRET_TYPE_URL, judge
from harness.certs import TestCA

pytestmark = pytest.mark.spire
ISTIO = """  sds {
    default_svid_name = "default"
    default_bundle_name = "null"
    default_all_bundles_name = "ROOTCA"
  }"""


def sds_settings(socket: str, **names: str):
    cfg = config.build(
        {"workload_api": {"socket": socket}, "probes": {"sds_fetch_secrets": {"enabled": True, **names}}},
        environ={},
    )
    return cfg.each["sds_fetch_secrets"]


def run_sds(socket: str, **names: str):
    with WorkloadClient(socket) as client:
        return spec("sds_fetch_secrets").build()(client, sds_settings(socket, **names))


def test_default_names_and_envoy_versions_on_the_real_agent(spire) -> None:
    socket = f"unix://{spire.agent_socket}"
    result = run_sds(socket)
    assert result.code == "OK", result.message
    (facts,) = result.facts
    assert facts.certificate_expiry > time.time()
    # An Envoy from 1.18 gets SPIFFE validators, for its trust domain and for every bundle.
    assert facts.validation == (("ALL", "spiffe"), ("ROOTCA", "spiffe"))
    with WorkloadClient(socket) as client:
        old = dataclasses.replace(sds_settings(socket, all_bundles_name=""), envoy_version="1.17.0")
        result = spec("sds_fetch_secrets").build()(client, old)
    assert result.code == "OK", result.message
    assert result.facts[0].validation == (("ROOTCA", "trusted_ca"),)


def test_istio_name_mapping_and_the_sds_api_switched_off() -> None:
    istio = started_spire(agent_extra=ISTIO)
    try:
        socket = f"unix://{istio.agent_socket}"
        # SPIRE's default names against an agent mapped for Istio: ALL is no resource there.
        result = run_sds(socket)
        assert (result.code, "ALL" in result.message) == ("INVALID_ARGUMENT", True)
        # Istio's own: ROOTCA is every bundle, and there is no trust-domain-only resource.
        result = run_sds(socket, bundle_name="", all_bundles_name="ROOTCA")
        assert result.code == "OK", result.message
        assert result.facts[0].validation == (("ROOTCA", "spiffe"),)
    finally:
        istio.stop()
    off = started_spire(agent_extra="  disable_sds_api = true")
    try:
        result = run_sds(f"unix://{off.agent_socket}")
        assert result.code == "UNIMPLEMENTED", (result.code, result.message)
        # The Workload API is still served: only SDS is off.
        with WorkloadClient(f"unix://{off.agent_socket}") as client:
            assert client.fetch_x509_svid(5).svids
    finally:
        off.stop()


def test_stream_counts_a_push_when_the_svid_rotates() -> None:
    # An entry whose X.509-SVID lives 30 s: the agent renews it at about half that and pushes.
    local = started_spire()
    try:
        if local.entry_id:
            local.delete_entry(local.entry_id)
        local.entry_id = local.create_entry(x509_ttl=30)
        local.wait_for_svid()
        cfg = fast_config(
            f"unix://{local.agent_socket}",
            **{"probes.sds_fetch_secrets.enabled": True, "agent.process.enabled": False},
        )
        with RunningExporter(cfg) as running:
            up = ("spire_health_sds_stream_up", ())
            running.wait_for(lambda s: s.get(up) == 1, 15, "the SDS stream")
            s = running.wait_for(
                lambda s: s.get(("spire_health_sds_stream_pushes_total", ()), 0) >= 1,
                60,
                "a push on the SDS stream after rotation",
            )
            assert s[("spire_health_probe_success", (("rpc", "sds_fetch_secrets"),))] == 1
            assert s[("spire_health_sds_certificate_expiry_timestamp_seconds", ())] > time.time()
            # The stream may have opened before the agent held the new entry's SVID, and then
            # reconnected: counted, never fatal.
            assert ("spire_health_sds_stream_reconnects_total", ()) in s
    finally:
        local.stop()


def _secret_any(secret: sds_pb2.Secret, type_url: str = SECRET_TYPE_URL):
    from google.protobuf import any_pb2

    return any_pb2.Any(type_url=type_url, value=secret.SerializeToString())


def _pem_leaf(ca: TestCA, spiffe_id: str | None = "spiffe://fake.test/w", ago: float = 60) -> bytes:
    from cryptography.hazmat.primitives import serialization

    _, _, cert = ca.leaf(spiffe_id, not_before_ago=ago)
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    "case, expected",
    [
        ("not a secret", "not a Secret"),
        ("no key", "without its private key"),
        ("no spiffe id", "does not name one SPIFFE ID"),
        ("not yet valid", "not valid for another"),
        ("unasked", "not asked for"),
        ("missing", "lacks default"),
        ("unknown validator", "unknown validator"),
    ],
)
def test_judge_rejects_what_envoy_could_not_use(case: str, expected: str) -> None:
    ca = TestCA()
    cert = sds_pb2.Secret(
        name="default",
        tls_certificate=sds_pb2.TlsCertificate(
            certificate_chain=sds_pb2.DataSource(inline_bytes=_pem_leaf(ca)),
            private_key=sds_pb2.DataSource(inline_bytes=b"k"),
        ),
    )
    resources = [_secret_any(cert)]
    names: tuple[str, ...] = ("default",)
    if case == "not a secret":
        resources = [_secret_any(cert, "type.googleapis.com/envoy.config.cluster.v3.Cluster")]
    elif case == "no key":
        cert.tls_certificate.private_key.inline_bytes = b""
        resources = [_secret_any(cert)]
    elif case == "no spiffe id":
        cert.tls_certificate.certificate_chain.inline_bytes = _pem_leaf(ca, None)
        resources = [_secret_any(cert)]
    elif case == "not yet valid":
        cert.tls_certificate.certificate_chain.inline_bytes = _pem_leaf(ca, ago=-3600)
        resources = [_secret_any(cert)]
    elif case == "unasked":
        names = ("ROOTCA",)
    elif case == "missing":
        resources = []
    elif case == "unknown validator":
        names = ("ROOTCA",)
        context = sds_pb2.CertificateValidationContext(
            custom_validator_config=sds_pb2.TypedExtensionConfig(name="envoy.tls.cert_validator.default")
        )
        resources = [_secret_any(sds_pb2.Secret(name="ROOTCA", validation_context=context))]
    with pytest.raises(MalformedAnswer, match=expected):
        judge(sds_pb2.DiscoveryResponse(resources=resources), names, "default", time.time())
