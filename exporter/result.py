"""What a probe hands to the state: its code, its latency, and the public facts its answer held."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

OK = "OK"
# A probe raised something no answer should make it raise: a bug, counted rather than lost.
EXPORTER_ERROR = "EXPORTER_ERROR"


@dataclass(frozen=True)
class ProbeResult:
    rpc: str
    code: str
    duration: float  # seconds to the answer (the first message, for streams) or to the failure
    message: str = ""  # for logs and the status page only: never a label
    reason: str = ""  # why UNAVAILABLE, one of exporter.unavailable.REASONS; "" otherwise
    # Public facts of a successful answer (SvidInfo, BundleInfo, ...); each store takes its own kind.
    facts: tuple[object, ...] = ()
    finished_at: float = field(default_factory=time.time)

    @property
    def ok(self) -> bool:
        return self.code == OK

    @property
    def outcome(self) -> str:
        """The code, with the reason when there is one: "UNAVAILABLE (rate_limited)"."""
        return f"{self.code} ({self.reason})" if self.reason else self.code
