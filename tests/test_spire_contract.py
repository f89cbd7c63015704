"""The real-agent contract: what one SPIRE release answers and emits, for every RPC the exporter
calls, every failure it classifies, and every SPIRE series a shipped rule or panel reads.

Each test records what it saw under a behaviour's name. `scripts/matrix` runs this module on every
release in SPIRE_MATRIX (versions.env) and writes docs/compatibility.md from the records. In the
suite it runs on the default release, and the last test fails if what it saw differs from that
release's committed record (tests/testdata/compatibility/<version>.json): a new SPIRE that
changes a behaviour shows up as a failing test, not as a stale table.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    ROOT,
    WORKLOAD_RPCS,
    metric_source,
    require,
    run,
    spire_names_emitted,
    spire_names_read,
    started_spire,
)
from running import RunningExporter, parse

from exporter import config
from exporter.client import WorkloadClient
from harness.compatibility import RECORDS, Record
from harness.local_spire import UNIX_ATTESTOR, LocalSpire, find_spire_bin_dir, free_port, wait_until
from harness.pod_cgroup import run_as_pod
from harness.versions import spire_binary_version

SEEN: Record = {}
RATE_LIMIT_COUNTER = "spire_agent_workload_api_rate_limit_exceeded"
EVERY_RPC = [*WORKLOAD_RPCS, "health_check"]


@pytest.fixture(scope="module")
def release() -> Iterator[LocalSpire]:
    local = started_spire()
    yield local
    local.stop()


def test_every_rpc_with_an_entry_answers_ok(release: LocalSpire) -> None:
    with WorkloadClient(f"unix://{release.agent_socket}") as client:
        outcomes = {rpc: run(client, rpc, timeout=5.0).outcome for rpc in EVERY_RPC}
    SEEN["every RPC, with an entry"] = _summary(outcomes)
    assert set(outcomes.values()) == {"OK"}, outcomes


def test_no_entry_is_permission_denied(release: LocalSpire) -> None:
    assert release.entry_id
    release.delete_entry(release.entry_id)
    try:
        with WorkloadClient(f"unix://{release.agent_socket}") as client:
            # The agent drops the entry at its next sync (every 5 s).
            for _ in range(60):
                if not run(client, "fetch_x509_svid", timeout=2.0).ok:
                    break
                time.sleep(0.5)
            outcomes = {rpc: run(client, rpc, timeout=5.0).outcome for rpc in EVERY_RPC}
    finally:
        release.entry_id = release.create_entry()
        release.wait_for_svid()
    SEEN["no registration entry for the caller"] = _summary(outcomes)
    assert outcomes["fetch_x509_svid"] == "PERMISSION_DENIED", outcomes
    assert outcomes["health_check"] == "OK", outcomes


def test_every_spire_name_a_rule_or_panel_reads_is_emitted(release: LocalSpire) -> None:
    # Some series exist only once their event happened: a rotation (an SVID of 10 s renews
    # within seconds) for the cache manager's expiring-SVID count.
    short = release.create_entry(spiffe_id=f"spiffe://{release.trust_domain}/short", x509_ttl=10)
    try:
        with WorkloadClient(f"unix://{release.agent_socket}") as client:
            for rpc in WORKLOAD_RPCS:
                run(client, rpc, timeout=5.0)
        wanted = {n.removesuffix("_sum").removesuffix("_count") for n in spire_names_read() if "agent" in n}
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: wanted <= _names(release.telemetry_port), 30, "the agent's series")
    finally:
        release.delete_entry(short)
    scraped = {
        "agent": _names(release.telemetry_port),
        "server": _names(release.server_telemetry_port),
    }
    missing = []
    for name in sorted(spire_names_emitted("events_cache", "federation")):
        family = name.removesuffix("_sum").removesuffix("_count")
        present = family in scraped[metric_source(name)]
        SEEN[f"emits {name}"] = "yes" if present else "no"
        if not present:
            missing.append(name)
    # The names SPIRE renamed or added after v1.13.3, recorded whether or not a rule reads them.
    for name in ("spire_agent_bootstraped", "spire_agent_bootstrapped"):
        SEEN[f"emits {name}"] = "yes" if name in scraped["agent"] else "no"
    assert not missing, f"SPIRE {release.version} emits none of {missing}"


def test_agent_gone_is_unavailable_agent_unreachable(release: LocalSpire) -> None:
    release.kill_agent()
    try:
        with WorkloadClient(f"unix://{release.agent_socket}") as client:
            result = run(client, "fetch_x509_svid", timeout=2.0)
    finally:
        release.start_agent()
    SEEN["agent process gone (socket left behind)"] = result.outcome
    assert (result.code, result.reason) == ("UNAVAILABLE", "agent_unreachable"), result.message


def test_failing_workload_attestor(release: LocalSpire) -> None:
    """The k8s attestor, asked about a process in a pod-shaped cgroup, with no kubelet to ask."""
    if os.geteuid() != 0:
        require("making a pod-shaped cgroup needs root")
    kubelet = free_port()  # nothing listens there
    release.replace_workload_attestors(
        f"""  WorkloadAttestor "k8s" {{
    plugin_data {{
      kubelet_read_only_port = {kubelet}
      node_name = "node-a"
      max_poll_attempts = 2
      poll_retry_interval = "100ms"
    }}
  }}"""
    )
    try:
        done = run_as_pod([sys.executable, "-c", IN_POD, str(release.agent_socket)], timeout=60)
    finally:
        release.replace_workload_attestors(UNIX_ATTESTOR)
    assert done.returncode == 0, done.stderr
    outcome = done.stdout.strip()
    SEEN["every workload attestor fails"] = outcome
    if release.version >= "v1.15.2":
        assert outcome == "UNAVAILABLE (workload_attestation_failed)", done.stdout
    else:  # older agents attest the caller with no selectors: "no identity issued"
        assert outcome == "PERMISSION_DENIED", done.stdout


# The fetch_x509_svid probe, run by a process inside the pod-shaped cgroup; prints its outcome.
IN_POD = """
import sys
from exporter import config
from exporter.client import WorkloadClient
from exporter.probes import spec
probe = spec("fetch_x509_svid")
with WorkloadClient("unix://" + sys.argv[1]) as client:
    print(probe.build()(client, probe.settings(enabled=True, interval=15.0, timeout=5.0)).outcome)
"""


# The lowest limit SPIRE accepts, on every method it can limit that the exporter calls.
LOWEST_LIMITS = "\n".join(
    f"    {method} = 1"
    for method in ("fetch_x509_svid", "fetch_jwt_svid", "fetch_x509_bundles", "fetch_jwt_bundles")
)


@pytest.fixture(scope="module")
def limited() -> Iterator[LocalSpire | None]:
    """A second SPIRE whose agent limits every method to 1 call a second per selector set; None
    when this release refuses the experimental.ratelimit block."""
    try:
        local = started_spire(agent_extra=f"  experimental {{\n  ratelimit {{\n{LOWEST_LIMITS}\n  }}\n  }}")
    except RuntimeError:
        SEEN["over experimental.ratelimit"] = "agent refuses the ratelimit block"
        yield None
        return
    yield local
    local.stop()


def test_rate_limit_is_unavailable_rate_limited(limited: LocalSpire | None) -> None:
    if limited is None:
        return  # recorded by the fixture; the table says which releases refuse it
    with WorkloadClient(f"unix://{limited.agent_socket}") as client:
        results = [run(client, "fetch_jwt_svid", timeout=5.0) for _ in range(3)]
    outcomes = sorted({r.outcome for r in results})
    SEEN["over experimental.ratelimit"] = ", ".join(outcomes)
    counted = RATE_LIMIT_COUNTER in _names(limited.telemetry_port)
    SEEN[f"emits {RATE_LIMIT_COUNTER} (after a rejection)"] = "yes" if counted else "no"
    if limited.version >= "v1.15.2":
        assert "UNAVAILABLE (rate_limited)" in outcomes, [r.message for r in results]
    else:
        assert outcomes == ["OK"], [r.message for r in results]


def test_the_exporter_at_defaults_never_trips_the_lowest_limit(limited: LocalSpire | None) -> None:
    """Two full cycles of the default schedule (15 s, every default probe, the rotation watch)."""
    if limited is None:
        return
    time.sleep(1.5)  # the previous test's calls leave the bucket empty for a second
    cfg = config.build(
        {
            "workload_api": {"socket": f"unix://{limited.agent_socket}"},
            "web": {"listen_address": "127.0.0.1:0"},
        },
        environ={},
    )
    with RunningExporter(cfg) as running:
        time.sleep(2 * cfg.probes.interval + 3)
        samples = parse(running.text())
    counts = {labels: v for (name, labels), v in samples.items() if name == "spire_health_probes_total" and v}
    limited_calls = {labels: v for labels, v in counts.items() if ("reason", "rate_limited") in labels}
    SEEN["exporter at defaults, every limit at 1/s"] = (
        "rate-limited" if limited_calls else "never rate-limited"
    )
    assert not limited_calls, limited_calls
    assert {dict(labels)["code"] for labels in counts} == {"OK"}, counts


@pytest.mark.last
def test_what_this_release_does_is_its_committed_record() -> None:
    # The binary's own word, not the module's fixture: that one ended with the module's other tests.
    version = spire_binary_version(find_spire_bin_dir())
    record = RECORDS / f"{version}.json"
    assert SEEN, "the contract's other tests recorded nothing: run the whole module"
    out = os.environ.get("SPIRE_CONTRACT_RECORD")
    if out:
        Path(out).write_text(json.dumps(SEEN, indent=2, sort_keys=True) + "\n")
        return
    if not record.exists():
        pytest.fail(f"no committed record for SPIRE {version}: run scripts/matrix", pytrace=False)
    committed: Record = json.loads(record.read_text())
    changed = {k: (committed.get(k), v) for k, v in SEEN.items() if committed.get(k) != v}
    assert not changed, (
        f"SPIRE {version} now differs from {record.relative_to(ROOT)} (committed, seen): {changed}; "
        "run scripts/matrix to record it and regenerate docs/compatibility.md"
    )


def _summary(outcomes: dict[str, str]) -> str:
    """One outcome for all, or each RPC's."""
    if len(set(outcomes.values())) == 1:
        return next(iter(outcomes.values()))
    return ", ".join(f"{rpc} {outcome}" for rpc, outcome in outcomes.items())


def _names(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
