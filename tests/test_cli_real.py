"""The installed command against the real agent: probe --once, the running exporter, no secrets out."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import WORKLOAD_RPCS as RPCS
from conftest import cli, record_output, require

from exporter.client import WorkloadClient
from harness.local_spire import free_port

pytestmark = pytest.mark.spire


def test_probe_once_healthy(spire, endpoint) -> None:
    done = cli(
        "probe",
        "--once",
        "--spiffe.endpoint-socket",
        endpoint,
        "--agent.cmdline-pattern",
        re.escape(f"{spire.dir}/agent/agent.conf"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    record_output(done.stdout + done.stderr)
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["RPC", "RESULT", "LATENCY"]
    for rpc in (*RPCS, "health_check"):
        row = next(line for line in lines if line.startswith(rpc + " "))
        assert row.split()[1] == "OK", row
    x509_row = next(line for line in lines if line.startswith("fetch_x509_svid "))
    assert spire.workload_id in x509_row and "min" in x509_row
    assert f"agent pid {spire.agent_pid}:" in done.stdout


def test_probe_once_missing_socket_exits_1_quickly(tmp_path) -> None:
    start = time.monotonic()
    done = cli(
        "probe",
        "--once",
        "--spiffe.endpoint-socket",
        f"unix://{tmp_path}/none.sock",
        "--probes.timeout",
        "1s",
    )
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stdout
    assert "Traceback" not in done.stderr
    assert time.monotonic() - start < 20


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read().decode()


def secrets_of(endpoint: str) -> list[str]:
    """Forms the exporter's key and token could take in any output: raw, base64, hex, PEM body."""
    with WorkloadClient(endpoint) as client:
        key = client.fetch_x509_svid(5).svids[0].x509_svid_key
        token = client.fetch_jwt_svid(["spire-health-exporter"], 5).svids[0].svid
    b64 = base64.b64encode(key).decode()
    return [token, token.split(".")[2], b64[:64], b64[64:128], key.hex()[:64]]


def test_running_exporter_logs_and_pages_hold_no_secrets(spire, endpoint) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "exporter", "--spiffe.endpoint-socket", endpoint,
            "--web.listen-address", f"127.0.0.1:{port}", "--log.format", "json", "--log.level", "debug",
            "--probes.interval", "1s", "--probes.timeout", "800ms",
            "--agent.cmdline-pattern", re.escape(f"{spire.dir}/agent/agent.conf"),
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        metrics = ""
        while time.monotonic() < deadline:
            try:
                metrics = fetch(base + "/metrics")
                if metrics.count('spire_health_probe_success{rpc="validate_jwt_svid"} 1.0'):
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert 'spire_health_probe_success{rpc="validate_jwt_svid"} 1.0' in metrics
        status = fetch(base + "/")
        assert "fetch_x509_svid" in status and spire.workload_id in status
        assert fetch(base + "/healthz") == "ok\n"
        spire.pause_agent()  # a failure, so error lines get logged too
        time.sleep(2.5)
        spire.resume_agent()
        time.sleep(1.5)
        metrics += fetch(base + "/metrics") + fetch(base + "/")
    finally:
        spire.resume_agent()
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err[-2000:]
    logs = out + err
    record_output(logs + metrics)
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any(line["msg"] == "probe failing" and line["code"] == "DEADLINE_EXCEEDED" for line in lines)
    assert any(line["msg"] == "probe recovered" for line in lines)
    for secret in secrets_of(endpoint):
        assert secret not in logs
        assert secret not in metrics
    assert "PRIVATE KEY" not in logs + metrics
    assert not re.search(r"eyJ[\w-]{10,}\.[\w-]{10,}\.", logs + metrics), "something JWT-shaped leaked"


def test_promtool_check_metrics_is_clean(spire, endpoint) -> None:
    promtool = shutil.which("promtool")
    if not promtool:
        require("promtool (Debian's prometheus package) is not installed")
    from running import RunningExporter, fast_config

    cfg = fast_config(
        endpoint, **{"agent.process.cmdline_pattern": re.escape(f"{spire.dir}/agent/agent.conf")}
    )
    with RunningExporter(cfg) as running:
        running.wait_for(lambda s: len([k for k in s if k[0].endswith("_success")]) >= 6, 15, "probes")
        text = running.text()
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), (
        done.stdout + done.stderr
    )
