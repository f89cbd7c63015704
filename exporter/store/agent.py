"""The agent as sampled from outside: its process, its cgroup, its HTTP health checks."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from exporter.logs import event
from exporter.store.base import Store

log = logging.getLogger("exporter.state")


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    rss: int
    peak_rss: int | None
    cpu_seconds: float
    open_fds: int | None
    threads: int
    start_time: float
    socket_connections: int | None = None


@dataclass(frozen=True)
class CgroupSample:
    version: int
    usage: int | None
    # usage minus inactive file cache, the kubelet's working set: what memory pressure can't reclaim
    working_set: int | None
    limit: int | None  # None: unlimited
    peak: int | None
    oom_kills: int | None


@dataclass(frozen=True)
class AgentView:
    http_health: dict[str, bool]
    process: ProcessSample | None
    process_up: bool | None  # None: not sampled yet
    cgroup: CgroupSample | None


class AgentStore(Store):
    def __init__(self) -> None:
        super().__init__()
        self._http_health: dict[str, bool] = {}
        self._process: ProcessSample | None = None
        self._process_up: bool | None = None
        self._cgroup: CgroupSample | None = None

    def set_http_health(self, check: str, healthy: bool) -> None:
        with self._write():
            self._http_health[check] = healthy

    def set_process(self, sample: ProcessSample | None, cgroup: CgroupSample | None) -> None:
        with self._write():
            before = self._process
            self._process_up = sample is not None
            self._process = sample
            self._cgroup = cgroup
        if (before is None) != (sample is None) or (before and sample and before.pid != sample.pid):
            if sample:
                event(log, logging.INFO, "agent process found", pid=sample.pid)
            else:
                event(log, logging.WARNING, "agent process not found")

    def snapshot(self) -> AgentView:
        with self._lock:
            return AgentView(dict(self._http_health), self._process, self._process_up, self._cgroup)
