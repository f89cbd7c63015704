"""Per-probe counts, latency histogram, and latest result; the transition log lines.

Bounded: one entry per registered probe, and per (code, reason): a gRPC code name or one of the
probes' own codes, and for UNAVAILABLE one of exporter.unavailable.REASONS.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, replace

from exporter.logs import event
from exporter.result import OK, ProbeResult
from exporter.store.base import Store

# Present from the start so that rate() and increase() see the first deadline; other failure
# codes appear at their first count. Each series at zero costs every node one series, and
# across a fleet of thousands the zeros would outnumber everything else.
INITIAL_CODES = (OK, "DEADLINE_EXCEEDED")
# Latency buckets (seconds): a healthy agent answers from its cache within 10 ms; 0.1 s is slow;
# 0.5 s is the latency alert's threshold; 2.5 s is half the default deadline. Few, because each
# costs a series per RPC on every node. Only those below the largest configured deadline can fill.
LATENCY_BUCKETS = (0.01, 0.1, 0.5, 2.5, 10.0, 30.0)

log = logging.getLogger("exporter.state")


def buckets_up_to(deadline: float) -> tuple[float, ...]:
    """The latency buckets below `deadline`: one at or above it could hold nothing +Inf doesn't."""
    return tuple(b for b in LATENCY_BUCKETS if b < deadline)


Outcome = tuple[str, str]  # (code, reason); reason is "" except for UNAVAILABLE answers


@dataclass
class RpcStats:
    counts: dict[Outcome, int]
    buckets: list[int]
    observations: int = 0
    duration_sum: float = 0.0
    last: ProbeResult | None = None
    last_success: float | None = None


class ProbeStore(Store):
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        super().__init__()
        self.buckets = tuple(buckets)
        self._rpcs: dict[str, RpcStats] = {}

    def register(self, rpc: str) -> None:
        """Make a probe's series visible at zero before its first run."""
        with self._write():
            self._stats(rpc)

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
