#!/usr/bin/env python3
"""The fleet: thousands of simulated nodes (bench/fleet_nodes.py) in two or more clusters,
scraped by a real Prometheus (the v3.5 that scripts/build-prometheus-operator builds) with the
shipped rules, alerting two real Alertmanagers, the example configuration and the same without
its inhibitions, each delivering to a webhook that counts notifications.

    .venv/bin/python -m bench.fleet scenarios [--nodes-per-cluster 60] [--time-scale 0.1]
    .venv/bin/python -m bench.fleet cost [--nodes 5000] [--minutes 12]

`scenarios` runs every scenario at once, each in clusters of its own, and prints the
notifications each gave (tests/test_fleet.py asserts them). Every duration the rules and
Alertmanager use (windows, `for`, intervals, group waits) is multiplied by the time scale, so
their ratios, which decide what fires first, are the shipped ones. `cost` runs one healthy fleet
at the chart's default scrape interval and measures what it costs Prometheus: series, memory,
each rule group's evaluation time, each rule's samples, and each fleet dashboard query's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from alerts import generate
from bench.common import table
from bench.fleet_nodes import CA_STUCK, FROZEN, HEALTHY, NO_ENTRY, Behaviour, Fleet, Node, nodes
from harness.local_cluster import find_built
from harness.local_spire import free_port, stop_process, wait_until
from harness.paths import ROOT
from harness.prom_stack import Alertmanager, Webhook, get_json, ready, spawn
from harness.promtext import duration_seconds, fill_dashboard_variables

CHART_SCRAPE_INTERVAL = 30.0  # the chart's podMonitor.interval
PROBE_INTERVAL = 15.0  # the exporter's probes.interval
GROUP_TIMING = (30.0, 300.0)  # the example's group_wait and group_interval
SERVER_DOWN = Behaviour(
    "server-down",
    # Cached JWT-SVIDs expired, none can be minted; the X.509-SVID was last renewed long ago.
    {"fetch_jwt_svid": ("UNAVAILABLE", "jwt_svid_unavailable"), "validate_jwt_svid": ("NO_TOKEN", "")},
    svid_left=0.3,
)
FAILING = Behaviour("failing", dict.fromkeys(FROZEN.codes, ("DEADLINE_EXCEEDED", "")))


@dataclass(frozen=True)
class Scenario:
    name: str
    behaviour_of: Callable[[Node, int], Behaviour]  # node and its index within its cluster
    # What a good rule set gives, per Alertmanager: at most so many pages, and notifications.
    max_pages: int
    max_notifications: int
    # Nodes in its first cluster, where not nodes_per_cluster: one frozen node must stay under
    # the SLO's slow-burn threshold (3 x 0.1 %), as it does in clusters of thousands.
    first_cluster: int | None = None


SCENARIOS = [
    Scenario("healthy", lambda _n, _i: HEALTHY, 0, 0),
    Scenario("frozen", lambda n, i: FROZEN if n.cluster.endswith("-a") and i == 0 else HEALTHY, 0, 1, 500),
    Scenario("failing", lambda n, i: FAILING if n.cluster.endswith("-a") and i % 10 == 0 else HEALTHY, 1, 1),
    Scenario("ca-stuck", lambda _n, _i: CA_STUCK, 2, 2),
    Scenario("server-down", lambda _n, _i: SERVER_DOWN, 2, 2),
    Scenario("fresh-install", lambda _n, i: NO_ENTRY if i % 5 == 0 else HEALTHY, 0, 2),
]


# The simulated fleet is exporters only, with no SPIRE telemetry targets, which these alerts
# rightly say; they fire on real causes in tests/test_operator.py and in promtool's cases.
NO_SPIRE_TELEMETRY = ("SpireAgentTelemetryMissing", "SpireServerTelemetryMissing")


def scaled_config(scale: float) -> dict[str, Any]:
    """alerts/config.yml with every alert's window and `for` multiplied by `scale`, and the alerts
    about SPIRE's own telemetry, which this fleet does not simulate, off."""
    config = generate.load_config(ROOT / "alerts" / "config.yml")
    for own in config["alerts"].values():
        for key in ("for", "window", "baseline_window"):
            if key in own:
                own[key] = f"{max(1, round(duration_seconds(own[key]) * scale))}s"
    for name in NO_SPIRE_TELEMETRY:
        config["alerts"][name]["enabled"] = False
    return config


def prometheus_binary() -> Path:
    return find_built("build-prometheus-operator", "Prometheus") / "prometheus"


class Stack:
    """Prometheus scraping `fleet`, with `rules`, alerting two Alertmanagers (with and without
    the example's inhibitions) that deliver to one webhook under /with and /without."""

    def __init__(
        self, workdir: Path, fleet: Fleet, rules: Path, scrape: float, group: tuple[float, float]
    ) -> None:
        self.dir = workdir
        self.webhook = Webhook()
        timing = (f"{group[0]:g}s", f"{group[1]:g}s")
        self.managers = [
            Alertmanager(workdir / "am-with", self.webhook, "/with", True, timing),
            Alertmanager(workdir / "am-without", self.webhook, "/without", False, timing),
        ]
        targets = [
            {
                "targets": [f"127.0.0.1:{fleet.server.port}"],
                "labels": {"__metrics_path__": node.path, **node.target_labels()},
            }
            for node in fleet.members
        ]
        (workdir / "targets.json").write_text(json.dumps(targets))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {
                "scrape_interval": f"{scrape:g}s",
                "evaluation_interval": f"{scrape:g}s",
                "scrape_timeout": f"{min(10.0, scrape):g}s",
            },
            "rule_files": [str(rules)],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [f"127.0.0.1:{am.port}" for am in self.managers]}]}
                ]
            },
            "scrape_configs": [
                {
                    "job_name": "spire-health-exporter",
                    "file_sd_configs": [{"files": [str(workdir / "targets.json")]}],
                },
                {"job_name": "prometheus", "static_configs": [{"targets": [f"127.0.0.1:{self.port}"]}]},
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.process = spawn(
            workdir,
            "prometheus",
            [
                str(prometheus_binary()),
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                f"--rules.alert.resend-delay={max(1.0, scrape):g}s",
            ],
        )
        wait_until(lambda: ready(self.url + "/-/ready"), 120, "Prometheus to be ready")

    def query(self, expr: str, **params: str) -> dict[str, Any]:
        answer: dict[str, Any] = get_json(
            self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr, **params})
        )
        return answer

    def stop(self) -> None:
        stop_process(self.process, grace=30)
        for am in self.managers:
            am.stop()
        self.webhook.close()


@contextlib.contextmanager
def running(fleet: Fleet, rules: Path, scrape: float, group: tuple[float, float]) -> Iterator[Stack]:
    quiet = logging.getLogger("exporter")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # every failing node would log its failure
    with tempfile.TemporaryDirectory(prefix="fleet-") as tmp:
        fleet.start()
        try:
            stack = Stack(Path(tmp), fleet, rules, scrape, group)
            try:
                yield stack
            finally:
                stack.stop()
        finally:
            fleet.stop()
            quiet.setLevel(level)


def notifications(webhook: Webhook, cluster_prefix: str) -> dict[str, dict[str, Any]]:
    """Per Alertmanager (with, without inhibitions): the notification groups that reached a
    receiver for clusters starting with `cluster_prefix`, firing only; a group updated later
    (more nodes joined it) is still one notification."""
    out: dict[str, dict[str, Any]] = {"with": {}, "without": {}}
    for path, payload in list(webhook.received):
        _, manager, receiver = path.split("/")
        if payload["status"] != "firing":
            continue
        clusters = {a["labels"].get("cluster", "") for a in payload["alerts"]}
        if not any(c.startswith(cluster_prefix) for c in clusters):
            continue
        names = sorted({a["labels"]["alertname"] for a in payload["alerts"]})
        out[manager][payload["groupKey"]] = {"receiver": receiver, "alerts": names}
    return out


def run_scenarios(nodes_per_cluster: int, scale: float, settle: float | None = None) -> dict[str, Any]:
    """Every scenario at once, each in two clusters of its own ("<name>-a", "<name>-b"); healthy
    for a warm-up, then as the scenario says. Returns each scenario's notifications."""
    members: list[Node] = []
    behaviour: dict[str, Behaviour] = {}
    for scenario in SCENARIOS:
        sizes = {"a": scenario.first_cluster or nodes_per_cluster, "b": nodes_per_cluster}
        for suffix, size in sizes.items():
            cluster = f"{scenario.name}-{suffix}"
            for position in range(size):
                node = Node(cluster, f"{cluster}-node-{position:05d}", len(members))
                members.append(node)
                behaviour[node.path] = scenario.behaviour_of(node, position)
    config = scaled_config(scale)
    # Healthy long enough for the probe alerts' windows (10 minutes at most, scaled) to hold
    # only healthy data; the hour- and day-long windows of the memory and churn alerts read
    # series the scenarios leave alone.
    warm_up = max(30.0, 600 * scale)
    fleet = Fleet(members, PROBE_INTERVAL * scale, lambda n: behaviour[n.path], warm_up)
    with tempfile.TemporaryDirectory(prefix="fleet-rules-") as tmp:
        rules = Path(tmp) / "rules.yml"
        rules.write_text(generate.render(config)[generate.RULES_FILE])
        group = (GROUP_TIMING[0] * scale, GROUP_TIMING[1] * scale)
        with running(fleet, rules, CHART_SCRAPE_INTERVAL * scale, group) as stack:
            # After the switch: the longest probe window and `for` (10 minutes each), Alertmanager's
            # wait and one group interval, scaled; then every page and ticket has come.
            settle = settle or warm_up + (1200 + 10 * CHART_SCRAPE_INTERVAL) * scale + sum(group)
            started = time.monotonic()
            while time.monotonic() - started < settle:
                time.sleep(2)
            firing = stack.query('count by (alertname) (ALERTS{alertstate="firing"})')["data"]["result"]
            return {
                "nodes": len(members),
                "settle_seconds": round(settle),
                "firing": {r["metric"]["alertname"]: int(float(r["value"][1])) for r in firing},
                "scenarios": {s.name: notifications(stack.webhook, s.name + "-") for s in SCENARIOS},
            }


def report(results: dict[str, Any]) -> str:
    rows = []
    for scenario in SCENARIOS:
        got = results["scenarios"][scenario.name]
        for manager in ("with", "without"):
            groups = got[manager].values()
            pages = [g for g in groups if g["receiver"] == "pager"]
            rows.append(
                [
                    scenario.name,
                    manager,
                    len(pages),
                    len(groups),
                    ", ".join(sorted({n for g in groups for n in g["alerts"]})) or "-",
                ]
            )
    head = f"{results['nodes']} nodes, settled {results['settle_seconds']} s"
    return head + "\n\n" + table(["scenario", "inhibitions", "pages", "notifications", "alerts"], rows)


# -- cost ----------------------------------------------------------------------------------------


def cost(count: int, minutes: float) -> dict[str, Any]:
    """One healthy fleet of `count` nodes in two clusters at the chart's defaults for `minutes`."""
    fleet = Fleet(nodes(count, ("prod-a", "prod-b")), PROBE_INTERVAL, lambda _n: HEALTHY, 0)
    with tempfile.TemporaryDirectory(prefix="fleet-rules-") as tmp:
        rules = Path(tmp) / "rules.yml"
        shipped = generate.load_config(ROOT / "alerts" / "config.yml")
        rules.write_text(generate.render(shipped)[generate.RULES_FILE])
        with running(fleet, rules, CHART_SCRAPE_INTERVAL, GROUP_TIMING) as stack:
            time.sleep(minutes * 60)
            return measure(stack, rules)


def _stats(answer: dict[str, Any]) -> int:
    return int(answer["data"]["stats"]["samples"]["totalQueryableSamples"])


def _seconds(answer: dict[str, Any]) -> float:
    return float(answer["data"]["stats"]["timings"]["evalTotalTime"])


# The ranges a fleet dashboard is read at, and Grafana's step for each: the range over about
# 1,000 points, never finer than the scrape interval.
RANGES = {"6h": 6 * 3600, "24h": 86400, "7d": 7 * 86400}


def _range_query(stack: Stack, expr: str, seconds: int) -> dict[str, Any]:
    now = time.time()
    step = max(CHART_SCRAPE_INTERVAL, seconds / 1000)
    params = {"query": expr, "start": now - seconds, "end": now, "step": step, "stats": "all"}
    answer: dict[str, Any] = get_json(stack.url + "/api/v1/query_range?" + urllib.parse.urlencode(params))
    return answer


def measure(stack: Stack, rules: Path) -> dict[str, Any]:
    def value(expr: str) -> float:
        return float(stack.query(expr)["data"]["result"][0]["value"][1])

    groups = get_json(stack.url + "/api/v1/rules")["data"]["groups"]
    shipped = yaml.safe_load(rules.read_text())["groups"]
    per_rule = []
    for group in shipped:
        for rule in group["rules"]:
            name = rule.get("record") or rule["alert"]
            per_rule.append((name, _stats(stack.query(rule["expr"], stats="all"))))
    board = json.loads((ROOT / "dashboards" / "spire-health-fleet.json").read_text())
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = fill_dashboard_variables(target["expr"], ".*", rate_interval="2m")
            instant = stack.query(expr, stats="all")
            row: dict[str, Any] = {
                "panel": panel["title"],
                "instant": bool(target.get("instant")),
                "samples": _stats(instant),
                "seconds": _seconds(instant),
            }
            if not target.get("instant"):
                for name, seconds in RANGES.items():
                    answer = _range_query(stack, expr, seconds)
                    row[name] = (_stats(answer), _seconds(answer))
            queries.append(row)
    return {
        "targets": int(value('count(up{job="spire-health-exporter"})')),
        "head_series": int(value("prometheus_tsdb_head_series")),
        "exporter_series": int(value('count({job="spire-health-exporter"})')),
        "rss_bytes": psutil.Process(stack.process.pid).memory_info().rss,
        "groups": [(g["name"], g["evaluationTime"], g["interval"]) for g in groups],
        "rules": per_rule,
        "queries": queries,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    scenarios = sub.add_parser("scenarios")
    scenarios.add_argument("--nodes-per-cluster", type=int, default=60)
    scenarios.add_argument("--time-scale", type=float, default=0.1)
    measured = sub.add_parser("cost")
    measured.add_argument("--nodes", type=int, default=5000)
    measured.add_argument("--minutes", type=float, default=12)
    measured.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.command == "scenarios":
        print(report(run_scenarios(args.nodes_per_cluster, args.time_scale)))
        return 0
    figures = cost(args.nodes, args.minutes)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    print(json.dumps({k: v for k, v in figures.items() if k not in ("rules", "queries")}, indent=1))
    print(table(["rule", "samples"], figures["rules"]))
    print(
        table(
            ["panel", "instant", "samples"],
            [[q["panel"], q["instant"], q["samples"]] for q in figures["queries"]],
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
