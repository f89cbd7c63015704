"""The exporter's own health: a probe that raises is counted every cycle, /healthz turns 503 when a
job or the rotation watch stops completing cycles (its figures would be frozen), and the watch
survives whatever a stream throws at it."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request

from running import RunningExporter, fast_config

from harness.certs import malformed_san_leaf
from harness.fake_agent import svid_answer


def healthz(running: RunningExporter) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(running.url + "/healthz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_a_probe_that_raises_is_counted_every_cycle_and_healthz_stays_honest(fake_agent, monkeypatch) -> None:
    from exporter.probes import x509_svid

    def broken(*_a, **_k):
        raise RuntimeError("a bug in the parser")

    monkeypatch.setattr(x509_svid, "x509_svids", broken)
    cfg = fast_config(
        f"unix://{fake_agent.socket_path}", **{"agent.process.enabled": False, "watch.enabled": False}
    )
    with RunningExporter(cfg) as running:
        key = ("spire_health_probes_total", (("code", "EXPORTER_ERROR"), ("rpc", "fetch_x509_svid")))
        first = running.wait_for(lambda s: s.get(key, 0) >= 2, 10, "two EXPORTER_ERROR probes")
        attempt = ("spire_health_probe_last_attempt_timestamp_seconds", (("rpc", "fetch_x509_svid"),))
        later = running.wait_for(lambda s: s[key] >= first[key] + 2, 10, "the count to keep rising")
        assert later[attempt] > first[attempt]
        assert later[("spire_health_probe_success", (("rpc", "fetch_x509_svid"),))] == 0
        assert later[("spire_health_probe_success", (("rpc", "fetch_jwt_svid"),))] == 1
        # A probe that fails (even with a bug) still completes its cycle: the job is not stalled.
        assert running.text("/healthz") == "ok\n"


def test_healthz_turns_503_when_a_probe_job_stops_and_recovers(fake_agent, monkeypatch) -> None:
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
                return healthz(running)

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


def test_watch_survives_an_exception_reconnects_and_reports_it(fake_agent, monkeypatch) -> None:
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
            lambda s: s.get(("spire_health_watch_up", ()), 0) == 1, 10, "the watch to come up"
        )
        assert calls["n"] >= 4
        assert s[("spire_health_watch_reconnects_total", ())] >= 3
        assert s[("spire_health_job_errors_total", (("job", "watch"),))] >= 3
        assert running.text("/healthz") == "ok\n"


def test_watch_with_a_malformed_san_keeps_the_stream_and_the_probe_counts_it(fake_agent) -> None:
    fake_agent.set("FetchX509SVID", answer=svid_answer(fake_agent, cert=malformed_san_leaf(fake_agent.ca)))
    cfg = fast_config(f"unix://{fake_agent.socket_path}", **{"agent.process.enabled": False})
    with RunningExporter(cfg) as running:
        key = ("spire_health_probes_total", (("code", "INVALID_RESPONSE"), ("rpc", "fetch_x509_svid")))
        running.wait_for(lambda s: s.get(key, 0) >= 2, 10, "malformed SANs counted")
        fake_agent.reset()
        running.wait_for(
            lambda s: s.get(("spire_health_probe_success", (("rpc", "fetch_x509_svid"),))) == 1,
            10,
            "recovery",
        )
        # The watch kept its stream through the malformed updates: up, and never reconnected.
        s = running.wait_for(lambda s: s.get(("spire_health_watch_up", ())) == 1, 10, "the watch up")
        assert s[("spire_health_watch_reconnects_total", ())] == 0
        assert healthz(running) == (200, "ok\n")


def test_healthz_turns_503_when_the_rotation_watch_stalls_and_recovers(fake_agent, monkeypatch) -> None:
    """A watch stuck in handling an answer stops completing cycles: after one stream's life and
    its backoff, /healthz names it, and it clears once the watch moves again."""
    from exporter import watch

    release = threading.Event()
    real = watch.x509_svids

    def stuck(*args, **kwargs):
        release.wait(30)  # a bug that hangs the watch thread, far past any deadline
        return real(*args, **kwargs)

    monkeypatch.setattr(watch, "x509_svids", stuck)
    monkeypatch.setattr(watch, "MAX_BACKOFF", 0.5)  # the quiet limit: max_stream_age + 2 x 0.5 s
    cfg = fast_config(
        f"unix://{fake_agent.socket_path}", **{"agent.process.enabled": False, "watch.max_stream_age": "2s"}
    )
    try:
        with RunningExporter(cfg) as running:
            time.sleep(1.0)
            assert healthz(running) == (200, "ok\n")  # not yet past its allowance
            deadline = time.monotonic() + 10
            while healthz(running)[0] == 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            code, body = healthz(running)
            assert code == 503 and "watch" in body, body
            assert "fetch_x509_svid" not in body  # the probes kept their schedule
            release.set()
            deadline = time.monotonic() + 10
            while healthz(running)[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert healthz(running) == (200, "ok\n")
    finally:
        release.set()
