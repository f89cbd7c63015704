"""The scheduled job that samples the agent process, its cgroup and its HTTP health."""

from __future__ import annotations

from pathlib import Path

from exporter.agent import cgroup, health, process
from exporter.config import Agent
from exporter.endpoint import socket_path
from exporter.store.agent import AgentStore

JOB = "agent"


class AgentMonitor:
    def __init__(self, agent: Agent, endpoint: str, store: AgentStore) -> None:
        self.store = store
        self.proc_root = Path(agent.proc_root)
        self.process_enabled = agent.process.enabled
        self.cgroups = cgroup.Locator(Path(agent.cgroup.root)) if agent.cgroup.enabled else None
        self.health = agent.health
        self.finder = process.ProcessFinder(
            agent.process.name,
            agent.process.cmdline_pattern,
            agent.process.pid_file,
            agent.proc_root,
            socket_path(endpoint) if endpoint else "",
        )

    @property
    def enabled(self) -> bool:
        return self.process_enabled or bool(self.health.url)

    def __call__(self) -> None:
        if self.process_enabled:
            proc = self.finder.find()
            sample = process.sample(proc, self.proc_root, self.finder.socket_path) if proc else None
            group = cgroup.read(sample.pid, self.proc_root, self.cgroups) if sample and self.cgroups else None
            self.store.set_process(sample, group)
        if self.health.url:
            base = self.health.url.rstrip("/")
            for check, path in (("live", self.health.live_path), ("ready", self.health.ready_path)):
                self.store.set_http_health(check, health.check(base + path, self.health.timeout))
