"""FetchJWTSVID that the agent can't answer from its cache: agent -> server -> datastore.

The audience is reserved for this probe and the interval exceeds half the JWT-SVID lifetime, so
the agent's cached token is always due for renewal and must be minted anew by the server. When
the agent can't reach the server it returns its still-valid cached token instead; a token equal
to the previous call's is therefore STALE_TOKEN, not success.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from exporter import names
from exporter._proto import workload_pb2
from exporter.answers import MalformedAnswer, SvidInfo, jwt_svids
from exporter.client import WorkloadClient
from exporter.config import ProbeSettings
from exporter.logs import event
from exporter.probes.base import Judged, timed
from exporter.state import ProbeResult

RPC = names.FETCH_JWT_SVID_ROUNDTRIP
STALE_TOKEN = "STALE_TOKEN"
CODES = (STALE_TOKEN,)
log = logging.getLogger("exporter.probes.roundtrip")


class StaleToken(MalformedAnswer):
    code = STALE_TOKEN


class RoundTripProbe:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._previous: SvidInfo | None = None
        self._warned = False

    def __call__(self, client: WorkloadClient, settings: ProbeSettings) -> ProbeResult:
        with self._lock:
            audience = [settings.audience]
            return timed(
                RPC, lambda: client.fetch_jwt_svid(audience, settings.timeout), self._judge(settings)
            )

    def _judge(self, settings: ProbeSettings) -> Callable[[workload_pb2.JWTSVIDResponse], Judged]:
        def judge(answer: workload_pb2.JWTSVIDResponse) -> Judged:
            svid = jwt_svids(answer, [settings.audience], time.time())[0]
            previous, self._previous = self._previous, svid
            lifetime = svid.expiry - svid.issued
            if not self._warned and lifetime > 0 and settings.interval <= lifetime / 2:
                self._warned = True
                event(
                    log,
                    logging.WARNING,
                    "round-trip interval too short: the agent may answer from cache",
                    interval_seconds=settings.interval,
                    jwt_lifetime_seconds=lifetime,
                )
            if previous is not None and previous.serial == svid.serial and previous.issued == svid.issued:
                raise StaleToken("the agent returned its cached token; it could not reach the server")
            return (), ()

        return judge
