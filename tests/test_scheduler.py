"""The scheduler: jobs spread over the interval, missed ticks skipped, a raising job counted."""

from __future__ import annotations

import itertools
import time

from exporter.scheduler import Job, Scheduler
from exporter.store import State


def test_scheduler_spreads_jobs_and_skips_missed_ticks() -> None:
    starts: dict[str, list[float]] = {}
    t0 = time.monotonic()

    def job(name: str, sleep: float = 0.0):
        def run() -> None:
            starts.setdefault(name, []).append(time.monotonic() - t0)
            time.sleep(sleep)

        return run

    def broken() -> None:
        raise KeyError("a bug")

    jobs = [Job(f"j{i}", 1.0, job(f"j{i}")) for i in range(4)] + [
        Job("slow", 1.0, job("slow", sleep=2.5)),
        Job("broken", 1.0, broken),
    ]
    state = State()
    for j in jobs:
        state.own.register_job(j.name, 2.0)
    scheduler = Scheduler(jobs, state.own)
    scheduler.start()
    time.sleep(4.2)
    # A job that raises keeps its schedule, counts each error, and never completes a cycle.
    assert state.own.stalled_jobs() == ["broken"]
    scheduler.stop()
    assert state.own.snapshot().job_errors["broken"] >= 4
    assert state.own.snapshot().job_errors["j0"] == 0
    quiet = State()
    quiet.own.register_job("probe", 1.0, errors_at_zero=False)
    assert "probe" not in quiet.own.snapshot().job_errors
    quiet.own.job_failed("probe")
    assert quiet.own.snapshot().job_errors["probe"] == 1
    firsts = sorted(starts[f"j{i}"][0] for i in range(4))
    gaps = [b - a for a, b in itertools.pairwise(firsts)]
    assert all(0.15 <= g <= 0.25 for g in gaps), firsts  # 1 s spread over six jobs
    assert len(starts["j0"]) >= 4
    slow = starts["slow"]
    assert len(slow) == 2 and slow[1] - slow[0] >= 2.9  # the missed ticks are skipped, not run in a burst
