"""grpc.health.v1 Check on the agent socket, the call `spire-agent healthcheck` makes."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric

from exporter._proto import health_pb2
from exporter.answers import MalformedAnswer
from exporter.client import WorkloadClient
from exporter.probes.base import ProbeSpec, stateless, timed
from exporter.result import ProbeResult
from exporter.settings import ProbeSettings

NAME = "health_check"
NOT_SERVING = "NOT_SERVING"
# The agent's own health check counts PERMISSION_DENIED as an answering, serving agent.
SERVING_CODES = ("OK", "PERMISSION_DENIED")


class NotServing(MalformedAnswer):
    code = NOT_SERVING


def probe(client: WorkloadClient, settings: ProbeSettings) -> ProbeResult:
    return timed(NAME, lambda: client.health_check(settings.timeout), _judge)


def _judge(answer: health_pb2.HealthCheckResponse) -> tuple[()]:
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        raise NotServing(f"status {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}")
    return ()


def series(latest: ProbeResult | None) -> Iterator[Metric]:
    serving = GaugeMetricFamily(
        "spire_health_agent_grpc_health_serving",
        "Whether the agent socket's grpc.health.v1 Check says SERVING (1) or not (0).",
    )
    if latest is not None:
        serving.add_metric([], 1 if latest.code in SERVING_CODES else 0)
    yield serving


SPEC: ProbeSpec[ProbeSettings] = ProbeSpec(
    NAME,
    "grpc.health.v1 Check on the agent socket.",
    stateless(probe),
    codes=(NOT_SERVING,),
    series=series,
    latency=False,  # the agent's liveness; how fast it answers is the Workload API probes' figure
)
