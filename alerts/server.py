"""The rules over SPIRE's own server telemetry: the server and its datastore, named as the cause.

SPIRE's Prometheus sink (go-metrics) puts the datastore operation or the RPC in the metric's
name, `spire_server_datastore_<operation>` and `spire_server_rpc_<service>_<method>`, each a
counter by `status` beside an `..._elapsed_time` Summary in milliseconds (quantiles 0.5, 0.9 and
0.99 over a short sliding window, NaN while nothing was timed). Two consequences shape these rules:

- A range function over several names drops the names and leaves series that differ by nothing,
  which Prometheus refuses. So the counters and the 99th percentiles are first recorded with the
  operation or method as a label (and the time in seconds), and the alerts read the recordings.
- A Summary's quantiles are one server's own and do not add up across servers: the worst server's
  is taken (`max`), never an average, and never histogram_quantile, which reads only buckets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DATASTORE_CALLS = "instance_operation:spire_server_datastore_calls:total"
DATASTORE_P99 = "instance_operation:spire_server_datastore_elapsed_seconds:p99"
RPC_CALLS = "instance_method:spire_server_rpc_calls:total"
RPC_P99 = "instance_method:spire_server_rpc_elapsed_seconds:p99"
# Answers that say nothing is wrong with the database: a row absent or already there, a request
# it refused, a caller that gave up (a slow database's symptom, which DatastoreSlow names).
DATASTORE_NOT_FAILED = "OK|NotFound|AlreadyExists|InvalidArgument|Canceled"
# SVID signing answers that are the caller's doing: an entry it may not have, a bad request, a
# caller that gave up.
SIGNING_NOT_FAILED = "OK|InvalidArgument|PermissionDenied|NotFound|Canceled"
SIGNING_METHODS = "svid_v1_svid_(batch_new_x509svid|new_jwtsvid)"
ATTEST = "agent_v1_agent_attest_agent"
Record = Callable[[str, str], str]


def by_name(record: Record, prefix: str, label: str, calls: str, p99: str, sel: str) -> tuple[str, str]:
    """Record the counters named `prefix<x>` and their Summaries' 99th percentiles (in seconds)
    with `label`="<x>"; returns the two recordings' names."""
    counters = record(
        calls,
        f'label_replace({{__name__=~"{prefix}.+", __name__!~".+_elapsed_time(_sum|_count)?", {sel}}}, '
        f'"{label}", "$1", "__name__", "{prefix}(.+)")',
    )
    quantiles = record(
        p99,
        f'max without (status) (label_replace({{__name__=~"{prefix}.+_elapsed_time", {sel}, quantile="0.99"}}, '
        f'"{label}", "$1", "__name__", "{prefix}(.+)_elapsed_time")) / 1000',
    )
    return counters, quantiles


def failing_share(calls: str, matcher: str, not_failed: str, window: str) -> str:
    """Per server, the share of the matched calls in `window` whose status is a failure."""

    def of(*matchers: str) -> str:
        inside = ", ".join(m for m in (matcher, *matchers) if m)
        return f"sum by (cluster, job, instance) (increase({calls}{{{inside}}}[{window}]))"

    failed = 'status!~"%s"' % not_failed
    return f"{of(failed)} / {of()}"


def rules(c: dict[str, Any], record: Record) -> tuple[str, dict[str, str]]:
    """The server alerts' conditions, and the one per cluster (any of the datastore's, or every
    server down) that the node-side pages it explains leave out."""
    a, srv = c["alerts"], c["server_selector"]
    calls, p99 = by_name(record, "spire_server_datastore_", "operation", DATASTORE_CALLS, DATASTORE_P99, srv)
    rpcs, rpc_p99 = by_name(record, "spire_server_rpc_", "method", RPC_CALLS, RPC_P99, srv)

    slow_a, err_a, stuck_a = (a[f"SpireServerDatastore{n}"] for n in ("Slow", "Errors", "Unresponsive"))
    slow = f"max by (cluster, operation) (max_over_time({p99}[{slow_a['window']}])) > {slow_a['seconds']}"
    errors = f"{failing_share(calls, '', DATASTORE_NOT_FAILED, err_a['window'])} > {err_a['ratio']}"
    # A database that stops answering fails nothing: its calls never end, so none is counted. Only
    # over a window the recording covers whole (it had series a window ago): right after
    # Prometheus or the server starts, two samples a few seconds apart may hold no call.
    sw = stuck_a["window"]
    stuck = (
        f"sum by (cluster, job, instance) (increase({calls}[{sw}])) == 0 "
        f"and on (cluster, job, instance) up{{{srv}}} == 1 "
        f"and on (cluster, job, instance) group by (cluster, job, instance) ({calls} offset {sw})"
    )
    all_down = f"count by (cluster) (up{{{srv}}} == 0) == count by (cluster) (up{{{srv}}})"
    datastore = f"({slow}) or ({errors}) or ({stuck})"

    sign_f, sign_s = a["SpireServerSigningFailing"], a["SpireServerSigningSlow"]
    signing = f'method=~"{SIGNING_METHODS}"'
    sign_failing = (
        f"{failing_share(rpcs, signing, SIGNING_NOT_FAILED, sign_f['window'])} > {sign_f['ratio']} "
        f"unless on (cluster) count by (cluster) ({datastore})"
    )
    sign_slow = (
        f"max by (cluster, method) (max_over_time({rpc_p99}{{{signing}}}[{sign_s['window']}])) > {sign_s['seconds']} "
        f"unless on (cluster) count by (cluster) ({datastore})"
    )
    att = a["SpireServerNodeAttestationFailing"]
    attestation = (
        f'sum by (cluster, status) (increase({rpcs}{{method="{ATTEST}", status!="OK"}}[{att["window"]}])) '
        f">= {att['failures']} unless on (cluster) count by (cluster) ({datastore})"
    )
    fed = a["SpireServerFederationFetchFailing"]
    fetches = "spire_server_bundle_manager_fetch_federated_bundle{%s, status%%s}[%s]" % (srv, fed["window"])
    federation = (
        "sum by (cluster, trust_domain_id) (increase(%s)) > 0 unless sum by (cluster, trust_domain_id) (increase(%s)) > 0"
        % (fetches % '!="OK"', fetches % '="OK"')
    )
    cache = a["SpireServerEntryCacheBehind"]
    reload = f'spire_server_entry_cache_reload_elapsed_time{{{srv}, quantile="0.99"}}'
    skipped = (
        f"spire_server_entry_skipped_entry_event_ids_count{{{srv}}}",
        f"spire_server_node_skipped_node_event_ids_count{{{srv}}}",
    )
    # Full reloads (the default) slower than their interval, or, with the events-based cache,
    # event IDs it keeps polling for because they never showed up.
    cache_behind = (
        f"max by (cluster, job, instance) (max_over_time({reload}[{cache['window']}])) / 1000 > {cache['reload_seconds']} "
        + "".join(
            f"or max by (cluster, job, instance) (min_over_time({g}[{cache['window']}])) > {cache['skipped']} "
            for g in skipped
        ).rstrip()
    )
    return f"count by (cluster) ({datastore} or ({all_down}))", {
        "datastore_slow": slow,
        "datastore_errors": errors,
        "datastore_stuck": stuck,
        "servers_down": all_down,
        "signing_failing": sign_failing,
        "signing_slow": sign_slow,
        "attestation_failing": attestation,
        "federation_failing": federation,
        "entry_cache_behind": cache_behind,
    }
