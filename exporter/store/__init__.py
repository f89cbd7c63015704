"""The state: one small store per area, the only place jobs write and collectors read.

Data flows one way: probes and samplers write here, the collectors and the web pages read
copies taken under each store's lock.
"""

from __future__ import annotations

from exporter.result import ProbeResult
from exporter.store.agent import AgentStore
from exporter.store.identities import IdentityStore
from exporter.store.own import OwnStore
from exporter.store.probes import LATENCY_BUCKETS, ProbeStore


class State:
    def __init__(
        self,
        max_spiffe_ids: int = 10,
        max_trust_domains: int = 32,
        buckets: tuple[float, ...] = LATENCY_BUCKETS,
    ) -> None:
        self.probes = ProbeStore(buckets)
        self.identities = IdentityStore(max_spiffe_ids, max_trust_domains)
        self.agent = AgentStore()
        self.own = OwnStore()

    def record(self, result: ProbeResult) -> None:
        """A probe's result: its counts and latency, then what its answer says of our identities."""
        self.probes.record(result)
        if result.ok:
            self.identities.take(result.facts)

    @property
    def version(self) -> int:
        """Grows with any store's change; equal versions mean an unchanged /metrics."""
        return self.probes.version + self.identities.version + self.agent.version + self.own.version
