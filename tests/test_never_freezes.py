"""The exporter never freezes and never goes blind: the findings of issue 9, one test each, and
the properties that keep them fixed (every failure counted, its own health exported, labels
that follow the agent's latest answer)."""

from __future__ import annotations

import datetime as dt
import threading
import time
from pathlib import Path

import grpc
import pytest
from certs import TestCA
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtensionOID
from test_cli_real import cli
from test_faults import _jwt_answer, _svid_answer, run

from exporter._proto import workload_pb2
from exporter.answers import SvidInfo
from exporter.state import ProbeResult, ProbeState


def malformed_san_leaf(ca: TestCA) -> bytes:
    """A leaf whose SAN extension does not parse: cryptography raises ValueError on reading it."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.UnrecognizedExtension(ExtensionOID.SUBJECT_ALTERNATIVE_NAME, b"\x30\x03\x86\x01"), False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


# -- finding 1: answers that used to escape the probe as exceptions -----------------------------


def test_malformed_san_is_invalid_response(fake_agent, fake_client) -> None:
    fake_agent.set("FetchX509SVID", answer=_svid_answer(fake_agent, cert=malformed_san_leaf(fake_agent.ca)))
    result = run(fake_client, "fetch_x509_svid")
    assert result.code == "INVALID_RESPONSE", result.message


@pytest.mark.parametrize(
    "exp",
    [10**400, float("inf"), float("nan"), 1e300, -(10**400)],
    ids=["1e400-int", "inf", "nan", "1e300", "-1e400"],
)
def test_absurd_jwt_exp_is_invalid_response(fake_agent, fake_client, exp) -> None:
    # json.dumps writes Infinity/NaN and json.loads reads them back: an agent could send them.
    fake_agent.set(
        "FetchJWTSVID", answer=_jwt_answer(fake_agent, lambda aud: fake_agent.jwt_token(aud, exp=exp))
    )
    result = run(fake_client, "fetch_jwt_svid")
    assert result.code == "INVALID_RESPONSE", result.message


@pytest.mark.parametrize("aud", [7, {"nested": 1}, [{"a": 1}], True])
def test_jwt_aud_of_the_wrong_type_is_invalid_response(fake_agent, fake_client, aud) -> None:
    fake_agent.set("FetchJWTSVID", answer=_jwt_answer(fake_agent, lambda _aud: fake_agent.jwt_token(aud)))
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


# -- finding 1 (whole): nothing escapes a probe; a probe that raises is still counted -----------


def test_a_probe_that_raises_is_counted_every_cycle_and_healthz_stays_honest(fake_agent, monkeypatch) -> None:
    from running import RunningExporter, fast_config

    from exporter.probes import x509_svid

    def broken(*_a, **_k):
        raise RuntimeError("a bug in the parser")

    monkeypatch.setattr(x509_svid, "x509_svids", broken)
    cfg = fast_config(
        f"unix://{fake_agent.socket_path}", **{"agent.process.enabled": False, "watch.enabled": False}
    )
    with RunningExporter(cfg) as running:
        key = ("spire_workload_api_probes_total", (("code", "EXPORTER_ERROR"), ("rpc", "fetch_x509_svid")))
        first = running.wait_for(lambda s: s.get(key, 0) >= 2, 10, "two EXPORTER_ERROR probes")
        attempt = ("spire_exporter_probe_last_attempt_timestamp_seconds", (("rpc", "fetch_x509_svid"),))
        later = running.wait_for(lambda s: s[key] >= first[key] + 2, 10, "the count to keep rising")
        assert later[attempt] > first[attempt]
        assert later[("spire_workload_api_probe_success", (("rpc", "fetch_x509_svid"),))] == 0
        assert later[("spire_workload_api_probe_success", (("rpc", "fetch_jwt_svid"),))] == 1
        # A probe that fails (even with a bug) still completes its cycle: the job is not stalled.
        assert running.text("/healthz") == "ok\n"


def test_healthz_turns_503_when_a_probe_job_stops_and_recovers(fake_agent, monkeypatch) -> None:
    import urllib.error
    import urllib.request

    from running import RunningExporter, fast_config

    from exporter.probes import jwt_bundles

    release = threading.Event()
    real = jwt_bundles.jwt_bundles

    def stuck(*args, **kwargs):
        release.wait(20)  # a probe caught in a bug, far past its deadline
        return real(*args, **kwargs)

    monkeypatch.setattr(jwt_bundles, "jwt_bundles", stuck)
    cfg = fast_config(
        f"unix://{fake_agent.socket_path}", **{"agent.process.enabled": False, "watch.enabled": False}
    )
    try:
        with RunningExporter(cfg) as running:

            def status() -> tuple[int, str]:
                try:
                    with urllib.request.urlopen(running.url + "/healthz", timeout=5) as r:
                        return r.status, r.read().decode()
                except urllib.error.HTTPError as e:
                    return e.code, e.read().decode()

            deadline = time.monotonic() + 8
            while status()[0] == 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            code, body = status()
            assert code == 503, body
            assert "fetch_jwt_bundles" in body and "fetch_x509_svid" not in body
            release.set()
            deadline = time.monotonic() + 5
            while status()[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert status() == (200, "ok\n")
    finally:
        release.set()


# -- finding 2: the watch survives anything and says whether it is up ---------------------------


def test_watch_survives_an_exception_reconnects_and_reports_it(fake_agent, monkeypatch) -> None:
    from running import RunningExporter, fast_config

    from exporter import watch

    calls = {"n": 0}
    real = watch.x509_svids

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 3:
            raise ValueError("error parsing asn1 value")  # what a malformed SAN used to raise
        return real(*args, **kwargs)

    monkeypatch.setattr(watch, "x509_svids", flaky)
    monkeypatch.setattr(watch, "MIN_BACKOFF", 0.05)
    cfg = fast_config(f"unix://{fake_agent.socket_path}", **{"agent.process.enabled": False})
    with RunningExporter(cfg) as running:
        s = running.wait_for(
            lambda s: s.get(("spire_exporter_watch_up", ()), 0) == 1, 10, "the watch to come up"
        )
        assert calls["n"] >= 4
        assert s[("spire_exporter_watch_reconnects_total", ())] >= 3
        assert s[("spire_exporter_job_errors_total", (("job", "watch"),))] >= 3
        assert running.text("/healthz") == "ok\n"


def test_watch_with_a_malformed_san_keeps_the_stream_and_the_probe_counts_it(fake_agent) -> None:
    from running import RunningExporter, fast_config

    fake_agent.set("FetchX509SVID", answer=_svid_answer(fake_agent, cert=malformed_san_leaf(fake_agent.ca)))
    cfg = fast_config(f"unix://{fake_agent.socket_path}", **{"agent.process.enabled": False})
    with RunningExporter(cfg) as running:
        key = ("spire_workload_api_probes_total", (("code", "INVALID_RESPONSE"), ("rpc", "fetch_x509_svid")))
        running.wait_for(lambda s: s.get(key, 0) >= 2, 10, "malformed SANs counted")
        fake_agent.reset()
        running.wait_for(
            lambda s: s.get(("spire_workload_api_probe_success", (("rpc", "fetch_x509_svid"),))) == 1,
            10,
            "recovery",
        )
        assert running.watch_alive()


# -- finding 3: labels follow the latest answer -------------------------------------------------


def leaf_info(spiffe_id: str, serial: str = "1") -> SvidInfo:
    return SvidInfo("x509", spiffe_id, 0, 1e10, serial)


def test_label_cap_admits_the_current_answer_not_the_first_ids_ever_seen() -> None:
    state = ProbeState(max_spiffe_ids=2)
    a, b, c = (leaf_info(f"spiffe://td/{n}") for n in "abc")
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, svids=(a, b)))
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, svids=(c,)))
    snap = state.snapshot()
    assert list(snap.svids) == [("x509", "spiffe://td/c")]
    assert snap.dropped_spiffe_ids == 0
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, svids=(a, b, c)))
    snap = state.snapshot()
    # c was exported already and stays; one more place for the first newcomer; one over.
    assert {k[1] for k in snap.svids} == {"spiffe://td/a", "spiffe://td/c"}
    assert snap.dropped_spiffe_ids == 1
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, svids=(b,)))
    assert state.snapshot().dropped_spiffe_ids == 0


def test_vanished_ids_leave_rotation_and_watch_series() -> None:
    state = ProbeState(max_spiffe_ids=2)
    state.record_watch([leaf_info("spiffe://td/a", "1")])
    state.record_watch([leaf_info("spiffe://td/a", "2")])
    assert state.snapshot().rotations == {"spiffe://td/a": 1}
    state.record_watch([leaf_info("spiffe://td/b", "9")])
    snap = state.snapshot()
    assert snap.rotations == {"spiffe://td/b": 0}
    assert list(snap.svids) == [("x509", "spiffe://td/b")]


def test_jwt_and_x509_ids_share_the_cap_and_each_kind_replaces_only_its_own() -> None:
    state = ProbeState(max_spiffe_ids=1)
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, svids=(leaf_info("spiffe://td/a"),)))
    jwt = SvidInfo("jwt", "spiffe://td/a", 0, 1e10, "j")
    state.record(ProbeResult("fetch_jwt_svid", "OK", 0.01, svids=(jwt,)))
    assert set(state.snapshot().svids) == {("x509", "spiffe://td/a"), ("jwt", "spiffe://td/a")}
    assert state.snapshot().dropped_spiffe_ids == 0


def test_trust_domains_over_the_cap_are_counted_as_the_current_number() -> None:
    from exporter.answers import BundleInfo

    state = ProbeState(max_trust_domains=2)
    bundles = tuple(BundleInfo("x509", f"td{i}", 1, 1e10) for i in range(5))
    state.record(ProbeResult("fetch_x509_bundles", "OK", 0.01, bundles=bundles))
    assert state.snapshot().dropped_trust_domains == 3
    state.record(ProbeResult("fetch_x509_bundles", "OK", 0.01, bundles=bundles[:2]))
    assert state.snapshot().dropped_trust_domains == 0


# -- finding 4: one deadline per probe ----------------------------------------------------------


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


# -- finding 5: bcrypt -------------------------------------------------------------------------


def test_password_over_72_bytes_is_a_401_not_a_dropped_connection(tmp_path) -> None:
    import base64
    import urllib.error
    import urllib.request

    import bcrypt

    from exporter import webconfig
    from exporter.state import ProbeState as State
    from exporter.web import ExporterServer

    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(4)).decode()
    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  prom: '{hashed}'\n")
    from prometheus_client import CollectorRegistry

    server = ExporterServer(
        ("127.0.0.1", 0), CollectorRegistry(), State(), security=webconfig.load(str(tmp_path / "web.yml"))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        auth = base64.b64encode(b"prom:" + b"x" * 100).decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.server_address[1]}/metrics", headers={"Authorization": f"Basic {auth}"}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 401
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("bad", ["$2b$10$short", "$2y$04$" + "!" * 53, "$2a$99$" + "a" * 53])
def test_broken_bcrypt_hash_is_a_config_error_naming_the_user(tmp_path, bad) -> None:
    from exporter import webconfig
    from exporter.config import ConfigError

    (tmp_path / "web.yml").write_text(f"basic_auth_users:\n  alice: '{bad}'\n")
    with pytest.raises(ConfigError, match=r"basic_auth_users\.alice"):
        webconfig.load(str(tmp_path / "web.yml"))


def test_check_config_loads_the_web_config_and_rejects_a_broken_hash(tmp_path) -> None:
    (tmp_path / "web.yml").write_text("basic_auth_users:\n  alice: '$2b$10$short'\n")
    (tmp_path / "exporter.yml").write_text(
        f"workload_api: {{socket: unix:///tmp/x.sock}}\nweb: {{config_file: {tmp_path / 'web.yml'}}}\n"
    )
    done = cli("check-config", str(tmp_path / "exporter.yml"), env={})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "basic_auth_users.alice" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


# -- finding 6: check-config sees SPIFFE_ENDPOINT_SOCKET ---------------------------------------


def test_check_config_honours_spiffe_endpoint_socket(tmp_path) -> None:
    (tmp_path / "exporter.yml").write_text("probes: {interval: 30s}\n")
    done = cli(
        "check-config", str(tmp_path / "exporter.yml"), env={"SPIFFE_ENDPOINT_SOCKET": "unix:///run/a.sock"}
    )
    assert done.returncode == 0, done.stderr
    done = cli("check-config", str(tmp_path / "exporter.yml"), env={})
    assert done.returncode == 2 and "workload_api.socket" in done.stderr


# -- finding 7: a cached agent process is checked for PID reuse --------------------------------


def fake_proc(root: Path, pid: int, name: str, start_ticks: int) -> None:
    """The few /proc files psutil reads to name a process and tell when it started."""
    (root / str(pid)).mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text("cpu 0 0 0 0 0 0 0 0 0 0\nbtime 1700000000\n")
    fields = ["S", "1", "1", "1", "0", "-1", "0"] + ["0"] * 12 + [str(start_ticks)] + ["0"] * 30
    (root / str(pid) / "stat").write_text(f"{pid} ({name}) " + " ".join(fields) + "\n")
    (root / str(pid) / "comm").write_text(name + "\n")
    (root / str(pid) / "cmdline").write_text(f"/opt/{name}\0run\0")
    (root / str(pid) / "status").write_text(f"Name:\t{name}\nState:\tS (sleeping)\n")


def test_cached_agent_process_is_not_trusted_after_pid_reuse(tmp_path) -> None:
    import psutil

    from exporter.agent_process import ProcessFinder

    saved = psutil.PROCFS_PATH
    try:
        (tmp_path / "pid").write_text("4242\n")
        fake_proc(tmp_path / "proc", 4242, "spire-agent", 1000)
        finder = ProcessFinder(
            "spire-agent", pid_file=str(tmp_path / "pid"), proc_root=str(tmp_path / "proc")
        )
        first = finder.find()
        assert first is not None and first.pid == 4242
        # The agent exits; its PID is handed to another process that started later.
        fake_proc(tmp_path / "proc", 4242, "impostor", 5000)
        (tmp_path / "pid").write_text("")
        assert finder.find() is None
        # The pid file names the new agent: it is found again, with its own start time.
        fake_proc(tmp_path / "proc", 4343, "spire-agent", 6000)
        (tmp_path / "pid").write_text("4343\n")
        again = finder.find()
        assert again is not None and again.pid == 4343
    finally:
        psutil.PROCFS_PATH = saved


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
