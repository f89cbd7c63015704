"""What every prober shares: one signature, one self-description (ProbeSpec), one way to time a
call and judge its answer, and one guard that turns anything unexpected into a counted result."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
from prometheus_client.core import Metric

from exporter.answers import INVALID_RESPONSE, MalformedAnswer
from exporter.client import EmptyStreamError, WorkloadClient
from exporter.logs import describe
from exporter.result import EXPORTER_ERROR, OK, ProbeResult
from exporter.settings import ProbeSettings
from exporter.unavailable import reason

T = TypeVar("T")
S = TypeVar("S", bound=ProbeSettings)

Probe = Callable[[WorkloadClient, S], ProbeResult]


@dataclass(frozen=True)
class ProbeSpec(Generic[S]):
    """A probe, described once: everything config, scheduler, state and collector need of it."""

    name: str  # its key under `probes`, its job and its `rpc` label value
    summary: str  # one line for docs/configuration.md
    make: Callable[[], Probe[S]]  # a fresh probe; one that keeps state between runs is an object
    settings: type[S] = ProbeSettings  # type: ignore[assignment]
    codes: tuple[str, ...] = ()  # failure codes of its own, for the docs
    # Series of its own, from its latest result (None before the first): families always, samples when known.
    series: Callable[[ProbeResult | None], Iterator[Metric]] | None = None
    # Settings that depend on other probes' (may raise ConfigError).
    settle: Callable[[S, Mapping[str, ProbeSettings]], S] | None = None
    # Whether its latency histogram is exported: it costs a series per bucket on every node, so
    # only where a panel or an alert reads it.
    latency: bool = True

    def build(self) -> Callable[[WorkloadClient, S], ProbeResult]:
        """The probe, guarded: whatever it raises becomes an EXPORTER_ERROR result, never an exception."""
        probe = self.make()

        def guarded(client: WorkloadClient, settings: S) -> ProbeResult:
            start = time.perf_counter()
            try:
                return probe(client, settings)
            except Exception as e:
                return ProbeResult(self.name, EXPORTER_ERROR, time.perf_counter() - start, describe(e))

        return guarded


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
    rpc: str,
    call: Callable[[], T],
    judge: Callable[[T], Sequence[object]],
    clock: list[float] | None = None,
) -> ProbeResult:
    """Time `call` alone, then judge its answer into facts; every failure becomes a code.

    A stream call given `clock` records when its first message arrived; that, not the end of the
    call (which also cancels the stream), is the latency.
    """
    start = time.perf_counter()
    try:
        answer = call()
    except grpc.RpcError as e:
        code, message = classify(e)
        return ProbeResult(rpc, code, time.perf_counter() - start, message, reason=reason(code, message))
    except EmptyStreamError:
        return ProbeResult(
            rpc, INVALID_RESPONSE, time.perf_counter() - start, "stream ended before any message"
        )
    duration = (clock[0] if clock else time.perf_counter()) - start
    try:
        facts = judge(answer)
    except MalformedAnswer as e:
        return ProbeResult(rpc, e.code, duration, str(e))
    return ProbeResult(rpc, OK, duration, facts=tuple(facts))


F = TypeVar("F")


def latest_fact(latest: ProbeResult | None, kind: type[F]) -> F | None:
    """The fact of `kind` in a probe's latest result, for its own series."""
    return next((f for f in latest.facts if isinstance(f, kind)), None) if latest else None


def stateless(probe: Callable[[WorkloadClient, Any], ProbeResult]) -> Callable[[], Probe[Any]]:
    """The `make` of a probe that is a plain function."""
    return lambda: probe
