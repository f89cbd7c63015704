"""What every prober shares: one signature, one way to time a call and judge its answer, and one
guard that turns anything unexpected into a counted result."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import grpc

from exporter.answers import INVALID_RESPONSE, BundleInfo, MalformedAnswer, SvidInfo
from exporter.client import EmptyStreamError, WorkloadClient
from exporter.config import ProbeSettings
from exporter.logs import describe
from exporter.state import EXPORTER_ERROR, OK, ProbeResult

T = TypeVar("T")
log = logging.getLogger("exporter.probes")

Judged = tuple[Sequence[SvidInfo], Sequence[BundleInfo]]


class Probe(Protocol):
    def __call__(self, client: WorkloadClient, settings: ProbeSettings) -> ProbeResult: ...


@dataclass(frozen=True)
class Prober:
    """A probe, its name, and the failure codes of its own (shown at zero from the start)."""

    name: str
    probe: Probe
    codes: tuple[str, ...] = ()

    def __call__(self, client: WorkloadClient, settings: ProbeSettings) -> ProbeResult:
        """Run the probe; whatever it raises becomes an EXPORTER_ERROR result, never an exception."""
        start = time.perf_counter()
        try:
            return self.probe(client, settings)
        except Exception as e:
            return ProbeResult(self.name, EXPORTER_ERROR, time.perf_counter() - start, describe(e))


def classify(error: grpc.RpcError) -> tuple[str, str]:
    """(code, message) for a failed call. Answers grpc could not decode are malformed answers."""
    code = error.code() if hasattr(error, "code") else None
    details = (error.details() if hasattr(error, "details") else "") or ""
    if code is None:
        return "UNKNOWN", details
    if code == grpc.StatusCode.INTERNAL and details.startswith("Exception deserializing"):
        return INVALID_RESPONSE, "response is not a valid protobuf message"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return INVALID_RESPONSE, details
    return code.name, details


def timed(
    rpc: str, call: Callable[[], T], judge: Callable[[T], Judged], clock: list[float] | None = None
) -> ProbeResult:
    """Time `call` alone, then judge its answer; every failure becomes a code, never an exception.

    A stream call given `clock` records when its first message arrived; that, not the end of the
    call (which also cancels the stream), is the latency.
    """
    start = time.perf_counter()
    try:
        answer = call()
    except grpc.RpcError as e:
        code, message = classify(e)
        return ProbeResult(rpc, code, time.perf_counter() - start, message)
    except EmptyStreamError:
        return ProbeResult(
            rpc, INVALID_RESPONSE, time.perf_counter() - start, "stream ended before any message"
        )
    duration = (clock[0] if clock else time.perf_counter()) - start
    try:
        svids, bundles = judge(answer)
    except MalformedAnswer as e:
        return ProbeResult(rpc, e.code, duration, str(e))
    return ProbeResult(rpc, OK, duration, svids=tuple(svids), bundles=tuple(bundles))
