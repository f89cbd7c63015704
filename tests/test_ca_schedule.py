"""The CA alerts against SPIRE's own rotation schedule, at CA TTLs from 1 hour to 1 year.

SPIRE (pkg/server/ca/manager, v1.10 to v1.15) prepares the next CA and publishes it in the
bundle when min(lifetime / 2, 30 d) of the current one is left, and activates it when
min(lifetime / 6, 7 d) is left. Here promtool runs the shipped rules over series that follow that
schedule for two and a half lifetimes: the alerts must stay silent through every normal rotation
and fire, before the CA expires, when rotation stops.
"""

from __future__ import annotations

import itertools
import subprocess

import pytest
import yaml
from conftest import tool

from alerts.rules import ACTIVATE_CAP_SECONDS, PREPARE_CAP_SECONDS
from harness.paths import ROOT

HOUR, DAY = 3600, 86400
STEPS = 150  # samples per lifetime: the schedule's points fall within a step or two
BUNDLE = "SpireTrustBundleCAExpiringSoon"
SERVER = "SpireServerCAExpiringSoon"


def _schedule(lifetime: int, until: int) -> list[tuple[int, int]]:
    """(issued, notAfter) of each CA a healthy server makes, oldest first."""
    cas = [(0, lifetime)]
    while cas[-1][0] < until:
        _issued, not_after = cas[-1]
        prepared = not_after - min(lifetime // 2, PREPARE_CAP_SECONDS)
        cas.append((prepared, prepared + lifetime))
    return cas


def _series(lifetime: int, step: int, samples: int) -> list[dict[str, str]]:
    cas = _schedule(lifetime, step * samples)
    times = [i * step for i in range(samples + 1)]

    def newest(t: int) -> tuple[int, int]:
        return [ca for ca in cas if ca[0] <= t][-1]

    def active(t: int) -> tuple[int, int]:
        """(activated at, notAfter) of the CA that signs at t."""
        current = (0, lifetime)
        for (_i, not_after), (_n, following) in itertools.pairwise(cas):
            activated = not_after - min(lifetime // 6, ACTIVATE_CAP_SECONDS)
            if activated <= t:
                current = (activated, following)
        return current

    exporter = 'job="spire-health-exporter",instance="n:9989",node="n",trust_domain="%s"'
    server = 'job="spire-server",instance="%s:9987",trust_domain_id="td"'

    def row(name: str, labels: str, values: list[int]) -> dict[str, str]:
        return {"series": f"{name}{{{labels}}}", "values": " ".join(str(v) for v in values)}

    latest = "spire_health_trust_bundle_latest_%s_timestamp_seconds"
    rotate = "spire_server_manager_x509_ca_rotate_%s"
    return [
        row(latest % "expiry", exporter % "healthy", [newest(t)[1] for t in times]),
        row(latest % "issued", exporter % "healthy", [newest(t)[0] for t in times]),
        row(latest % "expiry", exporter % "stuck", [lifetime for _ in times]),
        row(latest % "issued", exporter % "stuck", [0 for _ in times]),
        row(rotate % "expiration", server % "healthy", [active(t)[1] for t in times]),
        row(rotate % "ttl", server % "healthy", [active(t)[1] - active(t)[0] for t in times]),
        row(rotate % "expiration", server % "stuck", [lifetime for _ in times]),
        row(rotate % "ttl", server % "stuck", [lifetime for _ in times]),
    ]


def _firing(alert: str, label: str, value: str, state: str = ', alertstate="firing"') -> str:
    return f'count(ALERTS{{alertname="{alert}"{state}, {label}="{value}"}}) or vector(0)'


def _duration(text: str) -> int:
    units = {"s": 1, "m": 60, "h": HOUR, "d": DAY}
    return int(text[:-1]) * units[text[-1]]


@pytest.mark.parametrize(
    "lifetime", [HOUR, 6 * HOUR, DAY, 7 * DAY, 30 * DAY, 90 * DAY, 365 * DAY], ids=lambda s: f"{s // HOUR}h"
)
def test_ca_alerts_follow_spires_rotation_schedule(tmp_path, lifetime) -> None:
    config = yaml.safe_load((ROOT / "alerts" / "config.yml").read_text())["alerts"]
    step = lifetime // STEPS
    samples = STEPS * 5 // 2
    # When each stuck CA's alert must be firing: past SPIRE's due point by the alert's share,
    # its `for`, and two steps; every such time is before the CA expires.
    bundle_due = lifetime - float(config[BUNDLE]["share"]) * min(lifetime / 2, PREPARE_CAP_SECONDS)
    server_due = lifetime - float(config[SERVER]["share"]) * min(lifetime / 6, ACTIVATE_CAP_SECONDS)
    checks = []
    for i in range(samples + 1):
        t = i * step
        # The healthy ones, through every rotation, not even pending: a threshold that comes
        # within `for` of a healthy schedule is one slow evaluation from a false page.
        checks.append((t, _firing(BUNDLE, "trust_domain", "healthy", ""), 0))
        checks.append((t, _firing(SERVER, "instance", "healthy:9987", ""), 0))
    for alert, label, value, due in (
        (BUNDLE, "trust_domain", "stuck", bundle_due),
        (SERVER, "instance", "stuck:9987", server_due),
    ):
        firing_by = due + _duration(config[alert]["for"]) + 2 * step
        assert firing_by < lifetime, (alert, firing_by, lifetime)
        silent_until = due - 2 * step
        checks.append((int(silent_until) // step * step, _firing(alert, label, value), 0))
        checks.append((-(-int(firing_by) // step) * step, _firing(alert, label, value), 1))
    tests = {
        "rule_files": [str(ROOT / "alerts" / "spire-health-exporter.rules.yml")],
        "evaluation_interval": f"{step}s",
        "tests": [
            {
                "interval": f"{step}s",
                "input_series": _series(lifetime, step, samples),
                "promql_expr_test": [
                    {"expr": expr, "eval_time": f"{t}s", "exp_samples": [{"labels": "{}", "value": value}]}
                    for t, expr, value in checks
                ],
            }
        ],
    }
    path = tmp_path / "ca-schedule.yml"
    path.write_text(yaml.safe_dump(tests, width=1_000_000))
    done = subprocess.run(
        [tool("promtool"), "test", "rules", str(path)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
