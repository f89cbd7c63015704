"""The agent's own view, from its Debug API on the admin socket: its last successful sync with the
server, its own SVID's expiry, and what it holds in its caches.

No other signal says "can this agent still talk to the server" from the agent itself. Opt-in: it
runs when an admin socket is configured (SPIRE's `admin_socket_path`, which the hardened chart
puts on the host with `sockets.admin.mountOnHost`).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator, Mapping, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter._proto import debug_pb2
from exporter.answers import LATEST_TIME, MalformedAnswer
from exporter.client import WorkloadClient
from exporter.probes.base import ProbeSpec, latest_fact, timed
from exporter.result import ProbeResult
from exporter.settings import ProbeSettings, text

NAME = "debug_get_info"


@dataclasses.dataclass(frozen=True)
class DebugSettings(ProbeSettings):
    socket: str = text(
        "",
        "The agent's admin socket (its admin_socket_path), unix:///path; empty: this probe is off.",
        flag="agent.admin-socket",
        pattern=r"^$|^(unix://|unix:)?/",
        expect="an absolute unix socket path, e.g. unix:///run/spire/agent-admin/admin.sock",
    )


def settle(own: DebugSettings, _probes: Mapping[str, ProbeSettings]) -> DebugSettings:
    """No socket, no probe: it is on only where someone said where the admin socket is."""
    return dataclasses.replace(own, enabled=own.enabled and bool(own.socket))


@dataclasses.dataclass(frozen=True)
class AgentInfo:
    last_sync: float | None  # Unix seconds; None before the agent's first sync
    svid_expiry: float  # the agent's own SVID's notAfter
    # Its expiry less when this exporter first saw it: the SVID's lifetime, within an interval
    # plus the agent's 5 s answer cache, once a renewal has been seen; less before that.
    svid_lifetime: float
    cached: tuple[tuple[str, int], ...]  # (kind, count)


def _seconds(value: int) -> float | None:
    """A Unix time from the agent; Go's zero time (year 1) is negative: never."""
    return float(value) if 0 < value <= LATEST_TIME else None


class DebugProbe:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._client: WorkloadClient | None = None
        self._expiry: float | None = None
        self._first_seen = 0.0
        self._known: AgentInfo | None = None

    def __call__(self, _workload: WorkloadClient, settings: DebugSettings) -> ProbeResult:
        with self._lock:
            if self._client is None:
                self._client = WorkloadClient(settings.socket, connect_timeout=settings.timeout)
            client = self._client
            result = timed(NAME, lambda: client.debug_get_info(settings.timeout), self._judge)
            if result.ok:
                self._known = next(f for f in result.facts if isinstance(f, AgentInfo))
            elif self._known is not None:
                # What the agent last said stays exported: a failed call tells nothing new about
                # its sync or its SVID, and the alerts on those need the series to keep going.
                result = dataclasses.replace(result, facts=(self._known,))
            return result

    def _judge(self, answer: debug_pb2.GetInfoResponse) -> Sequence[object]:
        if not answer.svid_chain:
            raise MalformedAnswer("GetInfo holds no agent SVID")
        expiry = _seconds(answer.svid_chain[0].expires_at)
        if expiry is None:
            raise MalformedAnswer("GetInfo's agent SVID has no expiry")
        now = time.time()
        if expiry != self._expiry:
            self._expiry, self._first_seen = expiry, now
        cached = (
            ("x509", answer.cached_x509_svids_count),
            ("jwt", answer.cached_jwt_svids_count),
            ("svidstore_x509", answer.cached_svidstore_x509_svids_count),
        )
        if any(count < 0 for _, count in cached):
            raise MalformedAnswer("GetInfo has a negative cache count")
        return (AgentInfo(_seconds(answer.last_sync_success), expiry, expiry - self._first_seen, cached),)


def series(latest: ProbeResult | None) -> Iterator[Metric]:
    info = latest_fact(latest, AgentInfo)
    last_sync = GaugeMetricFamily(
        "spire_health_agent_last_sync_success_timestamp_seconds",
        "Unix time of the agent's last successful sync with the SPIRE server (its Debug API).",
    )
    expiry = GaugeMetricFamily(
        "spire_health_agent_svid_expiry_timestamp_seconds",
        "Unix time at which the agent's own SVID expires (its Debug API).",
    )
    lifetime = GaugeMetricFamily(
        "spire_health_agent_svid_lifetime_seconds",
        "The agent SVID's expiry less when the exporter first saw it: its lifetime once a renewal "
        "has been seen, less before.",
    )
    cached = GaugeMetricFamily(
        "spire_health_agent_cached_svids",
        "SVIDs in the agent's caches, by kind: x509, jwt, svidstore_x509 (its Debug API).",
        labels=["kind"],
    )
    if info is not None:
        if info.last_sync is not None:
            last_sync.add_metric([], info.last_sync)
        expiry.add_metric([], info.svid_expiry)
        lifetime.add_metric([], info.svid_lifetime)
        for kind, count in info.cached:
            cached.add_metric([kind], count)
    yield from (last_sync, expiry, lifetime, cached)


SPEC: ProbeSpec[DebugSettings] = ProbeSpec(
    NAME,
    "GetInfo on the agent's admin socket: its last sync with the server, its own SVID, its caches.",
    DebugProbe,
    DebugSettings,
    series=series,
    settle=settle,
    latency=False,  # the admin API's speed is not what workloads wait for
)
