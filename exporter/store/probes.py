"""Per-probe counts, latency histogram, and latest result; the transition log lines.

Bounded: one entry per registered probe, and per (code, reason): a gRPC code name or one of the
probes' own codes, and for UNAVAILABLE one of exporter.unavailable.REASONS.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, replace

from exporter.answers import INVALID_RESPONSE
from exporter.logs import event
from exporter.result import EXPORTER_ERROR, OK, ProbeResult
from exporter.store.base import Store

# Present from the start so that rate() and increase() see the first failure.
INITIAL_CODES = (
    OK,
    "DEADLINE_EXCEEDED",
    "UNAVAILABLE",
    "PERMISSION_DENIED",
    INVALID_RESPONSE,
    EXPORTER_ERROR,
)
# Latency buckets (seconds): fine where a healthy agent answers from its cache (1-5 ms), then
# 1-5-10 steps through server round trips and slow attestation, with 0.5 s (the latency alert's
# threshold) an edge. Only those below the largest configured deadline can ever fill.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)

log = logging.getLogger("exporter.state")


def buckets_up_to(deadline: float) -> tuple[float, ...]:
    """The latency buckets below `deadline`, then the deadline itself: no bucket stays empty forever."""
    return (*(b for b in LATENCY_BUCKETS if b < deadline), deadline)


Outcome = tuple[str, str]  # (code, reason); reason is "" except for UNAVAILABLE answers


@dataclass
class RpcStats:
    counts: dict[Outcome, int]
    buckets: list[int]
    timeout: float | None = None
    interval: float | None = None
    observations: int = 0
    duration_sum: float = 0.0
    last: ProbeResult | None = None
    last_success: float | None = None


class ProbeStore(Store):
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        super().__init__()
        self.buckets = tuple(buckets)
        self._rpcs: dict[str, RpcStats] = {}

    def register(
        self, rpc: str, extra_codes: tuple[str, ...] = (), timeout: float | None = None,
        interval: float | None = None,
    ) -> None:  # fmt: skip
        """Make a probe's series visible at zero before its first run."""
        with self._write():
            stats = self._stats(rpc)
            stats.timeout = timeout
            stats.interval = interval
            for code in extra_codes:
                stats.counts.setdefault((code, ""), 0)

    def _stats(self, rpc: str) -> RpcStats:
        if rpc not in self._rpcs:
            initial = {(code, ""): 0 for code in INITIAL_CODES}
            self._rpcs[rpc] = RpcStats(initial, [0] * len(self.buckets))
        return self._rpcs[rpc]

    def record(self, result: ProbeResult) -> None:
        with self._write():
            stats = self._stats(result.rpc)
            previous = stats.last
            outcome = (result.code, result.reason)
            stats.counts[outcome] = stats.counts.get(outcome, 0) + 1
            stats.last = result
            if result.ok:
                stats.observations += 1
                stats.duration_sum += result.duration
                i = bisect.bisect_left(self.buckets, result.duration)
                if i < len(self.buckets):
                    stats.buckets[i] += 1
                stats.last_success = result.finished_at
        _log_transition(previous, result)

    def snapshot(self) -> dict[str, RpcStats]:
        with self._lock:
            return {
                k: replace(v, counts=dict(v.counts), buckets=list(v.buckets)) for k, v in self._rpcs.items()
            }


def _log_transition(previous: ProbeResult | None, result: ProbeResult) -> None:
    """One line per change of health, failure code or reason, not one per probe (except at debug)."""
    if log.isEnabledFor(logging.DEBUG):
        event(
            log,
            logging.DEBUG,
            "probe done",
            rpc=result.rpc,
            code=result.code,
            duration_seconds=result.duration,
        )
    if previous is not None and (previous.code, previous.reason) == (result.code, result.reason):
        return
    if result.ok:
        if previous is not None:
            event(log, logging.INFO, "probe recovered", rpc=result.rpc, previous_code=previous.code)
    else:
        event(
            log, logging.WARNING, "probe failing", rpc=result.rpc, code=result.code,
            **({"reason": result.reason} if result.reason else {}),
            duration_seconds=round(result.duration, 4), error=result.message,
        )  # fmt: skip
