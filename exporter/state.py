"""Probe state: the only place probes write and the only place the collector reads.

Everything here is bounded: a fixed set of rpc and code names, at most `max_spiffe_ids` SPIFFE
IDs and `max_trust_domains` trust domains. Readers get copies taken under one lock.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from exporter.answers import INVALID_RESPONSE, BundleInfo, SvidInfo
from exporter.logs import event

OK = "OK"
STALE_TOKEN = "STALE_TOKEN"
# Present from the start so that rate() and increase() see the first failure.
INITIAL_CODES = (OK, "DEADLINE_EXCEEDED", "UNAVAILABLE", "PERMISSION_DENIED", INVALID_RESPONSE)
# Successful probes are observed; the top buckets lie beyond any sane deadline.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

log = logging.getLogger("exporter.state")


@dataclass(frozen=True)
class ProbeResult:
    rpc: str
    code: str
    duration: float  # seconds to the answer (the first message, for streams)
    message: str = ""  # for logs and the status page only: never a label
    svids: tuple[SvidInfo, ...] = ()
    bundles: tuple[BundleInfo, ...] = ()
    finished_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.code == OK


@dataclass
class RpcStats:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INITIAL_CODES, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKETS))
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


@dataclass(frozen=True)
class CgroupSample:
    version: int
    usage: int | None
    limit: int | None  # None: unlimited
    peak: int | None
    oom_kills: int | None


@dataclass
class Snapshot:
    rpcs: dict[str, RpcStats]
    svids: dict[tuple[str, str], SvidInfo]
    rotations: dict[str, int]
    bundles: dict[tuple[str, str], BundleInfo]
    http_health: dict[str, bool]
    process: ProcessSample | None
    process_up: bool | None
    cgroup: CgroupSample | None
    dropped_spiffe_ids: int


class ProbeState:
    def __init__(self, max_spiffe_ids: int = 10, max_trust_domains: int = 32) -> None:
        self._lock = threading.Lock()
        self._max_ids = max_spiffe_ids
        self._max_tds = max_trust_domains
        self._rpcs: dict[str, RpcStats] = {}
        self._svids: dict[tuple[str, str], SvidInfo] = {}
        self._rotations: dict[str, int] = {}
        self._serials: dict[str, str] = {}
        self._bundles: dict[tuple[str, str], BundleInfo] = {}
        self._admitted: set[str] = set()
        self._dropped: set[str] = set()
        self._http_health: dict[str, bool] = {}
        self._process: ProcessSample | None = None
        self._process_up: bool | None = None
        self._cgroup: CgroupSample | None = None
        self._version = 0

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """Every change goes through here, so readers can tell whether anything changed."""
        with self._lock:
            self._version += 1
            yield

    @property
    def version(self) -> int:
        """Grows with every change; equal versions mean equal snapshots."""
        return self._version

    def register(self, rpc: str, extra_codes: tuple[str, ...] = ()) -> None:
        """Make an rpc's series visible at zero before its first probe."""
        with self._write():
            stats = self._rpcs.setdefault(rpc, RpcStats())
            for code in extra_codes:
                stats.counts.setdefault(code, 0)

    def record(self, result: ProbeResult) -> None:
        with self._write():
            stats = self._rpcs.setdefault(result.rpc, RpcStats())
            previous = stats.last
            stats.counts[result.code] = stats.counts.get(result.code, 0) + 1
            stats.last = result
            if result.ok:
                stats.observations += 1
                stats.duration_sum += result.duration
                i = bisect.bisect_left(BUCKETS, result.duration)
                if i < len(BUCKETS):
                    stats.buckets[i] += 1
                stats.last_success = result.finished_at
                if result.svids:
                    self._replace_svids(result.svids)
                if result.bundles:
                    self._replace_bundles(result.bundles)
        _log_transition(previous, result)

    def _admit(self, spiffe_id: str) -> bool:
        """The first max_spiffe_ids distinct IDs get labels; later ones are counted, not exported."""
        if spiffe_id in self._admitted:
            return True
        if len(self._admitted) < self._max_ids:
            self._admitted.add(spiffe_id)
            return True
        if spiffe_id not in self._dropped and len(self._dropped) < 1000:
            self._dropped.add(spiffe_id)
            event(log, logging.WARNING, "SPIFFE ID over the label cap; not exported", limit=self._max_ids)
        return False

    def _replace_svids(self, svids: tuple[SvidInfo, ...]) -> None:
        """The latest answer is the whole truth for its kind: an SVID the agent dropped disappears."""
        kind = svids[0].kind
        self._svids = {k: v for k, v in self._svids.items() if k[0] != kind}
        for svid in svids:
            if self._admit(svid.spiffe_id):
                self._svids[(svid.kind, svid.spiffe_id)] = svid

    def _replace_bundles(self, bundles: tuple[BundleInfo, ...]) -> None:
        kind = bundles[0].kind
        kept = sorted(bundles, key=lambda b: b.trust_domain)[: self._max_tds]
        self._bundles = {k: v for k, v in self._bundles.items() if k[0] != kind}
        self._bundles.update({(b.kind, b.trust_domain): b for b in kept})

    def record_watch(self, svids: list[SvidInfo]) -> list[str]:
        """An update on the long-lived X.509 stream; returns the SPIFFE IDs that rotated."""
        rotated = []
        with self._write():
            for svid in svids:
                if not self._admit(svid.spiffe_id):
                    continue
                self._rotations.setdefault(svid.spiffe_id, 0)
                before = self._serials.get(svid.spiffe_id)
                if before is not None and before != svid.serial:
                    self._rotations[svid.spiffe_id] += 1
                    rotated.append(svid.spiffe_id)
                self._serials[svid.spiffe_id] = svid.serial
                self._svids[("x509", svid.spiffe_id)] = svid
        return rotated

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

    def snapshot(self) -> Snapshot:
        with self._lock:
            return Snapshot(
                rpcs={
                    k: replace(v, counts=dict(v.counts), buckets=list(v.buckets))
                    for k, v in self._rpcs.items()
                },
                svids=dict(self._svids),
                rotations=dict(self._rotations),
                bundles=dict(self._bundles),
                http_health=dict(self._http_health),
                process=self._process,
                process_up=self._process_up,
                cgroup=self._cgroup,
                dropped_spiffe_ids=len(self._dropped),
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
