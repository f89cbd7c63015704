"""Identity series: SVID validity and rotations, trust bundle CAs and JWT keys, and the label caps."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.collect.families import by_label, one
from exporter.store.identities import IdentityStore


class IdentityCollector(Collector):
    def __init__(self, store: IdentityStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        snap = self.store.snapshot()
        kind_id = ["kind", "spiffe_id"]
        expiry = GaugeMetricFamily(
            "spire_health_svid_expiry_timestamp_seconds",
            "Unix time at which the exporter's SVID expires.",
            labels=kind_id,
        )
        issued = GaugeMetricFamily(
            "spire_health_svid_issued_timestamp_seconds",
            "Unix time at which the exporter's SVID was issued.",
            labels=kind_id,
        )
        for (kind, spiffe_id), svid in sorted(snap.svids.items()):
            expiry.add_metric([kind, spiffe_id], svid.expiry)
            issued.add_metric([kind, spiffe_id], svid.issued)
        rotations = by_label(
            CounterMetricFamily,
            "spire_health_x509_svid_rotations",
            "X.509-SVID rotations seen on the long-lived FetchX509SVID stream.",
            "spiffe_id",
            snap.rotations,
        )
        td = ["trust_domain"]
        certs = GaugeMetricFamily(
            "spire_health_trust_bundle_certificates", "CA certificates in the X.509 trust bundle.", labels=td
        )
        ca_issued = GaugeMetricFamily(
            "spire_health_trust_bundle_latest_issued_timestamp_seconds",
            "Unix time from which the newest CA certificate in the X.509 trust bundle is valid.",
            labels=td,
        )
        ca_latest = GaugeMetricFamily(
            "spire_health_trust_bundle_latest_expiry_timestamp_seconds",
            "Unix time at which the newest CA certificate in the X.509 trust bundle expires.",
            labels=td,
        )
        keys = GaugeMetricFamily("spire_health_jwt_bundle_keys", "Keys in the JWT bundle (JWKS).", labels=td)
        for (kind, name), bundle in sorted(snap.bundles.items()):
            if kind == "x509":
                certs.add_metric([name], bundle.items)
                if bundle.latest_expiry is not None and bundle.latest_issued is not None:
                    ca_latest.add_metric([name], bundle.latest_expiry)
                    ca_issued.add_metric([name], bundle.latest_issued)
            else:
                keys.add_metric([name], bundle.items)
        federated = by_label(
            GaugeMetricFamily,
            "spire_health_federated_bundle_changed_timestamp_seconds",
            "Unix time at which the X.509 bundle of a federated trust domain last changed, as the "
            "exporter saw it (or was first seen).",
            "trust_domain",
            snap.federated_changed,
        )
        yield from (expiry, issued, rotations, certs, ca_latest, ca_issued, keys, federated)
        yield one(
            GaugeMetricFamily,
            "spire_health_spiffe_ids_over_limit",
            "SPIFFE IDs in the agent's latest answers that are not exported because of "
            "limits.max_spiffe_ids.",
            snap.dropped_spiffe_ids,
        )
        yield one(
            GaugeMetricFamily,
            "spire_health_trust_domains_over_limit",
            "Trust domains in the agent's latest bundles that are not exported because of "
            "limits.max_trust_domains.",
            snap.dropped_trust_domains,
        )
