"""What is derived from one source stays in step with it: the settings table gives the parser,
`--help`, docs/configuration.md, the README's flags and the chart's schema; the dashboards and
docs/metrics.md match what the generators and the collectors really produce."""

from __future__ import annotations

import json
import re
import subprocess

import jsonschema
import pytest
from conftest import CHART_EXAMPLES, K8S_VERSION, ROOT, chart_example, cli, helm, state_registry
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from dashboards import generate as generate_dashboards
from exporter import config
from exporter.answers import BundleInfo, SvidInfo
from exporter.probes import registered
from exporter.probes.debug_get_info import AgentInfo
from exporter.result import ProbeResult
from exporter.sds import SdsFacts
from exporter.settings import ConfigError, coerce
from exporter.store import State
from exporter.store.agent import CgroupSample, ProcessSample
from harness import generated
from harness.paths import CHART

# Every series of this exporter, and only its, starts with this (docs/metrics.md, "Names").
PREFIX = "spire_health_"
# Values of every kind a person or a chart might write: well-formed, malformed and of the wrong type.
CANDIDATES: list[object] = [
    "15s", "500ms", "1.5m", "1h", "0.5s", "1h30m", "1d", "0s", "0.0s", "-1s", "15", "s", " 15s", "15S",
    2, 0.25, 0, -3, True, False, "true", "false", "yes", 1, 10, -1, 1.5, "10", "",
    "x", "/metrics", "/", "/healthz", "metrics", ":9989", "localhost", "[::1]:9989", "127.0.0.1:99999",
    "0.0.0.0:9989", "http://127.0.0.1:9982", "http://$(HOST_IP):9982", "localhost:9982", "ftp://a",
    "unix:///run/a.sock", "unix:/run/a.sock", "/run/a.sock", "a.sock", "debug", "verbose", "json",
    "logfmt", "spire-agent", "spire-agent run.*",
]  # fmt: skip


def test_generated_files_are_current() -> None:
    assert generated.stale() == [], "run python -m harness.generated"


def test_help_lists_every_flag_with_the_table_help() -> None:
    done = cli("--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    for flag, setting in config.flag_table().items():
        assert f"--{flag}" in text
        assert " ".join(setting.meta.help.split()) in text, flag


def _schema_of(key: str) -> dict:
    """The chart's `config` schema of one dotted key of the exporter's file."""
    node = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]
    for part in key.split("."):
        node = node["properties"][part]
    return node


@pytest.mark.parametrize("setting", list(config.table()), ids=lambda s: s.key)
def test_the_schema_accepts_only_what_the_exporter_accepts(setting) -> None:
    """Through `config` every key reaches the file: a value the schema lets through must parse.
    For strings (what YAML gives for text) the two agree exactly, except that a schema cannot
    judge a regular expression."""
    validator = jsonschema.Draft7Validator(_schema_of(setting.key))
    for value in CANDIDATES:
        try:
            coerce(setting.meta, value, setting.key)
            exporter_ok = True
        except ConfigError:
            exporter_ok = False
        schema_ok = validator.is_valid(value)
        assert exporter_ok or not schema_ok, (
            setting.key,
            value,
            "the schema accepts what the exporter rejects",
        )
        if isinstance(value, str) and setting.meta.kind in ("str", "duration") and setting.meta.check is None:
            assert schema_ok == exporter_ok, (setting.key, value)


def test_the_chart_rejects_a_duration_the_exporter_rejects() -> None:
    for value, ok in (("1h30m", False), ("1d", False), ("0s", False), ("90s", True), ("1.5m", True)):
        done = subprocess.run(
            [helm(), "lint", "--strict", str(CHART), "--kube-version", K8S_VERSION,
             "--set", f"probes.interval={value}", "--set", "probes.timeout=1s"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert (done.returncode == 0) == ok, (value, done.stdout + done.stderr)
        env = {
            "SPIFFE_ENDPOINT_SOCKET": "unix:///a.sock",
            "SPIRE_HEALTH_EXPORTER_PROBES_INTERVAL": value,
            "SPIRE_HEALTH_EXPORTER_PROBES_TIMEOUT": "1s",
        }
        with_exporter = cli("check-config", "/dev/null", env=env)
        assert (with_exporter.returncode == 0) == ok, (value, with_exporter.stderr)


@pytest.mark.parametrize("example", CHART_EXAMPLES, ids=lambda p: p.stem)
def test_each_chart_example_passes_check_config_with_the_pods_environment(example, tmp_path) -> None:
    """Rendered with the example's values: the ConfigMap's file, judged by check-config with the
    environment the DaemonSet gives the container (tests/test_image.py does it in the image)."""
    config_text, env = chart_example(example)
    (tmp_path / "config.yml").write_text(config_text)
    checked = cli("check-config", str(tmp_path / "config.yml"), env=env)
    assert checked.returncode == 0, checked.stderr


def test_every_dashboard_file_is_one_the_generator_makes() -> None:
    """A dashboard left behind after a rename would ship unchecked in the chart."""
    made = set(generate_dashboards.render())
    assert {p.name for p in (ROOT / "dashboards").glob("*.json")} == made
    assert {p.name for p in generate_dashboards.CHART_FILES.iterdir()} == made


def every_series() -> dict[str, str]:
    """Each family the collectors expose when every store holds something, by its exposed name
    (counters with _total) and its type."""
    state = State()
    for spec in registered():
        state.probes.register(spec.name)
        state.record(ProbeResult(spec.name, "OK", 0.01))
    state.record(
        ProbeResult("fetch_x509_svid", "OK", 0.01, facts=(SvidInfo("x509", "spiffe://td/a", 1, 2e9, "1"),))
    )
    state.record(
        ProbeResult("fetch_jwt_svid", "OK", 0.01, facts=(SvidInfo("jwt", "spiffe://td/a", 1, 2e9, "j"),))
    )
    state.record(
        ProbeResult("fetch_x509_bundles", "OK", 0.01, facts=(BundleInfo("x509", "td", 1, 2e9, 1e9),))
    )
    state.record(ProbeResult("fetch_jwt_bundles", "OK", 0.01, facts=(BundleInfo("jwt", "td", 1, None),)))
    state.record(
        ProbeResult("debug_get_info", "OK", 0.01, facts=(AgentInfo(1.0, 2e9, 3600.0, (("x509", 1),)),))
    )
    state.record(
        ProbeResult("sds_fetch_secrets", "OK", 0.01, facts=(SdsFacts(2e9, (("ROOTCA", "spiffe"),)),))
    )
    state.own.set_stream_up("sds", True)
    state.identities.record_watch([SvidInfo("x509", "spiffe://td/a", 1, 2e9, "1")])
    state.agent.set_http_health("live", True)
    state.agent.set_process(ProcessSample(1, 2, 3, 4.0, 5, 6, 7.0, 8), CgroupSample(2, 1, 1, 1, 1, 0))
    state.own.register_job("agent", 60)
    state.own.set_watch_up(True)
    text = generate_latest(state_registry(state)).decode()
    return {
        f.name + ("_total" if f.type == "counter" else ""): f.type
        for f in text_string_to_metric_families(text)
    }


def test_docs_metrics_lists_exactly_what_the_exporter_exposes() -> None:
    """docs/metrics.md names every series the exporter can expose, and names none it doesn't."""
    exposed = every_series()
    assert all(name.startswith(PREFIX) for name in exposed), sorted(exposed)
    doc = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(rf"`({PREFIX}[a-z0-9_]+)`", doc))
    assert set(exposed) - documented == set(), "exposed but not documented"
    assert documented - set(exposed) == set(), "documented but never exposed"


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


def test_every_pinned_version_comes_from_versions_env() -> None:
    """No script or harness module names a pinned release of its own: they all read versions.env."""
    from harness import versions

    pinned = {key: versions.version(key) for key in ("SPIRE_VERSION", "KUBERNETES_VERSION", "HELM_VERSION",
              "PROMETHEUS_OPERATOR_VERSION", "PROMETHEUS_VERSION", "ALERTMANAGER_VERSION")}  # fmt: skip
    sources = [*sorted((ROOT / "scripts").iterdir()), *sorted((ROOT / "harness").glob("*.py")),
               *sorted((ROOT / "harness" / "k8s").iterdir()), ROOT / "tests" / "conftest.py"]  # fmt: skip
    for path in sources:
        if not path.is_file() or path.name == "versions":
            continue
        text = path.read_text()
        for key, value in pinned.items():
            bare = value.removeprefix("v")
            assert not re.search(rf"(?<![\d.]){re.escape(bare)}(?![\d])", text), (
                f"{path.relative_to(ROOT)} names {key} {value} itself; read it from versions.env"
            )
