"""FetchJWTSVID that the agent can't answer from its cache: agent -> server -> datastore.

The agent caches a JWT-SVID per audience and renews it only past half its lifetime. So each run
asks for one of a few audiences reserved for this probe ("<audience>/0", "/1", ...), taken in
turn, and as many as it takes for each to come round again only after half the token's lifetime,
which the first answer tells: one at the default 5-minute TTL and a 3-minute interval, eleven at
the 1-hour TTL SPIRE's hardened chart sets. Every call then finds the agent's cached token due
and must be minted anew by the server. When the agent can't reach the server it returns its
still-valid cached token instead; a token equal to the one the same audience got last time is
therefore STALE_TOKEN, not success.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from exporter._proto import workload_pb2
from exporter.answers import MalformedAnswer, SvidInfo, jwt_svids
from exporter.client import WorkloadClient
from exporter.logs import event
from exporter.probes import jwt_svid
from exporter.probes.base import ProbeSpec, timed
from exporter.result import ProbeResult
from exporter.settings import (
    AudienceSettings,
    ConfigError,
    ProbeSettings,
    audience_setting,
    boolean,
    duration,
)

NAME = "fetch_jwt_svid_roundtrip"
STALE_TOKEN = "STALE_TOKEN"
log = logging.getLogger("exporter.probes.roundtrip")


@dataclasses.dataclass(frozen=True)
class RoundTripSettings(AudienceSettings):
    enabled: bool = boolean(False, "Whether this probe runs; it adds one JWT-SVID signing per run.")
    # Longer than half the default 5 min JWT-SVID lifetime, so the agent's cached token is always
    # due for renewal and every call reaches the server.
    interval: float = duration(
        "3m", "Time between two runs; more than half the JWT-SVID lifetime, so each one reaches the server."
    )
    audience: str = audience_setting(
        "spire-health-exporter/roundtrip",
        "Audience prefix reserved for this probe (it asks for <audience>/0, /1, ...); it must differ "
        "from fetch_jwt_svid's.",
    )


def settle(own: RoundTripSettings, probes: Mapping[str, ProbeSettings]) -> RoundTripSettings:
    cached = probes[jwt_svid.NAME]
    if isinstance(cached, AudienceSettings) and cached.audience == own.audience:
        raise ConfigError(
            f"probes.{NAME}.audience: must differ from probes.{jwt_svid.NAME}.audience, "
            "or the cached probe would keep renewing the round-trip token"
        )
    return own


class StaleToken(MalformedAnswer):
    code = STALE_TOKEN


# At most this many audiences, so many cached tokens in the agent: a 3-minute interval covers
# JWT-SVID lifetimes up to about 3 hours.
MAX_AUDIENCES = 64


def audiences_needed(lifetime: float, interval: float) -> int:
    """Audiences to take in turn so that each comes round only past half the token's lifetime."""
    return min(MAX_AUDIENCES, max(1, int(lifetime / 2 // interval) + 1))


class RoundTripProbe:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._previous: dict[str, SvidInfo] = {}  # by audience: at most MAX_AUDIENCES
        self._audiences = 1
        self._runs = 0
        self._warned = False

    def __call__(self, client: WorkloadClient, settings: RoundTripSettings) -> ProbeResult:
        with self._lock:
            audience = f"{settings.audience}/{self._runs % self._audiences}"
            self._runs += 1
            return timed(
                NAME,
                lambda: client.fetch_jwt_svid([audience], settings.timeout),
                self._judge(settings, audience),
            )

    def _judge(
        self, settings: RoundTripSettings, audience: str
    ) -> Callable[[workload_pb2.JWTSVIDResponse], Sequence[object]]:
        def judge(answer: workload_pb2.JWTSVIDResponse) -> Sequence[object]:
            svid = jwt_svids(answer, [audience], time.time())[0]
            previous = self._previous.get(audience)
            self._previous[audience] = svid
            lifetime = svid.expiry - svid.issued
            if lifetime > 0:
                self._audiences = audiences_needed(lifetime, settings.interval)
            if not self._warned and self._audiences * settings.interval <= lifetime / 2:
                self._warned = True
                event(
                    log,
                    logging.WARNING,
                    "round-trip interval too short for the JWT-SVID lifetime: answers may come from cache",
                    interval_seconds=settings.interval,
                    jwt_lifetime_seconds=lifetime,
                )
            if previous is not None and previous.serial == svid.serial and previous.issued == svid.issued:
                raise StaleToken("the agent returned its cached token; it could not reach the server")
            return ()

        return judge


SPEC: ProbeSpec[RoundTripSettings] = ProbeSpec(
    NAME,
    "FetchJWTSVID that the agent must take to the server: agent, server and datastore in one call.",
    RoundTripProbe,
    RoundTripSettings,
    codes=(STALE_TOKEN,),
    settle=settle,
)
