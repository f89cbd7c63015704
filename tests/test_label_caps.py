"""The label caps: at most max_spiffe_ids SPIFFE IDs and max_trust_domains trust domains, always
those of the agent's latest answers, and what is over the cap counted as it is now."""

from __future__ import annotations

from exporter.answers import BundleInfo, SvidInfo
from exporter.result import ProbeResult
from exporter.store import State


def leaf_info(spiffe_id: str, serial: str = "1") -> SvidInfo:
    return SvidInfo("x509", spiffe_id, 0, 1e10, serial)


def test_label_cap_admits_the_current_answer_not_the_first_ids_ever_seen() -> None:
    state = State(max_spiffe_ids=2)
    a, b, c = (leaf_info(f"spiffe://td/{n}") for n in "abc")
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, facts=(a, b)))
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, facts=(c,)))
    snap = state.identities.snapshot()
    assert list(snap.svids) == [("x509", "spiffe://td/c")]
    assert snap.dropped_spiffe_ids == 0
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, facts=(a, b, c)))
    snap = state.identities.snapshot()
    # c was exported already and stays; one more place for the first newcomer; one over.
    assert {k[1] for k in snap.svids} == {"spiffe://td/a", "spiffe://td/c"}
    assert snap.dropped_spiffe_ids == 1
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, facts=(b,)))
    assert state.identities.snapshot().dropped_spiffe_ids == 0


def test_vanished_ids_leave_rotation_and_watch_series() -> None:
    state = State(max_spiffe_ids=2)
    state.identities.record_watch([leaf_info("spiffe://td/a", "1")])
    state.identities.record_watch([leaf_info("spiffe://td/a", "2")])
    assert state.identities.snapshot().rotations == {"spiffe://td/a": 1}
    state.identities.record_watch([leaf_info("spiffe://td/b", "9")])
    snap = state.identities.snapshot()
    assert snap.rotations == {"spiffe://td/b": 0}
    assert list(snap.svids) == [("x509", "spiffe://td/b")]


def test_jwt_and_x509_ids_share_the_cap_and_each_kind_replaces_only_its_own() -> None:
    state = State(max_spiffe_ids=1)
    state.record(ProbeResult("fetch_x509_svid", "OK", 0.01, facts=(leaf_info("spiffe://td/a"),)))
    jwt = SvidInfo("jwt", "spiffe://td/a", 0, 1e10, "j")
    state.record(ProbeResult("fetch_jwt_svid", "OK", 0.01, facts=(jwt,)))
    assert set(state.identities.snapshot().svids) == {("x509", "spiffe://td/a"), ("jwt", "spiffe://td/a")}
    assert state.identities.snapshot().dropped_spiffe_ids == 0


def test_trust_domains_over_the_cap_are_counted_as_the_current_number() -> None:
    state = State(max_trust_domains=2)
    bundles = tuple(BundleInfo("x509", f"td{i}", 1, 1e10, 1e9) for i in range(5))
    state.record(ProbeResult("fetch_x509_bundles", "OK", 0.01, facts=bundles))
    assert state.identities.snapshot().dropped_trust_domains == 3
    state.record(ProbeResult("fetch_x509_bundles", "OK", 0.01, facts=bundles[:2]))
    assert state.identities.snapshot().dropped_trust_domains == 0
