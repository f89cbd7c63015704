"""Wires the pieces in the one direction data flows.

config -> scheduler -> probes -> state -> collector -> HTTP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from exporter.client import WorkloadClient
from exporter.collector import ExporterCollector
from exporter.config import HEALTH_PROBE, ROUNDTRIP_PROBE, Config, ProbeSettings, split_listen_address
from exporter.logs import event
from exporter.monitor import AgentMonitor
from exporter.probes import build_probes
from exporter.probes.base import Probe
from exporter.probes.health_check import NOT_SERVING
from exporter.scheduler import Job, Scheduler
from exporter.state import STALE_TOKEN, ProbeState
from exporter.watch import RotationWatch
from exporter.web import ExporterServer
from exporter.webconfig import WebSecurity

log = logging.getLogger("exporter")
# Failure codes of a probe's own, shown at zero from the start like the common ones.
EXTRA_CODES = {ROUNDTRIP_PROBE: (STALE_TOKEN,), HEALTH_PROBE: (NOT_SERVING,)}


def probe_job(
    probe: Probe, client: WorkloadClient, settings: ProbeSettings, state: ProbeState
) -> Callable[[], None]:
    def run() -> None:
        state.record(probe(client, settings))

    return run


class Exporter:
    """Everything but the HTTP server, which serve() adds, so tests can run it in-process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = ProbeState(
            config.get("limits", "max_spiffe_ids"), config.get("limits", "max_trust_domains")
        )
        self.client = WorkloadClient(config.endpoint)
        self.probes = build_probes()
        self.monitor = AgentMonitor(config, self.state)
        self.stop_event = threading.Event()
        jobs = []
        for name, settings in config.probes.items():
            if settings.enabled:
                self.state.register(name, EXTRA_CODES.get(name, ()))
                jobs.append(
                    Job(
                        name,
                        settings.interval,
                        probe_job(self.probes[name], self.client, settings, self.state),
                    )
                )
        if self.monitor.process_enabled or self.monitor.health["url"]:
            jobs.append(Job("agent", config.get("agent", "sample_interval"), self.monitor))
        self.scheduler = Scheduler(jobs, self.stop_event)
        self.watch = (
            RotationWatch(self.client, self.state, config.get("watch", "max_stream_age"))
            if config.get("watch", "enabled")
            else None
        )
        self.registry = CollectorRegistry()
        self.registry.register(ExporterCollector(self.state, self.monitor.process_enabled))

    def start(self) -> None:
        self.scheduler.start()
        if self.watch:
            self.watch.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.watch:
            self.watch.stop()
        self.scheduler.stop()
        self.client.close()

    def serve(self, security: WebSecurity | None = None) -> ExporterServer:
        web = self.config.get("web")
        server = ExporterServer(
            split_listen_address(web["listen_address"]),
            self.registry,
            self.state,
            web["telemetry_path"],
            web["max_connections"],
            security,
        )
        host, port = server.server_address[:2]
        event(log, logging.INFO, "listening", address=f"{host}:{port}", telemetry_path=web["telemetry_path"])
        return server
