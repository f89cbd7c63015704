"""The fleet dashboard's SPIRE server row: the server and its datastore, from SPIRE's own server
telemetry through the rules' recordings (alerts/server.py), which carry the datastore operation
and the RPC method as labels and the 99th percentiles in seconds.

A Summary's quantile is one server's: the panels show the worst server's (`max`), as the alerts
read them, never a sum or an average across servers.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import stat, timeseries

from alerts import server
from dashboards.panels import SERVER_SEL, Panel, panel

SIGNING = f'{SERVER_SEL}, method=~"{server.SIGNING_METHODS}"'


def server_panels() -> list[Panel]:
    return [
        panel(
            stat.Panel,
            "Servers answering",
            [(f"count(spire_server_uptime_in_ms{{{SERVER_SEL}}})", "")],
            "short",
            "SPIRE servers whose telemetry Prometheus scrapes now (spire_server_uptime_in_ms).",
            "SpireServerInstanceDown",
            w=4,
            thresholds=[("red", None), ("green", 1)],
        ),
        panel(
            timeseries.Panel,
            "Datastore p99 by operation (slowest server)",
            [(f"topk(8, max by (operation) ({server.DATASTORE_P99}{{{SERVER_SEL}}}))", "{{operation}}")],
            "s",
            "The eight slowest datastore operations, each at the 99th percentile of the slowest server "
            "(SPIRE's spire_server_datastore_<operation>_elapsed_time Summaries, over their last few "
            "seconds; gaps are idle time). The round trip rises with these when the database is the cause.",
            "SpireServerDatastoreSlow",
            w=10,
        ),
        panel(
            timeseries.Panel,
            "Datastore calls by server and result",
            [
                (
                    f"sum by (instance, status) (rate({server.DATASTORE_CALLS}{{{SERVER_SEL}}}[$__rate_interval]))",
                    "{{instance}} {{status}}",
                )
            ],
            "ops",
            "Datastore calls completed per second. Anything but OK (NotFound is a lookup that found "
            "nothing) is a failing database; a server at zero while up has a database that stopped answering.",
            "SpireServerDatastoreErrors",
            w=10,
        ),
        panel(
            timeseries.Panel,
            "SVID signing: p99 and failures",
            [
                (f"max by (method) ({server.RPC_P99}{{{SIGNING}}})", "{{method}} p99 (s)"),
                (
                    f'sum by (method, status) (rate({server.RPC_CALLS}{{{SIGNING}, status!="OK"}}[$__rate_interval])) '
                    f"or sum by (method) (rate({server.RPC_CALLS}{{{SIGNING}}}[$__rate_interval])) * 0",
                    "{{method}} {{status}}/s",
                ),
            ],
            "short",
            "BatchNewX509SVID and NewJWTSVID on the slowest server (seconds), and their failures per second "
            "by status (0 while none fail).",
            "SpireServerSigningFailing",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "Node attestations by result",
            [
                (
                    f'sum by (status) (rate({server.RPC_CALLS}{{{SERVER_SEL}, method="{server.ATTEST}"}}[$__rate_interval]))',
                    "{{status}}",
                )
            ],
            "ops",
            "Agents attesting to the servers per second, by status: anything but OK is an agent without identity.",
            "SpireServerNodeAttestationFailing",
            w=8,
        ),
        panel(
            timeseries.Panel,
            "Entry cache reload and federated bundle fetches",
            [
                (
                    f'max(spire_server_entry_cache_reload_elapsed_time{{{SERVER_SEL}, quantile="0.99"}}) / 1000',
                    "entry cache full reload p99 (s)",
                ),
                (
                    f"sum by (trust_domain_id, status) (increase(spire_server_bundle_manager_fetch_federated_bundle"
                    f"{{{SERVER_SEL}}}[$__rate_interval]))",
                    "{{trust_domain_id}} fetches {{status}}",
                ),
            ],
            "short",
            "The full reload of the registration entry cache on the slowest server, which must stay under its "
            "interval (5 s by default); and fetches of federated bundles by result.",
            "SpireServerEntryCacheBehind",
            w=8,
        ),
    ]
