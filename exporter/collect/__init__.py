"""One collector per area of the state; each reads its own store and nothing else."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from exporter.collect.agent import AgentCollector
from exporter.collect.identities import IdentityCollector
from exporter.collect.own import OwnCollector
from exporter.collect.probes import ProbeCollector
from exporter.store import State

__all__ = ["register"]


def register(registry: CollectorRegistry, state: State, process_enabled: bool = True) -> None:
    """Every collector of the exporter's own series, in the order /metrics shows them."""
    registry.register(ProbeCollector(state.probes))
    registry.register(IdentityCollector(state.identities))
    registry.register(AgentCollector(state.agent, process_enabled))
    registry.register(OwnCollector(state.own))
