"""Answers that used to escape a probe as exceptions: each is judged and counted as INVALID_RESPONSE
(or judged whole), never EXPORTER_ERROR."""

from __future__ import annotations

import pytest
from conftest import run

from exporter._proto import workload_pb2
from harness.certs import broken_leaf, malformed_san_leaf
from harness.fake_agent import jwt_answer, svid_answer


def test_malformed_san_is_invalid_response(fake_agent, fake_client) -> None:
    fake_agent.set("FetchX509SVID", answer=svid_answer(fake_agent, cert=malformed_san_leaf(fake_agent.ca)))
    result = run(fake_client, "fetch_x509_svid")
    assert result.code == "INVALID_RESPONSE", result.message


@pytest.mark.parametrize("how", ["version", "duplicate extension"])
def test_a_leaf_cryptography_refuses_is_invalid_response(fake_agent, fake_client, how) -> None:
    # Found by fuzzing answers: cryptography raises these as neither ValueError nor a subclass.
    fake_agent.set("FetchX509SVID", answer=svid_answer(fake_agent, cert=broken_leaf(fake_agent.ca, how)))
    result = run(fake_client, "fetch_x509_svid")
    assert result.code == "INVALID_RESPONSE", result.message


def test_a_bundle_ca_of_an_unknown_version_is_invalid_response(fake_agent, fake_client) -> None:
    broken = broken_leaf(fake_agent.ca, "version")
    fake_agent.set(
        "FetchX509Bundles",
        answer=lambda _req: workload_pb2.X509BundlesResponse(bundles={"spiffe://fake.test": broken}),
    )
    result = run(fake_client, "fetch_x509_bundles")
    assert result.code == "INVALID_RESPONSE", result.message


@pytest.mark.parametrize(
    "exp",
    [10**400, float("inf"), float("nan"), 1e300, -(10**400)],
    ids=["1e400-int", "inf", "nan", "1e300", "-1e400"],
)
def test_absurd_jwt_exp_is_invalid_response(fake_agent, fake_client, exp) -> None:
    # json.dumps writes Infinity/NaN and json.loads reads them back: an agent could send them.
    fake_agent.set(
        "FetchJWTSVID", answer=jwt_answer(fake_agent, lambda aud: fake_agent.jwt_token(aud, exp=exp))
    )
    result = run(fake_client, "fetch_jwt_svid")
    assert result.code == "INVALID_RESPONSE", result.message


@pytest.mark.parametrize("aud", [7, {"nested": 1}, [{"a": 1}], True])
def test_jwt_aud_of_the_wrong_type_is_invalid_response(fake_agent, fake_client, aud) -> None:
    fake_agent.set("FetchJWTSVID", answer=jwt_answer(fake_agent, lambda _aud: fake_agent.jwt_token(aud)))
    result = run(fake_client, "fetch_jwt_svid")
    assert result.code == "INVALID_RESPONSE", result.message


@pytest.mark.parametrize("aud", [42, {"k": "v"}, True])
def test_validate_claims_with_non_string_aud_is_invalid_response(fake_agent, fake_client, aud) -> None:
    def answer(_req):
        response = workload_pb2.ValidateJWTSVIDResponse(spiffe_id=fake_agent.spiffe_id)
        response.claims.update({"sub": fake_agent.spiffe_id, "aud": aud})
        return response

    fake_agent.set("ValidateJWTSVID", answer=answer)
    result = run(fake_client, "validate_jwt_svid")
    assert result.code == "INVALID_RESPONSE", result.message


def test_validate_claims_holding_infinity_are_judged_not_an_exporter_error(fake_agent, fake_client) -> None:
    # Found by test_whole_answers: a Struct number may be inf, which protobuf's JSON conversion refuses.
    def answer(_req, aud):
        response = workload_pb2.ValidateJWTSVIDResponse(spiffe_id=fake_agent.spiffe_id)
        response.claims.update({"sub": fake_agent.spiffe_id, "aud": aud, "x": float("inf")})
        return response

    fake_agent.set("ValidateJWTSVID", answer=lambda req: answer(req, [req.audience]))
    assert run(fake_client, "validate_jwt_svid").code == "OK"
    fake_agent.set("ValidateJWTSVID", answer=lambda req: answer(req, float("inf")))
    assert run(fake_client, "validate_jwt_svid").code == "INVALID_RESPONSE"
