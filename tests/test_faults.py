"""Probes against a fake Workload API with injected delays, status codes and malformed answers."""

from __future__ import annotations

import statistics
import time

import grpc
import pytest
from conftest import run, settings

from exporter._proto import workload_pb2
from exporter.answers import BundleInfo
from exporter.store.probes import ProbeStore
from harness.certs import TestCA, b64url, make_jwt
from harness.fake_agent import jwt_answer, svid_answer

METHOD_OF = {
    "fetch_x509_svid": "FetchX509SVID",
    "fetch_x509_bundles": "FetchX509Bundles",
    "fetch_jwt_svid": "FetchJWTSVID",
    "fetch_jwt_bundles": "FetchJWTBundles",
    "validate_jwt_svid": "ValidateJWTSVID",
}


def test_healthy_fake_gives_ok_everywhere(fake_client) -> None:
    for rpc in [*METHOD_OF, "health_check"]:
        result = run(fake_client, rpc)
        assert result.code == "OK", (rpc, result.message)


@pytest.mark.parametrize("rpc", ["fetch_x509_svid", "fetch_jwt_svid", "validate_jwt_svid"])
@pytest.mark.parametrize("delay", [0.0, 0.01, 0.1])
def test_exact_delay_is_measured_not_the_cancel_after_it(fake_agent, fake_client, rpc, delay) -> None:
    # How close the figure comes (about 1-2 ms) is a timing goal, measured and printed by
    # bench/accuracy.py; here only what can't depend on machine load: a probe never reports
    # less than the agent's delay, and never includes a reconnect (200 ms backoff or more).
    # A prepared answer, so the fake's own work (minting a certificate) is not in the figure.
    method = METHOD_OF[rpc]
    prepared = {"FetchX509SVID": fake_agent.x509_svid, "FetchJWTSVID": fake_agent.jwt_svid}.get(method)
    fixed = prepared(workload_pb2.JWTSVIDRequest(audience=["test-audience"])) if prepared else None
    fake_agent.set(method, delay=delay, answer=(lambda _r: fixed) if fixed else None)
    run(fake_client, rpc)  # connect first; connection setup is not the agent's latency
    measured = [run(fake_client, rpc).duration for _ in range(7)]
    assert min(measured) >= delay, f"{min(measured) * 1000:.2f} ms for a {delay * 1000:.0f} ms delay"
    error = statistics.median(measured) - delay
    assert error < 0.1, f"median {statistics.median(measured) * 1000:.2f} ms for {delay * 1000:.0f} ms delay"


CODES = [
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION,
]


@pytest.mark.parametrize("code", CODES, ids=lambda c: c.name)
def test_each_status_code_is_counted_under_its_own_name(fake_agent, fake_client, code) -> None:
    state = ProbeStore()
    for rpc in METHOD_OF:
        # One method fails at a time, so validate_jwt_svid gets its token and meets the code itself.
        fake_agent.reset()
        fake_agent.set(METHOD_OF[rpc], code=code, details="injected")
        result = run(fake_client, rpc)
        state.record(result)
        assert result.code == code.name, (rpc, result.message)
    snap = state.snapshot()
    for rpc in METHOD_OF:
        failed = {outcome: n for outcome, n in snap[rpc].counts.items() if n}
        # Only UNAVAILABLE carries a reason; a message SPIRE never sends is "other".
        assert failed == {(code.name, "other" if code.name == "UNAVAILABLE" else ""): 1}
        assert snap[rpc].observations == 0  # failures stay out of the latency histogram


def malformed_cases(fake):
    ca = fake.ca
    no_uri, _, _ = ca.leaf(None)
    expired, _, _ = ca.leaf(fake.spiffe_id, lifetime=30, not_before_ago=120)
    ca_leaf, _, _ = ca.leaf(fake.spiffe_id, ca=True)
    other_id, _, _ = ca.leaf("spiffe://fake.test/someone-else")
    good, _, _ = ca.leaf(fake.spiffe_id)
    now = int(time.time())
    return {
        "x509 no svids": ("FetchX509SVID", lambda _r: workload_pb2.X509SVIDResponse()),
        "x509 garbage bytes": ("FetchX509SVID", lambda _r: b"\xff\xfe garbage, not protobuf"),
        "x509 wrong message type": (
            "FetchX509SVID",
            lambda _r: workload_pb2.JWTBundlesResponse(bundles={"x": b"y"}).SerializeToString(),
        ),
        "x509 chain not DER": ("FetchX509SVID", svid_answer(fake, cert=b"not a certificate")),
        "x509 truncated chain": ("FetchX509SVID", svid_answer(fake, cert=good[: len(good) // 2])),
        "x509 DER but not a certificate": (
            "FetchX509SVID",
            svid_answer(fake, cert=bytes([0x30, 3, 2, 1, 0])),
        ),
        "x509 leaf without SPIFFE URI": ("FetchX509SVID", svid_answer(fake, cert=no_uri)),
        "x509 chain starts with a CA": ("FetchX509SVID", svid_answer(fake, cert=ca_leaf)),
        "x509 leaf names another ID": ("FetchX509SVID", svid_answer(fake, cert=other_id)),
        "x509 expired leaf": ("FetchX509SVID", svid_answer(fake, cert=expired)),
        "x509 missing key": ("FetchX509SVID", svid_answer(fake, key=b"")),
        "x509 missing bundle": ("FetchX509SVID", svid_answer(fake, bundle=b"")),
        "x509 bundles empty": ("FetchX509Bundles", lambda _r: workload_pb2.X509BundlesResponse()),
        "x509 bundle not DER": (
            "FetchX509Bundles",
            lambda _r: workload_pb2.X509BundlesResponse(bundles={"spiffe://fake.test": b"PEM?"}),
        ),
        "jwt no svids": ("FetchJWTSVID", lambda _r: workload_pb2.JWTSVIDResponse()),
        "jwt without exp": ("FetchJWTSVID", jwt_answer(fake, lambda aud: fake.jwt_token(aud, exp=None))),
        "jwt expired": ("FetchJWTSVID", jwt_answer(fake, lambda aud: fake.jwt_token(aud, exp=now - 5))),
        "jwt string exp": ("FetchJWTSVID", jwt_answer(fake, lambda aud: fake.jwt_token(aud, exp="soon"))),
        "jwt bad base64": ("FetchJWTSVID", jwt_answer(fake, lambda aud: "a.b!@#$.c")),
        "jwt two segments": ("FetchJWTSVID", jwt_answer(fake, lambda aud: "abc.def")),
        "jwt claims not json": (
            "FetchJWTSVID",
            jwt_answer(fake, lambda aud: f"{b64url(b'{}')}.{b64url(b'[')}.x"),
        ),
        "jwt wrong sub": (
            "FetchJWTSVID",
            jwt_answer(fake, lambda aud: fake.jwt_token(aud, sub="spiffe://fake.test/other")),
        ),
        "jwt wrong aud": ("FetchJWTSVID", jwt_answer(fake, lambda aud: fake.jwt_token(["other"]))),
        "jwt unsigned shape": (
            "FetchJWTSVID",
            jwt_answer(fake, lambda aud: make_jwt({"sub": 1}) + ".extra"),
        ),
        "jwks empty map": ("FetchJWTBundles", lambda _r: workload_pb2.JWTBundlesResponse()),
        "jwks not json": (
            "FetchJWTBundles",
            lambda _r: workload_pb2.JWTBundlesResponse(bundles={"spiffe://fake.test": b"\x00\x01"}),
        ),
        "jwks without keys": (
            "FetchJWTBundles",
            lambda _r: workload_pb2.JWTBundlesResponse(bundles={"spiffe://fake.test": b'{"kty": "EC"}'}),
        ),
        "jwks key without kty": (
            "FetchJWTBundles",
            lambda _r: workload_pb2.JWTBundlesResponse(
                bundles={"spiffe://fake.test": b'{"keys": [{"kid": "1"}]}'}
            ),
        ),
        "bundle keyed by a path": (
            "FetchJWTBundles",
            lambda _r: workload_pb2.JWTBundlesResponse(bundles={"spiffe://fake.test/a/b": b'{"keys": []}'}),
        ),
        "validate names another ID": (
            "ValidateJWTSVID",
            lambda req: workload_pb2.ValidateJWTSVIDResponse(spiffe_id="spiffe://fake.test/other"),
        ),
        "validate without aud": (
            "ValidateJWTSVID",
            lambda req: workload_pb2.ValidateJWTSVIDResponse(spiffe_id=fake.spiffe_id),
        ),
    }


RPC_OF = {v: k for k, v in METHOD_OF.items()}


def test_every_malformed_answer_counts_as_invalid_response(fake_agent, fake_client) -> None:
    state = ProbeStore()
    cases = malformed_cases(fake_agent)
    for name, (method, answer) in cases.items():
        fake_agent.reset()
        fake_agent.set(method, answer=answer)
        result = run(fake_client, RPC_OF[method])
        state.record(result)
        assert result.code == "INVALID_RESPONSE", f"{name}: got {result.code} ({result.message})"
        assert result.message, name
    total = sum(s.counts[("INVALID_RESPONSE", "")] for s in state.snapshot().values())
    assert total == len(cases)


def test_stream_closed_before_first_message_is_invalid_response(fake_agent, fake_client) -> None:
    fake_agent.set("FetchX509SVID", close_without_message=True)
    result = run(fake_client, "fetch_x509_svid")
    assert result.code == "INVALID_RESPONSE"


def test_oversized_answer_is_invalid_response(fake_agent, fake_client) -> None:
    big = workload_pb2.X509BundlesResponse(bundles={"spiffe://fake.test": b"\x30" * (5 * 2**20)})
    fake_agent.set("FetchX509Bundles", answer=lambda _r: big)
    result = run(fake_client, "fetch_x509_bundles")
    assert result.code == "INVALID_RESPONSE", result.message


@pytest.mark.parametrize(
    "rpc", ["fetch_x509_svid", "fetch_x509_bundles", "fetch_jwt_bundles", "fetch_jwt_svid"]
)
def test_call_that_never_answers_is_cut_at_the_deadline(fake_agent, fake_client, rpc) -> None:
    fake_agent.set(METHOD_OF[rpc], never_answer=True)
    start = time.monotonic()
    result = run(fake_client, rpc, timeout=0.5)
    elapsed = time.monotonic() - start
    assert result.code == "DEADLINE_EXCEEDED"
    assert 0.5 <= elapsed < 0.7
    assert 0.5 <= result.duration < 0.7


def test_health_not_serving_and_serving(fake_agent, fake_client) -> None:
    from exporter._proto import health_pb2

    assert run(fake_client, "health_check").code == "OK"
    fake_agent.set("Check", answer=lambda _r: health_pb2.HealthCheckResponse(status=2))
    assert run(fake_client, "health_check").code == "NOT_SERVING"


def test_roundtrip_same_token_twice_is_stale(fake_agent, fake_client) -> None:
    from exporter.probes.jwt_roundtrip import RoundTripProbe

    probe = RoundTripProbe()
    # A 5-minute token and a 3-minute interval: one audience, rt/0, asked for every time.
    s = settings("fetch_jwt_svid_roundtrip", interval=180.0, audience="rt")
    tokens = iter([fake_agent.jwt_token(["rt/0"], jti="a"), fake_agent.jwt_token(["rt/0"], jti="b")])
    fixed = fake_agent.jwt_token(["rt/0"], jti="b")
    fake_agent.set("FetchJWTSVID", answer=jwt_answer(fake_agent, lambda aud: next(tokens, fixed)))
    assert probe(fake_client, s).code == "OK"
    assert probe(fake_client, s).code == "OK"  # new jti: minted anew
    assert probe(fake_client, s).code == "STALE_TOKEN"  # same jti and iat as the previous call


def test_roundtrip_takes_enough_audiences_in_turn_for_the_token_lifetime() -> None:
    from exporter.probes.jwt_roundtrip import MAX_AUDIENCES, audiences_needed

    # Each audience must come round only past half the lifetime, when the agent renews.
    for lifetime, interval in ((300, 180), (3600, 180), (3600, 60), (86400, 180)):
        n = audiences_needed(lifetime, interval)
        assert n * interval > lifetime / 2 or n == MAX_AUDIENCES, (lifetime, interval, n)
        assert (n - 1) * interval <= lifetime / 2, (lifetime, interval, n)
    assert audiences_needed(300, 180) == 1 and audiences_needed(3600, 180) == 11


def test_missing_socket_is_unavailable(tmp_path) -> None:
    from exporter.client import WorkloadClient

    with WorkloadClient(f"unix://{tmp_path}/absent.sock") as client:
        result = run(client, "fetch_x509_svid", timeout=1.0)
    assert result.code == "UNAVAILABLE"
    assert result.reason == "agent_unreachable", result.message
    assert result.duration < 1.0


def test_socket_nobody_listens_on_is_agent_unreachable(tmp_path) -> None:
    import socket

    from exporter.client import WorkloadClient

    path = tmp_path / "dead.sock"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()  # the file stays, as after an agent crash; connecting is refused
    with WorkloadClient(f"unix://{path}") as client:
        result = run(client, "fetch_x509_svid", timeout=1.0)
    assert (result.code, result.reason) == ("UNAVAILABLE", "agent_unreachable"), result.message


# SPIRE's own UNAVAILABLE answers (pkg/agent/endpoints, v1.15.3), each with its bounded reason.
SPIRE_UNAVAILABLE = [
    ("workload attestation failed", "workload_attestation_failed"),
    ("rate limit exceeded for /SpiffeWorkloadAPI/FetchJWTSVID", "rate_limited"),
    (
        "could not fetch JWT-SVID: rpc error: code = Unavailable desc = connection refused",
        "jwt_svid_unavailable",
    ),
    ("could not serialize response: proto: oops", "other"),
]


@pytest.mark.parametrize(("details", "expected"), SPIRE_UNAVAILABLE, ids=[r for _, r in SPIRE_UNAVAILABLE])
def test_unavailable_answers_carry_the_agents_reason(fake_agent, fake_client, details, expected) -> None:
    for rpc in METHOD_OF:
        fake_agent.reset()
        # validate_jwt_svid's token fetch fails, as on a real agent, whose limits and
        # attestation apply to FetchJWTSVID, not to ValidateJWTSVID.
        method = "FetchJWTSVID" if rpc == "validate_jwt_svid" else METHOD_OF[rpc]
        fake_agent.set(method, code=grpc.StatusCode.UNAVAILABLE, details=details)
        result = run(fake_client, rpc)
        code = "NO_TOKEN" if rpc == "validate_jwt_svid" else "UNAVAILABLE"
        assert (result.code, result.reason) == (code, expected), (rpc, result.message)
    state = ProbeStore()
    state.record(result)
    assert state.snapshot()["validate_jwt_svid"].counts[("NO_TOKEN", expected)] == 1


def test_ca_expiry_and_count_come_from_the_bundle(fake_agent, fake_client) -> None:
    second = TestCA(days=2)
    fake_agent.set(
        "FetchX509Bundles",
        answer=lambda _r: workload_pb2.X509BundlesResponse(
            bundles={"spiffe://fake.test": fake_agent.ca.der + second.der}
        ),
    )
    result = run(fake_client, "fetch_x509_bundles")
    assert result.code == "OK"
    (bundle,) = [f for f in result.facts if isinstance(f, BundleInfo)]
    assert (bundle.trust_domain, bundle.items) == ("fake.test", 2)
    # The newest CA, not the first: its notBefore and notAfter say when SPIRE owes a successor.
    assert bundle.latest_expiry == int(second.not_after.timestamp())
    assert bundle.latest_issued == int(second.cert.not_valid_before_utc.timestamp())


def test_hung_agent_never_blocks_scrapes_or_the_next_cycle(fake_agent) -> None:
    import threading

    from running import RunningExporter, fast_config

    fake_agent.set_all(never_answer=True)
    fake_agent.set("Check", never_answer=True)
    cfg = fast_config(f"unix://{fake_agent.socket_path}", **{"agent.process.enabled": False})
    with RunningExporter(cfg) as running:

        def own_threads() -> int:  # the fake server's worker pool lives in this process too
            return sum(not t.name.startswith("ThreadPoolExecutor") for t in threading.enumerate())

        time.sleep(1.0)
        threads_at_start = own_threads()
        slowest = 0.0
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            start = time.monotonic()
            running.text()
            slowest = max(slowest, time.monotonic() - start)
            time.sleep(0.1)
        s = running.scrape()
        for rpc in METHOD_OF:
            # Over 4.5 s at a 1 s interval each probe ran, hit its 0.8 s deadline and ran again;
            # validation never got the token it needs, and says so.
            code = "NO_TOKEN" if rpc == "validate_jwt_svid" else "DEADLINE_EXCEEDED"
            assert s[("spire_health_probes_total", (("code", code), ("rpc", rpc)))] >= 3
            assert s[("spire_health_probe_success", (("rpc", rpc),))] == 0
        assert slowest < 1.0, f"a scrape took {slowest:.3f} s while every probe hung"
        assert own_threads() <= threads_at_start + 1


def test_running_exporter_counts_every_malformed_kind_and_keeps_serving(fake_agent) -> None:
    from running import RunningExporter, fast_config

    cases = list(malformed_cases(fake_agent).values())
    served = {"n": 0}

    def rotate(method: str):
        own = [answer for m, answer in cases if m == method]

        def answer(request):
            served["n"] += 1
            return own[served["n"] % len(own)](request)

        return answer

    for method in ("FetchX509SVID", "FetchX509Bundles", "FetchJWTSVID", "FetchJWTBundles", "ValidateJWTSVID"):
        fake_agent.set(method, answer=rotate(method))
    cfg = fast_config(
        f"unix://{fake_agent.socket_path}", **{"agent.process.enabled": False, "watch.enabled": False}
    )
    # Every FetchJWTSVID answer is malformed here, so validation reports that it had no token;
    # its own malformed answers are counted with a good token in the tests above.
    expected = {rpc: "NO_TOKEN" if rpc == "validate_jwt_svid" else "INVALID_RESPONSE" for rpc in METHOD_OF}
    with RunningExporter(cfg) as running:
        s = running.wait_for(
            lambda s: all(
                s.get(("spire_health_probes_total", (("code", code), ("rpc", rpc))), 0) >= 3
                for rpc, code in expected.items()
            ),
            15,
            "malformed answers counted on every RPC",
        )
        assert all(s[("spire_health_probes_total", (("code", "OK"), ("rpc", rpc)))] == 0 for rpc in METHOD_OF)
        assert running.text("/healthz") == "ok\n"


def test_validate_shares_one_deadline_across_its_two_calls(fake_agent, fake_client) -> None:
    fake_agent.set("FetchJWTSVID", delay=0.3)
    fake_agent.set("ValidateJWTSVID", delay=0.3)
    start = time.monotonic()
    result = run(fake_client, "validate_jwt_svid", timeout=0.5)
    elapsed = time.monotonic() - start
    assert result.code == "DEADLINE_EXCEEDED", result.message
    assert elapsed < 0.6, f"the probe took {elapsed:.3f} s with a 0.5 s deadline"


def test_validate_without_a_token_reports_its_own_code_and_the_time_spent(fake_agent, fake_client) -> None:
    fake_agent.set("FetchJWTSVID", delay=0.05, code=grpc.StatusCode.PERMISSION_DENIED, details="no identity")
    result = run(fake_client, "validate_jwt_svid")
    assert result.code == "NO_TOKEN", result.message
    assert result.duration >= 0.05
    assert "PERMISSION_DENIED" in result.message
