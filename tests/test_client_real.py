"""The project's own Workload API client against a real spire-agent."""

from __future__ import annotations

import time

import grpc
import pytest
from cryptography import x509

from exporter import answers
from exporter._proto import workload_pb2
from exporter.client import WorkloadClient

pytestmark = pytest.mark.spire


def test_real_agent_serves_x509_svid(spire, endpoint) -> None:
    with WorkloadClient(endpoint) as client:
        answer = client.fetch_x509_svid(timeout=5)
    assert [s.spiffe_id for s in answer.svids] == [spire.workload_id]
    leaf = answers.load_certificates(answer.svids[0].x509_svid)[0]
    assert answers.spiffe_uris(leaf) == [spire.workload_id]
    lifetime = leaf.not_valid_after_utc.timestamp() - leaf.not_valid_before_utc.timestamp()
    # SPIRE's default X.509-SVID TTL is one hour (the server backdates notBefore a little).
    assert 3500 <= lifetime <= 3700
    assert leaf.not_valid_after_utc.timestamp() > time.time() + 1800
    bundle = x509.load_pem_x509_certificates(spire.bundle_pem().encode())
    assert {c.fingerprint(c.signature_hash_algorithm) for c in bundle} == {
        c.fingerprint(c.signature_hash_algorithm) for c in answers.load_certificates(answer.svids[0].bundle)
    }
    print(f"real agent served X.509-SVID {spire.workload_id}, expires {leaf.not_valid_after_utc.isoformat()}")


def test_real_agent_serves_jwt_svid(spire, endpoint) -> None:
    with WorkloadClient(endpoint) as client:
        answer = client.fetch_jwt_svid(["skeleton-test"], timeout=5)
    assert [s.spiffe_id for s in answer.svids] == [spire.workload_id]
    claims = answers.jwt_claims(answer.svids[0].svid)
    assert claims["sub"] == spire.workload_id
    assert claims["aud"] == ["skeleton-test"]
    now = time.time()
    # Default JWT-SVID TTL is five minutes.
    assert now + 200 < claims["exp"] <= now + 301
    print(
        f"real agent served JWT-SVID {spire.workload_id}, aud={claims['aud']}, "
        f"exp in {claims['exp'] - now:.0f} s"
    )


def test_client_reuses_one_channel_and_cancels_streams(spire, endpoint) -> None:
    with WorkloadClient(endpoint) as client:
        channel = client._channel
        for _ in range(20):
            client.fetch_x509_svid(timeout=5)
            client.fetch_x509_bundles(timeout=5)
        assert client._channel is channel
        assert client.health_check(timeout=5).status == 1


def test_missing_security_header_is_invalid_argument(spire, endpoint) -> None:
    """What the agent answers a client that forgets the header, which ours always sends."""
    with (
        grpc.insecure_channel(f"unix:{spire.agent_socket}") as channel,
        pytest.raises(grpc.RpcError) as raised,
    ):
        fetch = channel.unary_stream(
            "/SpiffeWorkloadAPI/FetchX509SVID",
            request_serializer=workload_pb2.X509SVIDRequest.SerializeToString,
            response_deserializer=workload_pb2.X509SVIDResponse.FromString,
        )
        next(fetch(workload_pb2.X509SVIDRequest(), timeout=5))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "security header" in raised.value.details()


def test_unregistered_caller_is_permission_denied(healthy_spire, endpoint) -> None:
    spire = healthy_spire
    spire.delete_entry(spire.entry_id)
    spire.entry_id = None

    def denied() -> bool:
        with WorkloadClient(endpoint) as client:
            try:
                client.fetch_x509_svid(timeout=3)
            except grpc.RpcError as e:
                return e.code() == grpc.StatusCode.PERMISSION_DENIED and "no identity issued" in e.details()
        return False

    deadline = time.monotonic() + 30
    while not denied():
        assert time.monotonic() < deadline, "agent kept serving an SVID after its entry was deleted"
        time.sleep(0.5)
