"""Wires the pieces in the one direction data flows.

config -> scheduler -> probes -> state -> collectors -> HTTP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector

from exporter import collect
from exporter.agent.monitor import JOB as AGENT_JOB
from exporter.agent.monitor import AgentMonitor
from exporter.client import WorkloadClient
from exporter.config import Config, split_listen_address
from exporter.logs import event
from exporter.probes import spec
from exporter.probes.sds_fetch_secrets import NAME as SDS
from exporter.probes.sds_fetch_secrets import SdsSettings
from exporter.result import ProbeResult
from exporter.scheduler import Job, Scheduler
from exporter.sds_watch import SdsWatch
from exporter.settings import ProbeSettings
from exporter.store import State
from exporter.store.probes import buckets_up_to
from exporter.watch import RotationWatch, StreamWatch
from exporter.web import ExporterServer
from exporter.webconfig import WebSecurity

log = logging.getLogger("exporter")
# A job that has not finished a cycle in this many intervals is stalled: /healthz says 503.
STALLED_AFTER_INTERVALS = 3


def probe_job(
    probe: Callable[[WorkloadClient, Any], ProbeResult],
    client: WorkloadClient,
    settings: ProbeSettings,
    state: State,
) -> Callable[[], None]:
    def run() -> None:
        state.record(probe(client, settings))

    return run


class Exporter:
    """Everything but the HTTP server, which serve() adds, so tests can run it in-process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        enabled = config.enabled()
        deadline = max((s.timeout for _, s in enabled), default=config.probes.timeout)
        self.state = State(
            config.limits.max_spiffe_ids, config.limits.max_trust_domains, buckets_up_to(deadline)
        )
        self.client = WorkloadClient(config.endpoint, deadline, config.watch.keepalive)
        self.monitor = AgentMonitor(config.agent, config.endpoint, self.state.agent)
        self.stop_event = threading.Event()
        jobs = []
        for name, settings in enabled:
            own = spec(name)
            self.state.probes.register(name)
            jobs.append(
                Job(name, settings.interval, probe_job(own.build(), self.client, settings, self.state))
            )
        if self.monitor.enabled:
            jobs.append(Job(AGENT_JOB, config.agent.sample_interval, self.monitor))
        for job in jobs:
            # A probe's own exceptions are EXPORTER_ERROR results, so its job's error count can
            # only move if recording itself fails: shown once it does, not as a zero series.
            self.state.own.register_job(
                job.name, STALLED_AFTER_INTERVALS * job.interval, job.name not in config.each
            )
        self.scheduler = Scheduler(jobs, self.state.own, self.stop_event)
        self.watches: list[StreamWatch] = []
        if config.watch.enabled:
            self.watches.append(RotationWatch(self.client, self.state, config.watch.max_stream_age))
        sds = dict(enabled).get(SDS)
        if isinstance(sds, SdsSettings) and sds.stream:
            self.watches.append(SdsWatch(self.client, self.state.own, sds, config.watch.max_stream_age))
        self.registry = CollectorRegistry()
        collect.register(self.registry, self.state, self.monitor.process_enabled)
        # The exporter's own process_* metrics; like the rest of /metrics they are rendered again
        # when the state changes, which happens every few seconds.
        ProcessCollector(registry=self.registry)

    def start(self) -> None:
        self.scheduler.start()
        for watch in self.watches:
            watch.start()

    def stop(self) -> None:
        self.stop_event.set()
        for watch in self.watches:
            watch.stop()
        self.scheduler.stop()
        self.client.close()

    def serve(self, security: WebSecurity | None = None) -> ExporterServer:
        web = self.config.web
        server = ExporterServer(
            split_listen_address(web.listen_address),
            self.registry,
            self.state,
            web.telemetry_path,
            web.max_connections,
            security,
        )
        host, port = server.socket.getsockname()[:2]
        event(log, logging.INFO, "listening", address=f"{host}:{port}", telemetry_path=web.telemetry_path)
        return server
