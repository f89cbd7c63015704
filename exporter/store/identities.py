"""The exporter's SVIDs, their rotations, and the trust bundles, from the agent's latest answers.

Bounded: at most `max_spiffe_ids` SPIFFE IDs and `max_trust_domains` trust domains. The latest
answer of each kind is the whole truth for that kind: an SVID the agent dropped disappears.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exporter.answers import BundleInfo, SvidInfo
from exporter.logs import event
from exporter.store.base import Store

log = logging.getLogger("exporter.state")


@dataclass(frozen=True)
class Identities:
    svids: dict[tuple[str, str], SvidInfo]  # by (kind, SPIFFE ID)
    rotations: dict[str, int]
    bundles: dict[tuple[str, str], BundleInfo]  # by (kind, trust domain)
    dropped_spiffe_ids: int
    dropped_trust_domains: int
    # By federated trust domain (a bundle for a trust domain none of our SVIDs is in): when its
    # X.509 bundle last changed, or was first seen.
    federated_changed: dict[str, float]


class IdentityStore(Store):
    def __init__(self, max_spiffe_ids: int = 10, max_trust_domains: int = 32) -> None:
        super().__init__()
        self._max_ids = max_spiffe_ids
        self._max_tds = max_trust_domains
        self._latest_svids: dict[str, tuple[SvidInfo, ...]] = {}
        self._exported_ids: set[str] = set()
        self._dropped_ids = 0
        self._rotations: dict[str, int] = {}
        self._serials: dict[str, str] = {}
        self._bundles: dict[str, tuple[BundleInfo, ...]] = {}
        self._dropped_tds: dict[str, set[str]] = {}
        self._bundle_seen: dict[str, tuple[BundleInfo, float]] = {}  # X.509, by trust domain

    def take(self, facts: Sequence[object]) -> None:
        """The SVIDs and bundles among a successful answer's facts."""
        svids = [f for f in facts if isinstance(f, SvidInfo)]
        bundles = [f for f in facts if isinstance(f, BundleInfo)]
        if not svids and not bundles:
            return
        with self._write():
            if svids:
                self._replace_svids(svids)
            if bundles:
                self._replace_bundles(bundles)

    def _replace_svids(self, svids: Iterable[SvidInfo]) -> None:
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

    def _replace_bundles(self, bundles: list[BundleInfo]) -> None:
        ordered = sorted(bundles, key=lambda b: b.trust_domain)
        kind = ordered[0].kind
        self._bundles[kind] = tuple(ordered[: self._max_tds])
        self._dropped_tds[kind] = {b.trust_domain for b in ordered[self._max_tds :]}
        if kind == "x509":
            now = time.time()
            seen = {}
            for bundle in self._bundles[kind]:
                before = self._bundle_seen.get(bundle.trust_domain)
                seen[bundle.trust_domain] = before if before and before[0] == bundle else (bundle, now)
            self._bundle_seen = seen

    def _own_trust_domains(self) -> set[str]:
        return {
            s.spiffe_id.removeprefix("spiffe://").split("/", 1)[0]
            for svids in self._latest_svids.values()
            for s in svids
        }

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

    def snapshot(self) -> Identities:
        with self._lock:
            exported = self._exported_ids
            return Identities(
                svids={
                    (s.kind, s.spiffe_id): s
                    for svids in self._latest_svids.values()
                    for s in svids
                    if s.spiffe_id in exported
                },
                rotations=dict(self._rotations),
                bundles={(b.kind, b.trust_domain): b for kept in self._bundles.values() for b in kept},
                dropped_spiffe_ids=self._dropped_ids,
                dropped_trust_domains=len(set().union(*self._dropped_tds.values())),
                federated_changed=self._federated_changed(),
            )

    def _federated_changed(self) -> dict[str, float]:
        own = self._own_trust_domains()
        if not own:  # which bundles are federated is unknown until an SVID names our own
            return {}
        return {td: when for td, (_, when) in self._bundle_seen.items() if td not in own}
