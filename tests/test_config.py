"""Configuration: precedence, defaults, and a one-line error naming the key for each bad fixture."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import cli

from exporter import config
from exporter.settings import parse_duration

DATA = Path(__file__).parent / "testdata"
BAD = sorted((DATA / "bad-configs").glob("*.yml"))


def expected_error(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# error: ")
    return first.removeprefix("# error: ").strip()


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_config_names_the_problem(path: Path) -> None:
    with pytest.raises(config.ConfigError) as raised:
        config.load(str(path), environ={})
    message = str(raised.value)
    assert expected_error(path) in message
    assert "\n" not in message


@pytest.mark.parametrize("path", BAD[:6], ids=lambda p: p.stem)
def test_bad_config_exits_2_with_one_line(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.file", str(path)],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("config error: ")
    assert expected_error(path) in lines[0]
    assert "Traceback" not in done.stderr


def test_check_config_command(tmp_path: Path) -> None:
    good = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(DATA / "good-configs" / "full.yml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert good.returncode == 0, good.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(BAD[0])],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert bad.returncode == 2
    missing = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", str(tmp_path / "nope.yml")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "nope.yml" in missing.stderr and "No such file" in missing.stderr


def test_unknown_flag_is_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "--web.listen-adress", ":1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--web.listen-adress" in done.stderr


def test_full_example_matches_defaults() -> None:
    full = config.load(str(DATA / "good-configs" / "full.yml"), environ={})
    minimal = config.load(str(DATA / "good-configs" / "minimal.yml"), environ={})
    assert full.probes.interval == 15.0 == minimal.probes.interval
    assert (
        full.each["fetch_jwt_svid_roundtrip"].enabled and not minimal.each["fetch_jwt_svid_roundtrip"].enabled
    )
    assert minimal.each["fetch_jwt_svid_roundtrip"].interval == 180.0
    assert minimal.web.listen_address == ":9989"
    # The documented full example sets every key of the table.
    written = yaml.safe_load((DATA / "good-configs" / "full.yml").read_text())

    def has(key: str) -> bool:
        node = written
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                return False
            node = node[part]
        return True

    inherited = {s.key for s in config.table() if s.meta.inherit}
    missing = [s.key for s in config.table() if not has(s.key) and s.key not in inherited]
    assert not missing


def test_precedence_flag_over_env_over_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text(
        "workload_api: {socket: unix:///file.sock}\nweb: {listen_address: ':1111'}\nprobes: {interval: 30s}\n"
    )
    env = {"SPIFFE_ENDPOINT_SOCKET": "unix:///env.sock", "SPIRE_HEALTH_EXPORTER_WEB_LISTEN_ADDRESS": ":2222"}
    c = config.load(str(path), environ=env, flags={"web.listen-address": ":3333"})
    assert c.endpoint == "unix:///env.sock"
    assert c.web.listen_address == ":3333"
    assert c.probes.interval == 30.0
    c = config.load(str(path), environ=env, flags={})
    assert c.web.listen_address == ":2222"
    c = config.load(str(path), environ={}, flags={"spiffe.endpoint-socket": "/flag.sock"})
    assert c.endpoint == "/flag.sock"
    # The chart gives the agent's health URL through the environment, the node's IP filled in by
    # Kubernetes; it is checked as a URL like any other source.
    c = config.load(str(path), environ={"SPIRE_HEALTH_EXPORTER_AGENT_HEALTH_URL": "http://10.0.0.7:9982"})
    assert c.agent.health.url == "http://10.0.0.7:9982"


def test_per_probe_interval_and_timeout_inherit() -> None:
    c = config.build(
        {
            "workload_api": {"socket": "/a.sock"},
            "probes": {"interval": "20s", "fetch_x509_svid": {"timeout": "500ms"}},
        },
        environ={},
    )
    assert (c.each["fetch_x509_svid"].interval, c.each["fetch_x509_svid"].timeout) == (20.0, 0.5)
    assert (c.each["fetch_jwt_bundles"].interval, c.each["fetch_jwt_bundles"].timeout) == (20.0, 5.0)
    assert c.each["validate_jwt_svid"].audience == c.each["fetch_jwt_svid"].audience


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("15s", 15), ("5m", 300), ("1h", 3600), (2, 2.0)]
)
def test_durations(text, seconds) -> None:
    assert parse_duration(text, "k") == seconds


def test_check_config_honours_spiffe_endpoint_socket(tmp_path) -> None:
    (tmp_path / "exporter.yml").write_text("probes: {interval: 30s}\n")
    done = cli(
        "check-config", str(tmp_path / "exporter.yml"), env={"SPIFFE_ENDPOINT_SOCKET": "unix:///run/a.sock"}
    )
    assert done.returncode == 0, done.stderr
    done = cli("check-config", str(tmp_path / "exporter.yml"), env={})
    assert done.returncode == 2 and "workload_api.socket" in done.stderr
