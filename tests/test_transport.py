"""The connection, not the answer: a slow handshake, a stalled stream, SVIDs from a clock ahead of
ours, and an agent that re-sends SVIDs as fast as it can. Each of these once showed the agent's
state wrongly; each test here failed on the exporter before its fix."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from conftest import run
from running import RunningExporter, fast_config

from exporter.client import WorkloadClient
from harness.fake_agent import svid_answer
from harness.socket_proxy import SocketProxy


def test_slow_handshake_is_latency_not_an_unreachable_agent(spire, tmp_path: Path) -> None:
    # A starved agent completes the HTTP/2 handshake late. The probe's deadline covers it: a
    # handshake of 1.5 s under a 5 s deadline is 1.5 s of latency (it was UNAVAILABLE after
    # 200 ms, the reconnect backoff grpc also takes as the connect timeout).
    proxy = SocketProxy(str(tmp_path / "slow.sock"), spire.agent_socket, handshake_delay=1.5).start()
    try:
        with WorkloadClient(f"unix://{tmp_path}/slow.sock", connect_timeout=5.0) as client:
            result = run(client, "fetch_x509_svid", timeout=5.0)
            assert result.code == "OK", (result.code, result.message)
            assert result.duration >= 1.5
            again = run(client, "fetch_x509_svid", timeout=5.0)
            assert again.code == "OK" and again.duration < 1.0  # the connection is kept
    finally:
        proxy.stop()


def test_handshake_past_the_deadline_is_deadline_exceeded_in_the_running_exporter(
    spire, tmp_path: Path
) -> None:
    # Wired as it runs: the exporter's channel takes its connect timeout from the probes' deadline.
    proxy = SocketProxy(str(tmp_path / "slow.sock"), spire.agent_socket, handshake_delay=1.5).start()
    cfg = fast_config(
        f"unix://{tmp_path}/slow.sock",
        **{"probes.interval": "4s", "probes.timeout": "3s", "agent.process.enabled": False},
    )
    try:
        with RunningExporter(cfg) as running:
            s = running.wait_for(
                lambda s: s.get(("spire_health_probe_success", (("rpc", "fetch_x509_svid"),))) == 1,
                10,
                "the X.509 probe to succeed over a 1.5 s handshake",
            )
            unavailable = [k for k, v in s.items() if "UNAVAILABLE" in str(k) and v > 0]
            assert not unavailable, unavailable
    finally:
        proxy.stop()


def test_hung_handshake_is_cut_at_the_deadline(spire, tmp_path: Path) -> None:
    proxy = SocketProxy(str(tmp_path / "hung.sock"), spire.agent_socket, handshake_delay=20.0).start()
    try:
        with WorkloadClient(f"unix://{tmp_path}/hung.sock", connect_timeout=2.0) as client:
            result = run(client, "fetch_x509_svid", timeout=2.0)
            assert result.code == "DEADLINE_EXCEEDED", (result.code, result.message)
            assert 1.9 <= result.duration < 3.0
    finally:
        proxy.stop()


def test_stalled_watch_stream_is_found_by_keepalive(fake_agent, tmp_path: Path) -> None:
    # After its first message a stalled stream looks like a quiet one. Keepalive pings (here
    # every second; 5 minutes by default, the least a grpc-go agent accepts) find it dead.
    proxy = SocketProxy(str(tmp_path / "proxy.sock"), fake_agent.socket_path).start()
    cfg = fast_config(
        f"unix://{tmp_path}/proxy.sock",
        **{"watch.keepalive": "1s", "agent.process.enabled": False},
    )
    try:
        with RunningExporter(cfg) as running:
            running.wait_for(lambda s: s.get(("spire_health_watch_up", ())) == 1, 10, "the watch")
            proxy.stall()
            stalled = time.monotonic()
            running.wait_for(
                lambda s: s.get(("spire_health_watch_up", ())) == 0, 10, "the stalled watch to be down"
            )
            found_after = time.monotonic() - stalled
            proxy.resume()
            s = running.wait_for(
                lambda s: s.get(("spire_health_watch_up", ())) == 1, 15, "the watch to come back"
            )
            assert s[("spire_health_watch_reconnects_total", ())] >= 1
        # One ping interval plus its one-second timeout, and a scrape's margin.
        assert found_after < 5, f"a stalled stream was found after {found_after:.1f} s"
    finally:
        proxy.stop()


def test_svid_not_yet_valid_beyond_the_skew_tolerance_is_unusable(fake_agent, fake_client) -> None:
    def ahead(seconds: float):
        def answer(req: object):
            leaf, _, _ = fake_agent.ca.leaf(fake_agent.spiffe_id, not_before_ago=-seconds)
            return svid_answer(fake_agent, cert=leaf)(req)

        return answer

    fake_agent.set("FetchX509SVID", answer=ahead(3600))
    result = run(fake_client, "fetch_x509_svid")
    assert result.code == "INVALID_RESPONSE"
    assert re.search(r"not valid for another 3(599|600)s", result.message), result.message
    fake_agent.set("FetchX509SVID", answer=ahead(30))  # within the stated 60 s
    assert run(fake_client, "fetch_x509_svid").code == "OK"


def test_jwt_issued_in_the_future_is_unusable(fake_agent, fake_client) -> None:
    from harness.fake_agent import jwt_answer

    later = int(time.time()) + 3600
    fake_agent.set(
        "FetchJWTSVID",
        answer=jwt_answer(fake_agent, lambda aud: fake_agent.jwt_token(aud, iat=later, exp=later + 300)),
    )
    result = run(fake_client, "fetch_jwt_svid")
    assert (result.code, "not valid for another" in result.message) == ("INVALID_RESPONSE", True)


def test_rotation_storm_logs_a_bounded_number_of_lines(fake_agent, caplog) -> None:
    # The fake re-sends a fresh SVID every 10 ms on the watch stream: about 300 rotations in 3 s.
    fake_agent.set("FetchX509SVID", resend_every=0.01)
    cfg = fast_config(f"unix://{fake_agent.socket_path}", **{"agent.process.enabled": False})
    with caplog.at_level(logging.INFO, logger="exporter.watch"), RunningExporter(cfg) as running:
        time.sleep(3.0)
        rotations = sum(
            v
            for (name, _), v in running.scrape().items()
            if name.startswith("spire_health_x509_svid_rotations")
        )
    lines = [r for r in caplog.records if r.name == "exporter.watch"]
    assert rotations > 100, rotations
    assert len(lines) <= 11, f"{len(lines)} lines for {rotations:.0f} rotations"


def test_log_budget_says_how_many_lines_it_left_out(caplog) -> None:
    from exporter.logs import LogBudget

    now = [0.0]
    budget = LogBudget(burst=2, every=10.0, clock=lambda: now[0])
    logger = logging.getLogger("test.budget")
    with caplog.at_level(logging.INFO, logger="test.budget"):
        for _ in range(5):
            budget.event(logger, logging.INFO, "rotated")
        now[0] = 10.0
        budget.event(logger, logging.INFO, "rotated")
        budget.event(logger, logging.INFO, "other")  # each event name has its own budget
    fields = [getattr(r, "fields", {}) for r in caplog.records]
    assert [r.getMessage() for r in caplog.records] == ["rotated", "rotated", "rotated", "other"]
    assert fields[2] == {"suppressed": 3} and fields[3] == {}
