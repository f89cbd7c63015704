"""The exporter's own series: build, job errors and the rotation watch."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.collect.families import by_label, one
from exporter.store.own import OwnStore

G, C = GaugeMetricFamily, CounterMetricFamily


class OwnCollector(Collector):
    def __init__(self, store: OwnStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        snap = self.store.snapshot()
        info = G("spire_health_build_info", "Build of this exporter; always 1.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield by_label(
            C,
            "spire_health_job_errors",
            "Exceptions that escaped one of the exporter's own jobs; each is a bug, logged with its type.",
            "job",
            snap.job_errors,
        )
        if snap.watch_up is not None:
            yield one(
                G,
                "spire_health_watch_up",
                "Whether the long-lived FetchX509SVID stream that counts rotations is open and answering "
                "(1) or not (0).",
                int(snap.watch_up),
            )
            yield one(
                C,
                "spire_health_watch_reconnects",
                "Times the rotation watch opened a new FetchX509SVID stream after the previous one broke.",
                snap.watch_reconnects,
            )
        sds = snap.streams.get("sds")
        if sds is not None:
            yield one(
                G,
                "spire_health_sds_stream_up",
                "Whether the long-lived SDS StreamSecrets stream is open and has answered (1) or not (0).",
                int(sds.up),
            )
            yield one(
                C,
                "spire_health_sds_stream_pushes",
                "Answers the agent pushed on the SDS stream after each stream's first: one per new "
                "version of the secrets (a rotated SVID, a changed bundle).",
                sds.pushes,
            )
            yield one(
                C,
                "spire_health_sds_stream_reconnects",
                "Times the SDS watch opened a new StreamSecrets stream after the previous one broke.",
                sds.reconnects,
            )
