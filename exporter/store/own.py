"""The exporter's own health: whether each job keeps completing cycles, and its long-lived streams."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from exporter.store.base import Store


@dataclass
class JobHealth:
    max_quiet: float  # seconds without a completed cycle before the job counts as stalled
    last_done: float  # time.monotonic() of the latest completed cycle (or of registration)
    errors_at_zero: bool  # export the error count before the first error
    errors: int = 0


@dataclass(frozen=True)
class StreamHealth:
    up: bool
    reconnects: int = 0
    pushes: int = 0  # answers after a stream's first: what the agent sent on its own


@dataclass(frozen=True)
class OwnView:
    job_errors: dict[str, int]
    streams: dict[str, StreamHealth]  # by watch ("x509", "sds"); only those that run

    @property
    def watch_up(self) -> bool | None:  # the X.509 rotation watch; None when it does not run
        x509 = self.streams.get("x509")
        return None if x509 is None else x509.up

    @property
    def watch_reconnects(self) -> int:
        x509 = self.streams.get("x509")
        return 0 if x509 is None else x509.reconnects


class OwnStore(Store):
    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[str, JobHealth] = {}
        self._streams: dict[str, StreamHealth] = {}

    def register_job(self, name: str, max_quiet: float, errors_at_zero: bool = True) -> None:
        with self._write():
            self._jobs[name] = JobHealth(max_quiet, time.monotonic(), errors_at_zero)

    def job_done(self, name: str) -> None:
        # A heartbeat: nothing exported changes, so the version stays.
        with self._lock:
            if name in self._jobs:
                self._jobs[name].last_done = time.monotonic()

    def job_failed(self, name: str) -> None:
        with self._write():
            if name in self._jobs:
                self._jobs[name].errors += 1

    def stalled_jobs(self) -> list[str]:
        """Jobs that have not completed a cycle within their allowance: their figures are frozen."""
        now = time.monotonic()
        with self._lock:
            return sorted(n for n, j in self._jobs.items() if now - j.last_done > j.max_quiet)

    def set_stream_up(self, stream: str, up: bool) -> None:
        with self._write():
            self._streams[stream] = replace(self._streams.get(stream, StreamHealth(up)), up=up)

    def count_stream_reconnect(self, stream: str) -> None:
        with self._write():
            health = self._streams.get(stream, StreamHealth(False))
            self._streams[stream] = replace(health, reconnects=health.reconnects + 1)

    def count_stream_push(self, stream: str) -> None:
        with self._write():
            health = self._streams.get(stream, StreamHealth(True))
            self._streams[stream] = replace(health, pushes=health.pushes + 1)

    def set_watch_up(self, up: bool) -> None:
        self.set_stream_up("x509", up)

    def snapshot(self) -> OwnView:
        with self._lock:
            return OwnView(
                {n: j.errors for n, j in self._jobs.items() if j.errors or j.errors_at_zero},
                dict(self._streams),
            )
