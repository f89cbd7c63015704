"""Wires the pieces in the one direction data flows.

config -> scheduler -> probes -> state -> collector -> HTTP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, ProcessCollector

from exporter.client import WorkloadClient
from exporter.collector import ExporterCollector
from exporter.config import Config, ProbeSettings, split_listen_address
from exporter.logs import event
from exporter.monitor import AgentMonitor
from exporter.names import AGENT_JOB
from exporter.probes import build_probes
from exporter.probes.base import Prober
from exporter.scheduler import Job, Scheduler
from exporter.state import ProbeState, buckets_up_to
from exporter.watch import RotationWatch
from exporter.web import ExporterServer
from exporter.webconfig import WebSecurity

log = logging.getLogger("exporter")
# A job that has not finished a cycle in this many intervals is stalled: /healthz says 503.
STALLED_AFTER_INTERVALS = 3


def probe_job(
    prober: Prober, client: WorkloadClient, settings: ProbeSettings, state: ProbeState
) -> Callable[[], None]:
    def run() -> None:
        state.record(prober(client, settings))

    return run


class Exporter:
    """Everything but the HTTP server, which serve() adds, so tests can run it in-process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        enabled = [s for s in config.probes.values() if s.enabled]
        self.state = ProbeState(
            config.get("limits", "max_spiffe_ids"),
            config.get("limits", "max_trust_domains"),
            buckets_up_to(max((s.timeout for s in enabled), default=config.get("probes", "timeout"))),
        )
        self.client = WorkloadClient(config.endpoint)
        self.probes = build_probes()
        self.monitor = AgentMonitor(config, self.state)
        self.stop_event = threading.Event()
        jobs = []
        for settings in enabled:
            prober = self.probes[settings.name]
            self.state.register(settings.name, prober.codes, settings.timeout, settings.interval)
            jobs.append(
                Job(settings.name, settings.interval, probe_job(prober, self.client, settings, self.state))
            )
        if self.monitor.process_enabled or self.monitor.health["url"]:
            jobs.append(Job(AGENT_JOB, config.get("agent", "sample_interval"), self.monitor))
        for job in jobs:
            # A probe's own exceptions are EXPORTER_ERROR results, so its job's error count can
            # only move if recording itself fails: shown once it does, not as a zero series.
            is_probe = job.name in self.probes
            self.state.register_job(job.name, STALLED_AFTER_INTERVALS * job.interval, not is_probe)
        self.scheduler = Scheduler(jobs, self.state, self.stop_event)
        self.watch = (
            RotationWatch(self.client, self.state, config.get("watch", "max_stream_age"))
            if config.get("watch", "enabled")
            else None
        )
        self.registry = CollectorRegistry()
        self.registry.register(ExporterCollector(self.state, self.monitor.process_enabled))
        # The exporter's own process_* metrics; like the rest of /metrics they are rendered again
        # when the probe state changes, which happens every few seconds.
        ProcessCollector(registry=self.registry)

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
        host, port = server.socket.getsockname()[:2]
        event(log, logging.INFO, "listening", address=f"{host}:{port}", telemetry_path=web["telemetry_path"])
        return server
