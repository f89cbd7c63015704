"""Virtual nodes for the fleet simulator: each node's /metrics is the exporter's own collectors
over an exporter State, fed the results a real agent in that condition gives.

Nodes that behave alike share one State, so that thousands of nodes cost a handful of renders
per probe interval: every node of a group serves the same text, as every healthy exporter of a
fleet reports the same codes. What tells nodes apart (job, namespace, pod, container, endpoint,
instance, node, cluster) comes from the scrape target's labels, as prometheus-operator gives
them from the chart's PodMonitor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

from exporter import collect, config
from exporter.answers import BundleInfo, SvidInfo
from exporter.result import OK, ProbeResult
from exporter.store import State
from exporter.store.agent import CgroupSample, ProcessSample
from exporter.store.probes import buckets_up_to

TRUST_DOMAIN = "example.org"
SPIFFE_ID = f"spiffe://{TRUST_DOMAIN}/ns/spire-system/sa/spire-health-exporter"
X509_TTL, JWT_TTL, CA_TTL = 3600.0, 300.0, 86400.0
MIB = 2**20
# The probes a default install runs: the opt-in ones (round trip, Debug API, SDS) are off.
DEFAULT_RPCS = tuple(
    name for name, _ in config.build({"workload_api": {"socket": "unix:///x"}}, environ={}).enabled()
)


@dataclass(frozen=True)
class Behaviour:
    """How an agent answers. codes: the code of each RPC that does not answer OK. svid_left: the
    share of its lifetime the X.509-SVID has left, frozen (renewal stopped), or None (renewed).
    ca_due: the newest CA's time left against SPIRE's successor point, or None (on schedule)."""

    name: str
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # rpc -> (code, reason)
    svid_left: float | None = None
    ca_due: float | None = None
    latency: float = 0.002
    from_start: bool = False  # a condition since install, not one that sets in at the switch

    def __hash__(self) -> int:
        return hash(self.name)


HEALTHY = Behaviour("healthy")
TIMEOUT = ("DEADLINE_EXCEEDED", "")
FROZEN = Behaviour("frozen", {rpc: TIMEOUT for rpc in DEFAULT_RPCS})
NO_ENTRY = Behaviour(
    "no-entry",
    {
        **{rpc: ("PERMISSION_DENIED", "") for rpc in DEFAULT_RPCS if rpc != "health_check"},
        "validate_jwt_svid": ("NO_TOKEN", ""),
    },
    from_start=True,
)
SERVER_DOWN = Behaviour("server-down", svid_left=0.3)
CA_STUCK = Behaviour("ca-stuck", ca_due=0.5)


class Group:
    """The exporter State of every node that behaves alike, advanced one probe interval at a time:
    healthy until `switch_at`, then as its behaviour says (from the start if it says so), so
    that its counters run on without a reset, as one exporter's do."""

    def __init__(self, behaviour: Behaviour, started: float, switch_at: float) -> None:
        self.behaviour = behaviour
        self.switch_at = started if behaviour.from_start else switch_at
        # The buckets a default exporter has: those below its 5 s deadline.
        self.state = State(buckets=buckets_up_to(5.0))
        self.started = started
        self.registry = CollectorRegistry()
        collect.register(self.registry, self.state)
        ProcessCollector(registry=self.registry)  # the exporter's own process_* series
        self.state.own.register_job("agent", 60)
        self.state.own.register_job("watch", 3600)
        self.state.own.set_watch_up(True)
        for rpc in DEFAULT_RPCS:
            self.state.probes.register(rpc)
        self.text = b""
        self._lock = threading.Lock()

    def tick(self, now: float) -> None:
        b = self.behaviour if now >= self.switch_at else HEALTHY
        for rpc in DEFAULT_RPCS:
            code, reason = b.codes.get(rpc, (OK, ""))
            facts = self._facts(b, rpc, now) if code == OK else ()
            duration = 5.0 if code == "DEADLINE_EXCEEDED" else b.latency
            self.state.record(ProbeResult(rpc, code, duration, reason=reason, facts=facts, finished_at=now))
        process = ProcessSample(1, 40 * MIB, 95 * MIB, now - self.started, 24, 14, self.started, 3)
        cgroup = CgroupSample(2, 60 * MIB, 42 * MIB, 512 * MIB, 101 * MIB, 0)
        self.state.agent.set_process(process, cgroup)
        self.state.own.job_done("agent")
        text = generate_latest(self.registry)
        with self._lock:
            self.text = text

    def _facts(self, b: Behaviour, rpc: str, now: float) -> tuple[object, ...]:
        if rpc == "fetch_x509_svid":
            if b.svid_left is None:  # renewed at half its life, as SPIRE does
                issued = now - (now - self.started) % (X509_TTL / 2)
            else:
                issued = now - (1 - b.svid_left) * X509_TTL
            return (SvidInfo("x509", SPIFFE_ID, issued, issued + X509_TTL, f"{int(issued):x}"),)
        if rpc == "fetch_jwt_svid":
            issued = now - (now - self.started) % (JWT_TTL / 2)
            return (SvidInfo("jwt", SPIFFE_ID, issued, issued + JWT_TTL, f"j{int(issued)}"),)
        if rpc == "fetch_x509_bundles":
            successor_at = min(CA_TTL / 2, 30 * 86400)
            left = successor_at * b.ca_due if b.ca_due is not None else CA_TTL * 0.75
            return (BundleInfo("x509", TRUST_DOMAIN, 2, now + left, now + left - CA_TTL),)
        if rpc == "fetch_jwt_bundles":
            return (BundleInfo("jwt", TRUST_DOMAIN, 2, None),)
        return ()

    def metrics(self) -> bytes:
        with self._lock:
            return self.text


@dataclass(frozen=True)
class Node:
    cluster: str
    name: str
    index: int

    @property
    def path(self) -> str:
        return f"/{self.cluster}/{self.name}/metrics"

    def target_labels(self) -> dict[str, str]:
        """The labels prometheus-operator gives this node's target from the chart's PodMonitor:
        job from its jobLabel, the pod's namespace, name, container and port, and the chart's
        node relabeling; cluster as the chart's podMonitor.relabelings would add it."""
        return {
            "job": "spire-health-exporter",
            "namespace": "spire-system",
            "pod": f"spire-health-exporter-{self.index:05x}",
            "container": "exporter",
            "endpoint": "metrics",
            "instance": f"10.{self.index // 62500}.{self.index // 250 % 250}.{self.index % 250 + 1}:9989",
            "node": self.name,
            "cluster": self.cluster,
        }


def nodes(count: int, clusters: tuple[str, ...]) -> list[Node]:
    """`count` nodes spread evenly over `clusters`."""
    return [Node(clusters[i % len(clusters)], f"node-{i:05d}", i) for i in range(count)]


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Prometheus closing a kept-alive connection at shutdown is no error."""


class NodeServer:
    """Serves every node's /metrics on one loopback port, each path from its group's latest text."""

    def __init__(self, group_of: Callable[[str], Group | None]) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                group = group_of(self.path)
                body = group.metrics() if group else b""
                self.send_response(200 if group else 404)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2})

    def start(self) -> NodeServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(10)


class Fleet:
    """Nodes, their behaviour groups, a ticker that advances every group each probe interval,
    and the server that answers their scrapes. Every node is healthy until `switch_after`
    seconds, then behaves as `behaviour_of` says."""

    def __init__(
        self,
        members: list[Node],
        probe_interval: float,
        behaviour_of: Callable[[Node], Behaviour],
        switch_after: float,
    ) -> None:
        self.members = members
        self.interval = probe_interval
        self.started = time.time()
        switch_at = self.started + switch_after
        self.groups: dict[str, Group] = {}
        self.assigned: dict[str, Group] = {}
        for node in members:
            behaviour = behaviour_of(node)
            if behaviour.name not in self.groups:
                self.groups[behaviour.name] = Group(behaviour, self.started, switch_at)
            self.assigned[node.path] = self.groups[behaviour.name]
        self.server = NodeServer(lambda path: self.assigned.get(path))
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._run, name="fleet-ticker")

    def start(self) -> Fleet:
        self._tick()
        self.server.start()
        self._ticker.start()
        return self

    def _tick(self) -> None:
        now = time.time()
        for group in self.groups.values():
            group.tick(now)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._tick()

    def stop(self) -> None:
        self._stop.set()
        self._ticker.join(10)
        self.server.stop()
