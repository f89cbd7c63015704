#!/usr/bin/env python3
"""Generates the Grafana dashboards (the committed JSON is what users import).

    python -m dashboards.generate [--out DIR]

Built with grafana-foundation-sdk, Grafana's typed builders generated from its schema, so every
panel, unit, threshold and query format is checked against what Grafana accepts. The fleet
dashboard summarises thousands of nodes (stat panels, top-k and bottom-k tables over the chosen
range, no line per node); the node dashboard keeps the detail. Panels are built in panels.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

from dashboards import panels as p
from dashboards.server_panels import server_panels

HERE = Path(__file__).resolve().parent
# The Helm chart can only read files inside itself, so it gets a copy of the dashboards.
CHART_FILES = HERE.parent / "deploy" / "helm" / "spire-health-exporter" / "files" / "dashboards"


def variables(node_multi: bool) -> list[db.QueryVariable | db.DatasourceVariable | db.ConstantVariable]:
    def query(name: str, expr: str, multi: bool) -> db.QueryVariable:
        variable = (
            db.QueryVariable(name)
            .label(name.capitalize())
            .datasource(p.DS)
            .query(expr)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .include_all(multi)
            .multi(multi)
        )
        if multi:
            variable = variable.all_value(".*").current(
                dm.VariableOption(selected=True, text=["All"], value=["$__all"])
            )
        return variable

    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        query("cluster", "label_values(spire_health_build_info, cluster)", True),
        query("job", 'label_values(spire_health_build_info{cluster=~"$cluster"}, job)', True),
        query(
            "node",
            'label_values(spire_health_build_info{cluster=~"$cluster", job=~"$job"}, node)',
            node_multi,
        ),
        # Hidden: the SPIRE agent telemetry targets on the chosen nodes (panels.AGENT_SEL).
        query(
            "agent",
            f'label_values({p.AGENT_NODE}{{cluster=~"$cluster", node=~"$node"}}, instance)',
            True,
        ).hide(dm.VariableHide.HIDE_VARIABLE),
        # Hidden; the chart sets it from prometheusRule.sloObjective, as the rules have it.
        db.ConstantVariable(p.SLO.lstrip("$")).value(str(p.OBJECTIVE)),
    ]


def dashboard(uid: str, title: str, description: str, rows: p.Rows, node_multi: bool) -> dict[str, Any]:
    builder = (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["spire", "spiffe", "spire-health-exporter"])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("")
        .annotation(
            db.AnnotationQuery()
            .name("Agent restarts")
            .datasource(p.DS)
            .enable(True)
            .icon_color("orange")
            .expr(f"changes(spire_health_agent_process_start_time_seconds{{{p.SEL}}}[2m]) > 0")
        )
        .link(db.DashboardLink("Runbooks").type(dm.DashboardLinkType.LINK).url(p.RUNBOOKS).target_blank(True))
    )
    for variable in variables(node_multi):
        builder = builder.with_variable(variable)
    for title_, panels in rows:
        builder = builder.with_row(db.Row(title_))
        for panel in panels:
            builder = builder.with_panel(panel)
    built: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    for number, panel_json in enumerate(built["panels"], start=1):
        panel_json["id"] = number
    return built


def fleet() -> dict[str, Any]:
    return dashboard(
        "spire-health-fleet",
        "SPIRE agents: fleet health",
        "Every node's SPIRE agent as its workloads see it, summarised for thousands of nodes: what fails, "
        "where, and what SPIRE itself reports. Open the node dashboard for one node's detail.",
        [*p.fleet_rows(), ("SPIRE server and datastore", server_panels())],
        node_multi=True,
    )


def node() -> dict[str, Any]:
    return dashboard(
        "spire-health-node",
        "SPIRE agent: node drill-down",
        "One node's SPIRE agent as its workloads see it: every RPC, the agent's process and memory, "
        "SPIRE's own telemetry, and the exporter's identities.",
        p.node_rows(),
        node_multi=False,
    )


def render() -> dict[str, str]:
    return {
        "spire-health-fleet.json": json.dumps(fleet(), indent=2) + "\n",
        "spire-health-node.json": json.dumps(node(), indent=2) + "\n",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    for name, text in render().items():
        (args.out / name).write_text(text)
        if args.out == HERE:
            CHART_FILES.mkdir(parents=True, exist_ok=True)
            (CHART_FILES / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
