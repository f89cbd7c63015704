"""The state and its collectors: counts and latency per probe, identities, transitions logged once."""

from __future__ import annotations

import logging
import time

from conftest import render, state_registry

from exporter.answers import BundleInfo, SvidInfo
from exporter.result import ProbeResult
from exporter.store import State
from exporter.store.probes import INITIAL_CODES, LATENCY_BUCKETS


def render_state(state: State) -> dict:
    return render(state_registry(state))


def test_registered_rpc_shows_only_the_initial_codes_at_zero() -> None:
    state = State()
    state.probes.register("fetch_x509_svid")
    samples = render_state(state)
    counts = {
        dict(labels)["code"]: value
        for (name, labels), value in samples.items()
        if name == "spire_health_probes_total"
    }
    # Every other code costs a series only once it happens: across a fleet the zeros add up.
    assert counts == dict.fromkeys(INITIAL_CODES, 0)
    assert ("spire_health_probe_success", (("rpc", "fetch_x509_svid"),)) not in samples


def test_the_health_check_has_no_latency_histogram() -> None:
    state = State()
    for rpc in ("health_check", "fetch_x509_svid"):
        state.probes.register(rpc)
        state.record(ProbeResult(rpc, "OK", 0.004))
    counted = {
        dict(labels)["rpc"]
        for (name, labels) in render_state(state)
        if name == "spire_health_probe_duration_seconds_count"
    }
    assert counted == {"fetch_x509_svid"}


def test_histogram_counts_only_successes_into_the_right_buckets() -> None:
    state = State()
    for duration, code in [(0.004, "OK"), (0.03, "OK"), (0.2, "OK"), (5.0, "DEADLINE_EXCEEDED")]:
        state.record(ProbeResult("fetch_jwt_svid", code, duration))
    s = render_state(state)

    def bucket(le: str) -> float:
        return s[("spire_health_probe_duration_seconds_bucket", (("le", le), ("rpc", "fetch_jwt_svid")))]

    assert bucket("0.01") == 1 and bucket("0.1") == 2 and bucket("0.5") == 3 and bucket("2.5") == 3
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
        assert bounds[-1] == float("inf")
        assert bounds[:-1] == [b for b in LATENCY_BUCKETS if b < top], (timeout, bounds)


def test_failed_probe_durations_and_attempt_times_are_exported() -> None:
    state = State()
    state.probes.register("fetch_x509_svid")
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.004, finished_at=1000.0))
    state.record(ProbeResult("fetch_x509_svid", "DEADLINE_EXCEEDED", 5.0, finished_at=1010.0))
    s = render_state(state)
    rpc = (("rpc", "fetch_x509_svid"),)
    assert s[("spire_health_probe_last_attempt_timestamp_seconds", rpc)] == 1010.0
    assert s[("spire_health_probe_success", rpc)] == 0
    assert s[("spire_health_probe_duration_seconds_count", rpc)] == 1  # failures stay out


def test_federated_bundles_are_those_of_other_trust_domains_and_their_changes_are_timed() -> None:
    from exporter.store.identities import IdentityStore

    store = IdentityStore()
    own = BundleInfo("x509", "example.org", 1, 2e9, 1e9)
    fed = BundleInfo("x509", "fed.test", 1, 2e9, 1e9)
    store.take([own, fed])
    assert store.snapshot().federated_changed == {}, "unknown until an SVID names the own trust domain"
    store.take([SvidInfo("x509", "spiffe://example.org/probe", 1, 2e9, "1")])
    first = store.snapshot().federated_changed
    assert set(first) == {"fed.test"}
    store.take([own, fed])  # the same bundle again: no change
    assert store.snapshot().federated_changed == first
    time.sleep(0.01)
    store.take([own, BundleInfo("x509", "fed.test", 2, 2.1e9, 1.1e9)])  # its successor CA arrived
    assert store.snapshot().federated_changed["fed.test"] > first["fed.test"]
