"""grpc.health.v1 Check on the agent socket, the call `spire-agent healthcheck` makes."""

from __future__ import annotations

from dataclasses import replace

from exporter import names
from exporter._proto import health_pb2
from exporter.answers import MalformedAnswer
from exporter.client import WorkloadClient
from exporter.config import ProbeSettings
from exporter.probes.base import Judged, timed
from exporter.state import ProbeResult

RPC = names.HEALTH_CHECK
NOT_SERVING = "NOT_SERVING"
CODES = (NOT_SERVING,)
# The agent's own health check counts PERMISSION_DENIED as an answering, serving agent.
SERVING_CODES = ("OK", "PERMISSION_DENIED")


class NotServing(MalformedAnswer):
    code = NOT_SERVING


def probe(client: WorkloadClient, settings: ProbeSettings) -> ProbeResult:
    result = timed(RPC, lambda: client.health_check(settings.timeout), _judge)
    return replace(result, serving=result.code in SERVING_CODES)


def _judge(answer: health_pb2.HealthCheckResponse) -> Judged:
    if answer.status != health_pb2.HealthCheckResponse.SERVING:
        raise NotServing(f"status {health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)}")
    return (), ()
