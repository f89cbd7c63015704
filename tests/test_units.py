"""State, collector, scheduler, web and answer parsing, without any agent."""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import urllib.error
import urllib.request

import pytest
from conftest import render, state_registry
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import answers
from exporter.answers import SvidInfo
from exporter.result import ProbeResult
from exporter.scheduler import Job, Scheduler
from exporter.store import State
from exporter.store.probes import INITIAL_CODES
from exporter.web import ExporterServer
from harness.certs import TestCA, make_jwt


def render_state(state: State) -> dict:
    return render(state_registry(state))


def test_registered_rpc_shows_every_initial_code_at_zero() -> None:
    state = State()
    state.probes.register("fetch_x509_svid", ("EXTRA",))
    samples = render_state(state)
    for code in (*INITIAL_CODES, "EXTRA"):
        key = ("spire_health_probes_total", (("code", code), ("rpc", "fetch_x509_svid")))
        assert samples[key] == 0
    assert ("spire_health_probe_success", (("rpc", "fetch_x509_svid"),)) not in samples


def test_histogram_counts_only_successes_into_the_right_buckets() -> None:
    state = State()
    for duration, code in [(0.0004, "OK"), (0.003, "OK"), (0.2, "OK"), (5.0, "DEADLINE_EXCEEDED")]:
        state.record(ProbeResult("fetch_jwt_svid", code, duration))
    s = render_state(state)

    def bucket(le: str) -> float:
        return s[("spire_health_probe_duration_seconds_bucket", (("le", le), ("rpc", "fetch_jwt_svid")))]

    assert bucket("0.001") == 1 and bucket("0.005") == 2 and bucket("0.1") == 2 and bucket("0.5") == 3
    assert bucket("+Inf") == 3
    assert s[("spire_health_probe_duration_seconds_count", (("rpc", "fetch_jwt_svid"),))] == 3
    assert s[("spire_health_probe_success", (("rpc", "fetch_jwt_svid"),))] == 0


def test_spiffe_id_labels_are_capped() -> None:
    state = State(max_spiffe_ids=2)
    svids = tuple(SvidInfo("x509", f"spiffe://td/w{i}", 0, 1e10, str(i)) for i in range(5))
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, facts=svids))
    snap = state.identities.snapshot()
    assert len({k[1] for k in snap.svids}) == 2
    assert snap.dropped_spiffe_ids == 3
    assert render_state(state)[("spire_health_spiffe_ids_over_limit", ())] == 3


def test_svid_dropped_by_the_agent_disappears() -> None:
    state = State()
    a, b = (SvidInfo("x509", f"spiffe://td/{n}", 0, 1e10, n) for n in "ab")
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, facts=(a, b)))
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, facts=(a,)))
    assert list(state.identities.snapshot().svids) == [("x509", "spiffe://td/a")]


def test_rotation_counted_on_new_serial_only() -> None:
    state = State()
    first = SvidInfo("x509", "spiffe://td/a", 0, 1e10, "1")
    assert state.identities.record_watch([first]) == []
    assert state.identities.record_watch([first]) == []
    assert state.identities.record_watch([SvidInfo("x509", "spiffe://td/a", 0, 1e10, "2")]) == [
        "spiffe://td/a"
    ]
    assert state.identities.snapshot().rotations == {"spiffe://td/a": 1}


def test_one_log_line_per_state_change(caplog) -> None:
    state = State()
    caplog.set_level(logging.INFO)
    codes = [
        "OK",
        "OK",
        "DEADLINE_EXCEEDED",
        "DEADLINE_EXCEEDED",
        "DEADLINE_EXCEEDED",
        "UNAVAILABLE",
        "OK",
        "OK",
    ]
    for code in codes:
        state.record(ProbeResult("fetch_x509_svid", code, 0.01, message="boom"))
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["probe failing", "probe failing", "probe recovered"]
    assert [r.fields.get("code") for r in caplog.records[:2]] == ["DEADLINE_EXCEEDED", "UNAVAILABLE"]


def test_scheduler_spreads_jobs_and_skips_missed_ticks() -> None:
    starts: dict[str, list[float]] = {}
    t0 = time.monotonic()

    def job(name: str, sleep: float = 0.0):
        def run() -> None:
            starts.setdefault(name, []).append(time.monotonic() - t0)
            time.sleep(sleep)

        return run

    def broken() -> None:
        raise KeyError("a bug")

    jobs = [Job(f"j{i}", 1.0, job(f"j{i}")) for i in range(4)] + [
        Job("slow", 1.0, job("slow", sleep=2.5)),
        Job("broken", 1.0, broken),
    ]
    state = State()
    for j in jobs:
        state.own.register_job(j.name, 2.0)
    scheduler = Scheduler(jobs, state.own)
    scheduler.start()
    time.sleep(4.2)
    # A job that raises keeps its schedule, counts each error, and never completes a cycle.
    assert state.own.stalled_jobs() == ["broken"]
    scheduler.stop()
    assert state.own.snapshot().job_errors["broken"] >= 4
    assert state.own.snapshot().job_errors["j0"] == 0
    quiet = State()
    quiet.own.register_job("probe", 1.0, errors_at_zero=False)
    assert "probe" not in quiet.own.snapshot().job_errors
    quiet.own.job_failed("probe")
    assert quiet.own.snapshot().job_errors["probe"] == 1
    firsts = sorted(starts[f"j{i}"][0] for i in range(4))
    gaps = [b - a for a, b in itertools.pairwise(firsts)]
    assert all(0.15 <= g <= 0.25 for g in gaps), firsts  # 1 s spread over six jobs
    assert len(starts["j0"]) >= 4
    slow = starts["slow"]
    assert len(slow) == 2 and slow[1] - slow[0] >= 2.9  # the missed ticks are skipped, not run in a burst


def test_http_routes_and_methods() -> None:
    state = State()
    state.probes.register("fetch_x509_svid")
    registry = state_registry(state)
    server = ExporterServer(("127.0.0.1", 0), registry, state, "/custom-metrics")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(base + "/custom-metrics", timeout=5) as r:
            assert r.status == 200 and b"spire_health_probes_total" in r.read()
            assert r.headers["Content-Type"].startswith("text/plain")
        with urllib.request.urlopen(base + "/", timeout=5) as r:
            assert b"fetch_x509_svid" in r.read()
        for path, status in (("/metrics", 404), ("/nope", 404)):
            with pytest.raises(urllib.error.HTTPError) as raised:
                urllib.request.urlopen(base + path, timeout=5)
            assert raised.value.code == status
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(
                urllib.request.Request(base + "/custom-metrics", method="POST", data=b"x"), timeout=5
            )
        assert raised.value.code == 405
        req = urllib.request.Request(
            base + "/custom-metrics", headers={"Accept": "application/openmetrics-text"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    finally:
        server.shutdown()
        server.server_close()


# -- answer parsing ---------------------------------------------------------------------------


def test_split_der_reads_long_form_lengths() -> None:
    ca, other = TestCA(), TestCA()
    assert answers.split_der(ca.der + other.der) == [ca.der, other.der]


def test_jwt_claims_round_trip() -> None:
    token = make_jwt({"sub": "spiffe://td/a", "aud": ["x"], "exp": 2e9, "iat": 1e9})
    info = answers.jwt_svid("spiffe://td/a", token, ["x"], now=1.5e9)
    assert (info.expiry, info.issued, info.serial) == (2e9, 1e9, "iat:1000000000")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_der_parsing_never_raises_anything_but_malformed(blob: bytes) -> None:
    with contextlib.suppress(answers.MalformedAnswer):
        answers.load_certificates(blob)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_jwt_parsing_never_raises_anything_but_malformed(token: str) -> None:
    with contextlib.suppress(answers.MalformedAnswer):
        answers.jwt_svid("spiffe://td/a", token, ["x"], now=0)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=30), st.binary(max_size=200), max_size=4))
def test_bundle_parsing_never_raises_anything_but_malformed(bundles: dict[str, bytes]) -> None:
    for parse in (answers.jwt_bundles, answers.x509_bundles):
        with contextlib.suppress(answers.MalformedAnswer):
            parse(bundles)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c) | st.dictionaries(st.text(max_size=5), c),
        max_leaves=10,
    )
)
def test_jwks_shapes_never_raise_anything_but_malformed(doc) -> None:
    import json

    with contextlib.suppress(answers.MalformedAnswer):
        answers.jwt_bundles({"spiffe://td": json.dumps(doc).encode()})


def test_metrics_are_rendered_again_only_after_a_change() -> None:
    state = State()
    state.probes.register("fetch_x509_svid")
    registry = state_registry(state)
    server = ExporterServer(("127.0.0.1", 0), registry, state)
    try:
        first, _ = server.exposition("")
        assert server.exposition("")[0] is first
        state.record(ProbeResult("fetch_x509_svid", "OK", 0.01))
        changed, _ = server.exposition("")
        assert changed is not first and b'code="OK",rpc="fetch_x509_svid"} 1.0' in changed
        open_metrics, content_type = server.exposition("application/openmetrics-text")
        assert content_type.startswith("application/openmetrics-text") and open_metrics.endswith(b"# EOF\n")
    finally:
        server.server_close()


def test_buckets_end_at_the_largest_configured_deadline() -> None:
    from exporter import config
    from exporter.app import Exporter

    for timeout, top in (("5s", 5.0), ("800ms", 0.8), ("30s", 30.0)):
        cfg = config.build(
            {
                "workload_api": {"socket": "unix:///tmp/unused.sock"},
                "probes": {"interval": "60s", "timeout": "500ms", "fetch_jwt_bundles": {"timeout": timeout}},
                "web": {"listen_address": "127.0.0.1:0"},
            },
            environ={},
        )
        exporter = Exporter(cfg)
        try:
            s = render_state(exporter.state)
        finally:
            exporter.client.close()
        bounds = sorted(
            float(dict(labels)["le"])
            for (name, labels) in s
            if name == "spire_health_probe_duration_seconds_bucket"
            and dict(labels)["rpc"] == "fetch_x509_svid"
        )
        assert bounds[-2:] == [top, float("inf")], (timeout, bounds)
        assert all(b < top for b in bounds[:-2])
        # Each probe's own deadline is exported beside it, so "2.8 s of 5 s" can be said.
        assert s[("spire_health_probe_timeout_seconds", (("rpc", "fetch_jwt_bundles"),))] == top
        assert s[("spire_health_probe_timeout_seconds", (("rpc", "fetch_x509_svid"),))] == 0.5


def test_failed_probe_durations_and_attempt_times_are_exported() -> None:
    state = State()
    state.probes.register("fetch_x509_svid", (), 5.0, 15.0)
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.004, finished_at=1000.0))
    state.record(ProbeResult("fetch_x509_svid", "DEADLINE_EXCEEDED", 5.0, finished_at=1010.0))
    s = render_state(state)
    rpc = (("rpc", "fetch_x509_svid"),)
    assert s[("spire_health_probe_last_duration_seconds", rpc)] == 5.0
    assert s[("spire_health_probe_last_attempt_timestamp_seconds", rpc)] == 1010.0
    # With the interval beside it, a rule can tell a stuck probe loop from a slow schedule.
    assert s[("spire_health_probe_interval_seconds", rpc)] == 15.0
    assert s[("spire_health_probe_last_success_timestamp_seconds", rpc)] == 1000.0
    assert s[("spire_health_probe_duration_seconds_count", rpc)] == 1  # failures stay out


def test_the_version_has_one_source() -> None:
    from importlib.metadata import version
    from pathlib import Path

    import yaml

    from exporter import __version__

    assert version("spire-health-exporter") == __version__
    chart = yaml.safe_load(
        (Path(__file__).parent.parent / "deploy/helm/spire-health-exporter/Chart.yaml").read_text()
    )
    assert chart["appVersion"] == __version__
