"""The committed generated code is exactly what scripts/gen-protos makes from protos/."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

from exporter._proto import workload_pb2


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable}
    subprocess.run([str(ROOT / "scripts" / "gen-protos"), str(tmp_path)], check=True, env=env)
    committed = ROOT / "exporter" / "_proto"
    generated = sorted(p.name for p in tmp_path.iterdir())
    assert generated == [
        "debug_pb2.py",
        "debug_pb2.pyi",
        "health_pb2.py",
        "health_pb2.pyi",
        "sds_pb2.py",
        "sds_pb2.pyi",
        "workload_pb2.py",
        "workload_pb2.pyi",
    ]
    for name in generated:
        assert (tmp_path / name).read_text() == (committed / name).read_text(), (
            f"{name} is stale: run scripts/gen-protos"
        )


def test_schema_has_no_package_and_standard_field_numbers() -> None:
    service = workload_pb2.DESCRIPTOR.services_by_name["SpiffeWorkloadAPI"]
    assert service.full_name == "SpiffeWorkloadAPI"
    assert [m.name for m in service.methods] == [
        "FetchX509SVID",
        "FetchX509Bundles",
        "FetchJWTSVID",
        "FetchJWTBundles",
        "ValidateJWTSVID",
    ]
    svid = workload_pb2.X509SVID.DESCRIPTOR.fields_by_name
    assert {n: f.number for n, f in svid.items()} == {
        "spiffe_id": 1,
        "x509_svid": 2,
        "x509_svid_key": 3,
        "bundle": 4,
        "hint": 5,
    }
    resp = workload_pb2.X509SVIDResponse.DESCRIPTOR.fields_by_name
    assert {n: f.number for n, f in resp.items()} == {"svids": 1, "crl": 2, "federated_bundles": 3}
    assert workload_pb2.JWTSVIDRequest.DESCRIPTOR.fields_by_name["spiffe_id"].number == 2
    assert workload_pb2.ValidateJWTSVIDResponse.DESCRIPTOR.fields_by_name[
        "claims"
    ].message_type.full_name == ("google.protobuf.Struct")


def test_sds_subset_has_envoys_field_numbers_and_service() -> None:
    """The numbers the agent's Envoy types use (envoyproxy/data-plane-api, checked against
    xds-protos 1.85): a wrong one would read as an empty field, not fail."""
    from exporter._proto import sds_pb2

    def numbers(message) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    assert sds_pb2.DESCRIPTOR.services_by_name["SecretDiscoveryService"].full_name == (
        "envoy.service.secret.v3.SecretDiscoveryService"
    )
    assert numbers(sds_pb2.DiscoveryRequest) == {
        "version_info": 1,
        "node": 2,
        "resource_names": 3,
        "type_url": 4,
        "response_nonce": 5,
    }
    assert numbers(sds_pb2.DiscoveryResponse) == {
        "version_info": 1,
        "resources": 2,
        "type_url": 4,
        "nonce": 5,
    }
    assert numbers(sds_pb2.Node)["user_agent_build_version"] == 8
    assert numbers(sds_pb2.Secret) == {"name": 1, "tls_certificate": 2, "validation_context": 4}
    assert numbers(sds_pb2.CertificateValidationContext) == {"trusted_ca": 1, "custom_validator_config": 12}
    assert numbers(sds_pb2.DataSource)["inline_bytes"] == 2
