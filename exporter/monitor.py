"""The scheduled job that samples the agent process, its cgroup and its HTTP health."""

from __future__ import annotations

from pathlib import Path

from exporter import agent_health, agent_process, cgroup
from exporter.config import Config
from exporter.endpoint import socket_path
from exporter.state import ProbeState


class AgentMonitor:
    def __init__(self, config: Config, state: ProbeState) -> None:
        agent = config.get("agent")
        self.state = state
        self.proc_root = Path(agent["proc_root"])
        self.process_enabled = agent["process"]["enabled"]
        self.cgroups = cgroup.Locator(Path(agent["cgroup"]["root"])) if agent["cgroup"]["enabled"] else None
        self.health = agent["health"]
        self.finder = agent_process.ProcessFinder(
            agent["process"]["name"],
            agent["process"]["cmdline_pattern"],
            agent["process"]["pid_file"],
            agent["proc_root"],
            socket_path(endpoint) if (endpoint := config.get("workload_api", "socket")) else "",
        )

    def __call__(self) -> None:
        if self.process_enabled:
            proc = self.finder.find()
            sample = agent_process.sample(proc, self.proc_root, self.finder.socket_path) if proc else None
            group = cgroup.read(sample.pid, self.proc_root, self.cgroups) if sample and self.cgroups else None
            self.state.set_process(sample, group)
        if self.health["url"]:
            base = self.health["url"].rstrip("/")
            for check, path in (("live", self.health["live_path"]), ("ready", self.health["ready_path"])):
                self.state.set_http_health(check, agent_health.check(base + path, self.health["timeout"]))
