"""The whole exporter against the real SPIRE from the harness: healthy path and real failures."""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import WORKLOAD_RPCS as RPCS
from conftest import require, started_spire
from cryptography import x509
from running import RunningExporter, fast_config, get

from harness.local_spire import LocalSpire

pytestmark = pytest.mark.spire

P = "spire_health_"


def exporter_for(spire, **overrides) -> RunningExporter:
    return RunningExporter(
        fast_config(
            f"unix://{spire.agent_socket}",
            **{
                "agent.process.cmdline_pattern": re.escape(f"{spire.dir}/agent/agent.conf"),
                "agent.health.url": f"http://127.0.0.1:{spire.health_port}",
                **overrides,
            },
        )
    )


def all_ok(samples) -> bool:
    return all(get(samples, P + "probe_success", rpc=rpc) == 1 for rpc in RPCS)


def test_healthy_path(healthy_spire) -> None:
    spire = healthy_spire
    with exporter_for(spire) as running:
        s = running.wait_for(all_ok, 15, "every probe to succeed")
        s = running.wait_for(
            lambda s: get(s, "spire_health_agent_http_health_status", check="ready") == 1, 10, "ready"
        )
        for rpc in RPCS:
            count = get(s, P + "probe_duration_seconds_count", rpc=rpc)
            total = get(s, P + "probe_duration_seconds_sum", rpc=rpc)
            assert count and count >= 1
            assert 0 < total / count < 0.8, f"{rpc} mean latency {total / count}"
            assert get(s, P + "probes_total", rpc=rpc, code="OK") == count
            assert get(s, P + "probe_last_attempt_timestamp_seconds", rpc=rpc) > time.time() - 10
            assert get(s, P + "probe_success", rpc=rpc) == 1
        assert get(s, "spire_health_agent_grpc_health_serving") == 1
        assert get(s, "spire_health_agent_http_health_status", check="live") == 1

        # Expiry and issue time match the certificate the agent's own CLI writes out.
        with tempfile.TemporaryDirectory() as out:
            done = spire.agent_cli(
                "api", "fetch", "x509", "-socketPath", str(spire.agent_socket), "-write", out
            )
            assert done.returncode == 0, done.stderr
            leaf = x509.load_pem_x509_certificates((Path(out) / "svid.0.pem").read_bytes())[0]
        wid = spire.workload_id
        s = running.scrape()
        assert get(s, "spire_health_svid_expiry_timestamp_seconds", kind="x509", spiffe_id=wid) == (
            leaf.not_valid_after_utc.timestamp()
        )
        assert get(s, "spire_health_svid_issued_timestamp_seconds", kind="x509", spiffe_id=wid) == (
            leaf.not_valid_before_utc.timestamp()
        )
        jwt_exp = get(s, "spire_health_svid_expiry_timestamp_seconds", kind="jwt", spiffe_id=wid)
        jwt_iat = get(s, "spire_health_svid_issued_timestamp_seconds", kind="jwt", spiffe_id=wid)
        assert jwt_exp - jwt_iat == 300  # SPIRE's default JWT-SVID TTL
        assert time.time() < jwt_exp <= time.time() + 300

        # Bundle sizes match what the server says it has.
        cas = x509.load_pem_x509_certificates(spire.bundle_pem().encode())
        td = spire.trust_domain
        assert get(s, "spire_health_trust_bundle_certificates", trust_domain=td) == len(cas)
        newest = max(cas, key=lambda c: c.not_valid_after_utc)
        latest = ("latest_expiry", newest.not_valid_after_utc), ("latest_issued", newest.not_valid_before_utc)
        for name, when in latest:
            assert (
                get(s, f"spire_health_trust_bundle_{name}_timestamp_seconds", trust_domain=td)
                == when.timestamp()
            )
        jwks = json.loads(spire.server_cli("bundle", "show", "-format", "spiffe"))
        jwt_keys = [k for k in jwks["keys"] if k.get("use") == "jwt-svid"]
        assert get(s, "spire_health_jwt_bundle_keys", trust_domain=td) == len(jwt_keys) >= 1
        assert get(s, "spire_health_agent_process_up") == 1


def test_paused_agent_is_deadline_exceeded_then_recovers(healthy_spire) -> None:
    spire = healthy_spire
    with exporter_for(spire) as running:
        running.wait_for(all_ok, 15, "every probe to succeed")
        before = running.scrape()
        spire.pause_agent()
        paused_at = time.monotonic()
        try:

            def detected(s) -> bool:
                return all(
                    get(s, P + "probe_success", rpc=rpc) == 0
                    and get(s, P + "probes_total", rpc=rpc, code="DEADLINE_EXCEEDED")
                    > get(before, P + "probes_total", rpc=rpc, code="DEADLINE_EXCEEDED")
                    for rpc in (
                        "fetch_x509_svid",
                        "fetch_jwt_svid",
                        "fetch_x509_bundles",
                        "fetch_jwt_bundles",
                    )
                )

            # Within one interval plus the deadline (1 s + 0.8 s), with room for the probe spread.
            running.wait_for(detected, 1.0 + 0.8 + 1.5, "DEADLINE_EXCEEDED while the agent is stopped")
            print(f"detected a paused agent in {time.monotonic() - paused_at:.2f} s")
            assert get(running.scrape(), "spire_health_agent_process_up") == 1  # paused, not gone
        finally:
            spire.resume_agent()
        running.wait_for(all_ok, 10, "recovery after SIGCONT")


UNREACHABLE = "agent_unreachable"


def test_killed_agent_is_unavailable_then_recovers_with_new_start_time(healthy_spire) -> None:
    spire = healthy_spire
    with exporter_for(spire) as running:
        s = running.wait_for(
            lambda s: all_ok(s) and get(s, "spire_health_agent_process_start_time_seconds"),
            15,
            "healthy with a process",
        )
        started = get(s, "spire_health_agent_process_start_time_seconds")
        spire.kill_agent()
        running.wait_for(
            lambda s: (
                # The socket is left behind, no one listens: the agent could not be reached.
                (
                    get(s, P + "probes_total", rpc="fetch_x509_svid", code="UNAVAILABLE", reason=UNREACHABLE)
                    or 0
                )
                >= 1
                and get(s, P + "probe_success", rpc="fetch_x509_svid") == 0
                and get(s, "spire_health_agent_process_up") == 0
                and get(s, "spire_health_agent_grpc_health_serving") == 0
            ),
            5,
            "UNAVAILABLE and process down",
        )
        time.sleep(1.1)  # /proc start times have a resolution of one clock tick; make the change visible
        spire.start_agent()
        s = running.wait_for(
            lambda s: all_ok(s) and get(s, "spire_health_agent_process_up") == 1, 20, "recovery"
        )
        s = running.wait_for(
            lambda s: get(s, "spire_health_agent_process_start_time_seconds") > started, 5, "a new start time"
        )


def test_deleted_entry_is_permission_denied(healthy_spire) -> None:
    spire = healthy_spire
    with exporter_for(spire) as running:
        running.wait_for(all_ok, 15, "every probe to succeed")
        spire.delete_entry(spire.entry_id)
        spire.entry_id = None
        running.wait_for(
            lambda s: all(
                (get(s, P + "probes_total", rpc=rpc, code="PERMISSION_DENIED") or 0) >= 1
                and get(s, P + "probe_success", rpc=rpc) == 0
                for rpc in ("fetch_x509_svid", "fetch_jwt_svid", "fetch_x509_bundles", "fetch_jwt_bundles")
            ),
            20,
            "PERMISSION_DENIED",
        )


def test_short_ttl_entry_rotates_on_schedule(healthy_spire) -> None:
    spire = healthy_spire
    ttl = 20
    rotating = f"spiffe://{spire.trust_domain}/rotating"
    entry = spire.create_entry(spiffe_id=rotating, x509_ttl=ttl)
    try:
        with exporter_for(spire) as running:
            running.wait_for(
                lambda s: get(s, "spire_health_x509_svid_rotations_total", spiffe_id=rotating) is not None,
                30,
                "watch",
            )
            # The agent renews when less than about half of notAfter - notBefore is left (+-10 %
            # jitter), checking every 5 s. SPIRE backdates notBefore, so that span exceeds the TTL.
            checked = 0
            previous = None
            deadline = time.monotonic() + 4 * ttl
            while checked < 2:
                assert time.monotonic() < deadline, "the short-TTL SVID did not rotate twice"
                s = running.scrape()
                count = get(s, "spire_health_x509_svid_rotations_total", spiffe_id=rotating)
                current = (
                    count,
                    get(s, "spire_health_svid_issued_timestamp_seconds", kind="x509", spiffe_id=rotating),
                    get(s, "spire_health_svid_expiry_timestamp_seconds", kind="x509", spiffe_id=rotating),
                )
                if previous and count > previous[0]:
                    _, iat, exp = previous
                    lifetime, left = exp - iat, exp - time.time()
                    print(f"rotated with {left:.1f} s of {lifetime:.0f} s left")
                    assert 0.4 * lifetime - 5 - 1 <= left <= 0.6 * lifetime + 0.5
                    assert current[1] > iat
                    checked += 1
                previous = current
                time.sleep(0.2)
            s = running.scrape()
            exp = get(s, "spire_health_svid_expiry_timestamp_seconds", kind="x509", spiffe_id=rotating)
            iat = get(s, "spire_health_svid_issued_timestamp_seconds", kind="x509", spiffe_id=rotating)
            assert exp - time.time() > 0.3 * ttl  # a healthy SVID never has much less than ~40 % left
            assert 0.9 * ttl <= exp - iat <= ttl + 15  # SPIRE backdates notBefore a little
            assert get(s, "spire_health_x509_svid_rotations_total", spiffe_id=spire.workload_id) == 0
    finally:
        spire.delete_entry(entry)


def _proc_status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


def _proc_start_time(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    btime = next(
        int(line.split()[1])
        for line in Path("/proc/stat").read_text().splitlines()
        if line.startswith("btime")
    )
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def contained_spire() -> Iterator[LocalSpire]:
    """A SPIRE of its own whose agent is in a memory cgroup of its own, as a container runtime puts
    it: the shared cgroup holds every process of the test run (and CI's background builds), whose
    usage moves between the exporter's sample and the test's read."""
    spire = started_spire()
    try:
        if not spire.limit_agent_memory(2**30):
            require("cannot put the agent in a memory cgroup of its own here")
        yield spire
    finally:
        spire.stop()


def test_agent_memory_matches_proc(contained_spire: LocalSpire) -> None:
    spire = contained_spire
    with exporter_for(spire) as running:
        running.wait_for(lambda s: get(s, "spire_health_agent_process_up") == 1, 10, "the agent process")
        # Stopped, the agent's figures hold still, so the exporter's next sample must match exactly.
        spire.pause_agent()
        try:
            time.sleep(2.5)
            s = running.scrape()
            pid = spire.agent_pid
            status = _proc_status(pid)
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cgroup_lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        finally:
            spire.resume_agent()
        assert (
            get(s, "spire_health_agent_process_peak_resident_memory_bytes")
            == int(status["VmHWM"].split()[0]) * 1024
        )
        rss = int(status["VmRSS"].split()[0]) * 1024
        assert get(s, "spire_health_agent_process_resident_memory_bytes") == rss
        assert get(s, "spire_health_agent_process_threads") == int(status["Threads"])
        assert get(s, "spire_health_agent_process_open_fds") == fds
        assert abs(get(s, "spire_health_agent_process_start_time_seconds") - _proc_start_time(pid)) < 0.02
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        assert get(s, "spire_health_agent_process_cpu_seconds_total") == pytest.approx(cpu, abs=0.011)
        # The agent's memory cgroup, read here straight from the files the kernel names for it.
        memory = [line.split(":", 2)[2] for line in cgroup_lines if "memory" in line.split(":")[1].split(",")]
        if memory:  # cgroup v1, as on this machine
            directory = Path("/sys/fs/cgroup/memory" + memory[0])
            usage = int((directory / "memory.usage_in_bytes").read_text())
            inactive_key = "total_inactive_file"
            oom = next(
                int(line.split()[1])
                for line in (directory / "memory.oom_control").read_text().splitlines()
                if line.startswith("oom_kill ")
            )
        else:
            directory = Path("/sys/fs/cgroup" + cgroup_lines[0].split(":", 2)[2])
            usage = int((directory / "memory.current").read_text())
            inactive_key = "inactive_file"
            oom = next(
                int(line.split()[1])
                for line in (directory / "memory.events").read_text().splitlines()
                if line.startswith("oom_kill ")
            )
        assert get(s, "spire_health_agent_cgroup_memory_usage_bytes") == pytest.approx(usage, abs=2**20)
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
        working_set = usage - int(stat[inactive_key])
        assert get(s, "spire_health_agent_cgroup_memory_working_set_bytes") == pytest.approx(
            working_set, abs=2**20
        )
        assert get(s, "spire_health_agent_cgroup_oom_kills_total") == oom


def _server_jwt_mints(spire) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{spire.server_telemetry_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    match = re.search(
        r'^spire_server_rpc_svid_v1_svid_new_jwtsvid\{[^}]*status="OK"[^}]*\} (\S+)$', text, re.M
    )
    return float(match.group(1)) if match else 0.0


def _wait_for_jwt_ttl(spire, ttl: int) -> None:
    """The server mints from an entry cache it reloads every few seconds; wait until it has the new entry."""
    from exporter import answers
    from exporter.client import WorkloadClient

    with WorkloadClient(f"unix://{spire.agent_socket}") as client:
        for attempt in range(40):
            try:
                svid = client.fetch_jwt_svid([f"ttl-check-{attempt}"], timeout=3).svids[0]
                claims = answers.jwt_claims(svid.svid)
                if claims["exp"] - claims["iat"] == ttl:
                    return
            except Exception:  # the entry may be briefly absent while it syncs
                pass
            time.sleep(0.5)
    raise AssertionError(f"the server never minted a JWT-SVID with the entry's {ttl} s TTL")


def test_roundtrip_reaches_the_server_and_fails_when_it_is_gone(healthy_spire) -> None:
    spire = healthy_spire
    jwt_ttl, interval = 10, 6  # the interval exceeds half the lifetime, so the cache is always due
    spire.delete_entry(spire.entry_id)
    spire.entry_id = spire.create_entry(jwt_ttl=jwt_ttl)
    _wait_for_jwt_ttl(spire, jwt_ttl)
    overrides = {
        "probes.fetch_jwt_svid_roundtrip": {"enabled": True, "interval": f"{interval}s", "timeout": "2s"},
        # Only the round-trip probe asks for JWT-SVIDs here, so every server mint is its doing.
        "probes.fetch_jwt_svid": {"enabled": False},
        "probes.validate_jwt_svid": {"enabled": False},
    }
    rt = "fetch_jwt_svid_roundtrip"
    try:
        mints_before = _server_jwt_mints(spire)
        with exporter_for(spire, **overrides) as running:
            s = running.wait_for(
                lambda s: get(s, P + "probes_total", rpc=rt, code="OK") >= 3,
                4 * interval,
                "three round trips",
            )
            ok = get(s, P + "probes_total", rpc=rt, code="OK")
            minted = _server_jwt_mints(spire) - mints_before
            print(f"{ok:.0f} round-trip probes, {minted:.0f} JWT-SVIDs minted by the server")
            assert ok <= minted <= ok + 1
            assert (get(s, P + "probes_total", rpc=rt, code="STALE_TOKEN") or 0) == 0

            spire.stop_server()
            s = running.wait_for(
                lambda s: get(s, P + "probe_success", rpc=rt) == 0, 2 * interval + 3, "round trip failing"
            )
            # The agent answers "could not fetch JWT-SVID" once it tries the server, or serves the
            # token it minted last (STALE_TOKEN) until then.
            codes = {
                "STALE_TOKEN": get(s, P + "probes_total", rpc=rt, code="STALE_TOKEN"),
                "UNAVAILABLE": get(
                    s, P + "probes_total", rpc=rt, code="UNAVAILABLE", reason="jwt_svid_unavailable"
                ),
            }
            print(f"with the server stopped: {codes}")
            assert (codes["STALE_TOKEN"] or 0) + (codes["UNAVAILABLE"] or 0) >= 1
            # The agent still answers from its cache, so the cached probes pass.
            assert get(s, P + "probe_success", rpc="fetch_x509_svid") == 1
            assert get(s, P + "probe_success", rpc="fetch_x509_bundles") == 1
    finally:
        if spire.server is None:
            spire.start_server()
        spire.delete_entry(spire.entry_id)
        spire.entry_id = None


def test_roundtrip_reaches_the_server_at_the_hardened_charts_one_hour_jwt_ttl(healthy_spire) -> None:
    """SPIRE's hardened chart gives JWT-SVIDs 1 hour; the agent serves a cached token until half
    of it has passed. With one audience every run of the 3-minute round trip within 30 minutes
    got the cached token back: STALE_TOKEN, a server outage that wasn't. Its audiences taken in
    turn, each run is a token the server mints."""
    from conftest import settings

    from exporter.client import WorkloadClient
    from exporter.probes.jwt_roundtrip import RoundTripProbe, audiences_needed

    spire = healthy_spire
    spire.delete_entry(spire.entry_id)
    spire.entry_id = spire.create_entry(jwt_ttl=3600)
    try:
        _wait_for_jwt_ttl(spire, 3600)
        own = settings("fetch_jwt_svid_roundtrip", interval=180.0, audience="she-test/roundtrip")
        probe = RoundTripProbe()
        runs = audiences_needed(3600, 180.0)  # 11: one pass over every audience
        mints_before = _server_jwt_mints(spire)
        with WorkloadClient(f"unix://{spire.agent_socket}") as client:
            codes = [probe(client, own).code for _ in range(runs)]
        minted = _server_jwt_mints(spire) - mints_before
        print(f"{runs} round trips at a 1 h JWT TTL: {codes}, {minted:.0f} minted by the server")
        assert codes == ["OK"] * runs
        assert minted >= runs
    finally:
        spire.delete_entry(spire.entry_id)
        spire.entry_id = None
