"""Probe state: the only place probes and jobs write and the only place the collector reads.

Everything here is bounded: a fixed set of rpc, job and code names, at most `max_spiffe_ids`
SPIFFE IDs and `max_trust_domains` trust domains, all taken from the agent's latest answers.
Readers get copies taken under one lock.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from exporter.answers import INVALID_RESPONSE, BundleInfo, SvidInfo
from exporter.logs import event

OK = "OK"
# A probe raised something no answer should make it raise: a bug, counted rather than lost.
EXPORTER_ERROR = "EXPORTER_ERROR"
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


@dataclass(frozen=True)
class ProbeResult:
    rpc: str
    code: str
    duration: float  # seconds to the answer (the first message, for streams) or to the failure
    message: str = ""  # for logs and the status page only: never a label
    svids: tuple[SvidInfo, ...] = ()
    bundles: tuple[BundleInfo, ...] = ()
    finished_at: float = field(default_factory=time.time)
    serving: bool | None = None  # health probes only: whether the agent counts as serving

    @property
    def ok(self) -> bool:
        return self.code == OK


@dataclass
class RpcStats:
    counts: dict[str, int]
    buckets: list[int]
    timeout: float | None = None
    interval: float | None = None
    observations: int = 0
    duration_sum: float = 0.0
    last: ProbeResult | None = None
    last_success: float | None = None


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


@dataclass
class JobHealth:
    max_quiet: float  # seconds without a completed cycle before the job counts as stalled
    last_done: float  # time.monotonic() of the latest completed cycle (or of registration)
    errors_at_zero: bool  # export the error count before the first error
    errors: int = 0


@dataclass
class Snapshot:
    rpcs: dict[str, RpcStats]
    buckets: tuple[float, ...]
    svids: dict[tuple[str, str], SvidInfo]
    rotations: dict[str, int]
    bundles: dict[tuple[str, str], BundleInfo]
    http_health: dict[str, bool]
    process: ProcessSample | None
    process_up: bool | None
    cgroup: CgroupSample | None
    dropped_spiffe_ids: int
    dropped_trust_domains: int
    job_errors: dict[str, int]
    watch_up: bool | None
    watch_reconnects: int


class ProbeState:
    def __init__(
        self,
        max_spiffe_ids: int = 10,
        max_trust_domains: int = 32,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> None:
        self._lock = threading.Lock()
        self._max_ids = max_spiffe_ids
        self._max_tds = max_trust_domains
        self._buckets = tuple(buckets)
        self._rpcs: dict[str, RpcStats] = {}
        # Identities: the latest answer of each kind is the whole truth for that kind.
        self._latest_svids: dict[str, tuple[SvidInfo, ...]] = {}
        self._exported_ids: set[str] = set()
        self._dropped_ids = 0
        self._rotations: dict[str, int] = {}
        self._serials: dict[str, str] = {}
        self._bundles: dict[str, tuple[BundleInfo, ...]] = {}
        self._dropped_tds: dict[str, set[str]] = {}
        self._http_health: dict[str, bool] = {}
        self._process: ProcessSample | None = None
        self._process_up: bool | None = None
        self._cgroup: CgroupSample | None = None
        self._jobs: dict[str, JobHealth] = {}
        self._watch_up: bool | None = None
        self._watch_reconnects = 0
        self._version = 0

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """Every change readers can see goes through here, so they can tell whether anything changed."""
        with self._lock:
            self._version += 1
            yield

    @property
    def version(self) -> int:
        """Grows with every change; equal versions mean equal snapshots."""
        return self._version

    def register(
        self,
        rpc: str,
        extra_codes: tuple[str, ...] = (),
        timeout: float | None = None,
        interval: float | None = None,
    ) -> None:
        """Make an rpc's series visible at zero before its first probe."""
        with self._write():
            stats = self._stats(rpc)
            stats.timeout = timeout
            stats.interval = interval
            for code in extra_codes:
                stats.counts.setdefault(code, 0)

    def _stats(self, rpc: str) -> RpcStats:
        if rpc not in self._rpcs:
            self._rpcs[rpc] = RpcStats(dict.fromkeys(INITIAL_CODES, 0), [0] * len(self._buckets))
        return self._rpcs[rpc]

    def record(self, result: ProbeResult) -> None:
        with self._write():
            stats = self._stats(result.rpc)
            previous = stats.last
            stats.counts[result.code] = stats.counts.get(result.code, 0) + 1
            stats.last = result
            if result.ok:
                stats.observations += 1
                stats.duration_sum += result.duration
                i = bisect.bisect_left(self._buckets, result.duration)
                if i < len(self._buckets):
                    stats.buckets[i] += 1
                stats.last_success = result.finished_at
                if result.svids:
                    self._replace_svids(result.svids)
                if result.bundles:
                    self._replace_bundles(result.bundles)
        _log_transition(previous, result)

    # -- identities ---------------------------------------------------------------------------

    def _replace_svids(self, svids: Iterable[SvidInfo]) -> None:
        """An answer replaces every SVID of its kind: an SVID the agent dropped disappears."""
        svids = tuple(svids)
        self._latest_svids[svids[0].kind] = svids
        current = {s.spiffe_id for kind_svids in self._latest_svids.values() for s in kind_svids}
        # IDs already exported keep their labels while they last; free places go to newcomers.
        kept = self._exported_ids & current
        newcomers = sorted(current - kept)[: max(self._max_ids - len(kept), 0)]
        self._exported_ids = kept | set(newcomers)
        dropped = len(current) - len(self._exported_ids)
        if dropped > self._dropped_ids:
            event(
                log,
                logging.WARNING,
                "SPIFFE IDs over the label cap; not exported",
                over=dropped,
                limit=self._max_ids,
            )
        self._dropped_ids = dropped
        rotating = {s.spiffe_id for s in self._latest_svids.get("x509", ())} & self._exported_ids
        self._rotations = {i: n for i, n in self._rotations.items() if i in rotating}
        self._serials = {i: s for i, s in self._serials.items() if i in rotating}

    def _replace_bundles(self, bundles: tuple[BundleInfo, ...]) -> None:
        ordered = sorted(bundles, key=lambda b: b.trust_domain)
        kind = ordered[0].kind
        self._bundles[kind] = tuple(ordered[: self._max_tds])
        self._dropped_tds[kind] = {b.trust_domain for b in ordered[self._max_tds :]}

    def record_watch(self, svids: list[SvidInfo]) -> list[str]:
        """An update on the long-lived X.509 stream; returns the SPIFFE IDs that rotated."""
        rotated = []
        with self._write():
            self._replace_svids(svids)
            for svid in svids:
                if svid.spiffe_id not in self._exported_ids:
                    continue
                self._rotations.setdefault(svid.spiffe_id, 0)
                before = self._serials.get(svid.spiffe_id)
                if before is not None and before != svid.serial:
                    self._rotations[svid.spiffe_id] += 1
                    rotated.append(svid.spiffe_id)
                self._serials[svid.spiffe_id] = svid.serial
        return rotated

    # -- the agent ----------------------------------------------------------------------------

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

    # -- the exporter's own jobs --------------------------------------------------------------

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

    def snapshot(self) -> Snapshot:
        with self._lock:
            exported = self._exported_ids
            return Snapshot(
                rpcs={
                    k: replace(v, counts=dict(v.counts), buckets=list(v.buckets))
                    for k, v in self._rpcs.items()
                },
                buckets=self._buckets,
                svids={
                    (s.kind, s.spiffe_id): s
                    for svids in self._latest_svids.values()
                    for s in svids
                    if s.spiffe_id in exported
                },
                rotations=dict(self._rotations),
                bundles={(b.kind, b.trust_domain): b for kept in self._bundles.values() for b in kept},
                http_health=dict(self._http_health),
                process=self._process,
                process_up=self._process_up,
                cgroup=self._cgroup,
                dropped_spiffe_ids=self._dropped_ids,
                dropped_trust_domains=len(set().union(*self._dropped_tds.values())),
                job_errors={n: j.errors for n, j in self._jobs.items() if j.errors or j.errors_at_zero},
                watch_up=self._watch_up,
                watch_reconnects=self._watch_reconnects,
            )


def _log_transition(previous: ProbeResult | None, result: ProbeResult) -> None:
    """One line per change of health or failure code, not one per probe (except at debug)."""
    if log.isEnabledFor(logging.DEBUG):
        event(
            log,
            logging.DEBUG,
            "probe done",
            rpc=result.rpc,
            code=result.code,
            duration_seconds=result.duration,
        )
    if previous is not None and previous.code == result.code:
        return
    if result.ok:
        if previous is not None:
            event(log, logging.INFO, "probe recovered", rpc=result.rpc, previous_code=previous.code)
    else:
        event(
            log,
            logging.WARNING,
            "probe failing",
            rpc=result.rpc,
            code=result.code,
            duration_seconds=round(result.duration, 4),
            error=result.message,
        )
