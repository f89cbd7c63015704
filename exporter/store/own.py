"""The exporter's own health: whether each job keeps completing cycles, and the watch stream."""

from __future__ import annotations

import time
from dataclasses import dataclass

from exporter.store.base import Store


@dataclass
class JobHealth:
    max_quiet: float  # seconds without a completed cycle before the job counts as stalled
    last_done: float  # time.monotonic() of the latest completed cycle (or of registration)
    errors_at_zero: bool  # export the error count before the first error
    errors: int = 0


@dataclass(frozen=True)
class OwnView:
    job_errors: dict[str, int]
    watch_up: bool | None  # None: no watch
    watch_reconnects: int


class OwnStore(Store):
    def __init__(self) -> None:
        super().__init__()
        self._jobs: dict[str, JobHealth] = {}
        self._watch_up: bool | None = None
        self._watch_reconnects = 0

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

    def set_watch_up(self, up: bool) -> None:
        with self._write():
            self._watch_up = up

    def count_watch_reconnect(self) -> None:
        with self._write():
            self._watch_reconnects += 1

    def snapshot(self) -> OwnView:
        with self._lock:
            return OwnView(
                {n: j.errors for n, j in self._jobs.items() if j.errors or j.errors_at_zero},
                self._watch_up,
                self._watch_reconnects,
            )
