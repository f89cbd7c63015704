"""Runs jobs in the background on fixed schedules, never at scrape time.

Each job has its own thread, so a call hung until its deadline delays only that job. Jobs of
one cycle start at evenly spread offsets instead of in a burst, and a job that overruns its
interval skips the ticks it missed rather than running back to back. Every completed cycle and
every exception a job lets escape is reported, so a job that stops can be seen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from exporter.logs import describe, event

log = logging.getLogger("exporter.scheduler")


@dataclass(frozen=True)
class Job:
    name: str
    interval: float
    run: Callable[[], None]


class JobRecorder(Protocol):
    def job_done(self, name: str) -> None: ...

    def job_failed(self, name: str) -> None: ...


class Scheduler:
    def __init__(self, jobs: list[Job], recorder: JobRecorder, stop: threading.Event | None = None) -> None:
        self.jobs = jobs
        self.recorder = recorder
        self.stop_event = stop or threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        spread = min((j.interval for j in self.jobs), default=0.0)
        for i, job in enumerate(self.jobs):
            offset = spread * i / max(len(self.jobs), 1)
            thread = threading.Thread(
                target=self._loop, args=(job, offset), name=f"job-{job.name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self.stop_event.set()
        end = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))

    def _loop(self, job: Job, offset: float) -> None:
        next_run = time.monotonic() + offset
        while not self.stop_event.wait(max(0.0, next_run - time.monotonic())):
            try:
                job.run()
            except Exception as e:  # a bug in one job must not end its schedule
                self.recorder.job_failed(job.name)
                event(log, logging.ERROR, "job raised", job=job.name, error=describe(e))
            else:
                self.recorder.job_done(job.name)
            next_run += job.interval
            now = time.monotonic()
            if next_run < now:
                missed = int((now - next_run) // job.interval) + 1
                next_run += missed * job.interval
