"""A small SPIFFE Workload API client over a Unix socket.

One channel is reused for every call: a new channel per request is one of the client habits
that makes agents slow. Every call carries the security header and a deadline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf.message import Message

from exporter._proto import debug_pb2, health_pb2, sds_pb2, workload_pb2
from exporter.endpoint import socket_target

SECURITY_HEADER = (("workload.spiffe.io", "true"),)

_SERVICE = "/SpiffeWorkloadAPI/"
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_DEBUG_GET_INFO = "/spire.agent.debug.v1.Debug/GetInfo"
_SDS = "/envoy.service.secret.v3.SecretDiscoveryService/"

# What grpc-go servers such as the agent accept by default: a ping at most every 5 minutes
# (a client that pings more often is sent GOAWAY "too_many_pings").
AGENT_MIN_PING_INTERVAL = 300.0
KEEPALIVE_TIMEOUT = 20.0


def channel_options(connect_timeout: float, keepalive: float) -> tuple[tuple[str, int], ...]:
    """Options of the one channel to the agent.

    The agent restarts in seconds; grpc's default reconnect backoff grows to two minutes, which
    would hide a recovered agent for far longer than it was down, so it is capped at 2 s. grpc
    also takes `min_reconnect_backoff` as the least time a connection attempt may take: left
    short, a handshake slower than it (a starved agent's) fails every call at once with
    UNAVAILABLE. It is the probes' deadline and a second: a handshake falls under the deadline,
    and one that never completes ends at the call's deadline (DEADLINE_EXCEEDED, as any hung
    agent does), not a moment before it as a failed connection.
    Keepalive pings on open calls find a stream whose agent stopped answering; without them a
    stalled watch looks quiet until its deadline. Pings go out even when we send no data (the
    watch sends none), since a stream can stall between rotations.
    """
    return (
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", round((connect_timeout + 1) * 1000)),
        ("grpc.max_reconnect_backoff_ms", 2000),
        ("grpc.enable_retries", 0),
        ("grpc.keepalive_time_ms", round(keepalive * 1000)),
        ("grpc.keepalive_timeout_ms", round(min(KEEPALIVE_TIMEOUT, keepalive) * 1000)),
        # grpc core (1.85) times an unanswered ping by this one, not the keepalive timeout.
        ("grpc.http2.ping_timeout_ms", round(min(KEEPALIVE_TIMEOUT, keepalive) * 1000)),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.http2.max_pings_without_data", 0),
    )


R = TypeVar("R", bound=Message)
Clock = list[float] | None


class WorkloadClient:
    """Calls the agent over one of its sockets: the Workload API and health on the workload
    socket, the Debug API on the admin socket. Every method takes a timeout in seconds and raises
    grpc.RpcError."""

    def __init__(
        self, endpoint: str, connect_timeout: float = 5.0, keepalive: float = AGENT_MIN_PING_INTERVAL
    ) -> None:
        self.endpoint = endpoint
        self._channel = grpc.insecure_channel(
            socket_target(endpoint), options=channel_options(connect_timeout, keepalive)
        )
        self._lock = threading.Lock()
        self._calls: dict[str, Any] = {}

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> WorkloadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _callable(self, method: str, kind: str, response: type[Message]) -> Any:
        with self._lock:
            if method not in self._calls:
                factory: Callable[..., Any] = getattr(self._channel, kind)
                self._calls[method] = factory(
                    method,
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=response.FromString,
                )
            return self._calls[method]

    def _unary(
        self, method: str, request: Message, response: type[R], timeout: float, header: bool = True
    ) -> R:
        call = self._callable(method, "unary_unary", response)
        answer: R = call(request, timeout=timeout, metadata=SECURITY_HEADER if header else None)
        return answer

    def _first(self, method: str, request: Message, response: type[R], timeout: float, clock: Clock) -> R:
        """The first message of a server stream; the stream is then cancelled.

        `clock`, if given, receives the perf_counter() of the first message's arrival, so a
        caller can time the answer without the cancellation that follows it.
        """
        call = self._callable(method, "unary_stream", response)
        stream = call(request, timeout=timeout, metadata=SECURITY_HEADER)
        try:
            message: R = next(stream)
            if clock is not None:
                clock.append(time.perf_counter())
            return message
        except StopIteration:
            # A stream that closes OK without a message is an answer the caller must judge.
            raise EmptyStreamError(method) from None
        finally:
            stream.cancel()

    def fetch_x509_svid(self, timeout: float, clock: Clock = None) -> workload_pb2.X509SVIDResponse:
        return self._first(
            _SERVICE + "FetchX509SVID",
            workload_pb2.X509SVIDRequest(),
            workload_pb2.X509SVIDResponse,
            timeout,
            clock,
        )

    def fetch_x509_bundles(self, timeout: float, clock: Clock = None) -> workload_pb2.X509BundlesResponse:
        return self._first(
            _SERVICE + "FetchX509Bundles",
            workload_pb2.X509BundlesRequest(),
            workload_pb2.X509BundlesResponse,
            timeout,
            clock,
        )

    def fetch_jwt_svid(self, audience: list[str], timeout: float) -> workload_pb2.JWTSVIDResponse:
        return self._unary(
            _SERVICE + "FetchJWTSVID",
            workload_pb2.JWTSVIDRequest(audience=audience),
            workload_pb2.JWTSVIDResponse,
            timeout,
        )

    def fetch_jwt_bundles(self, timeout: float, clock: Clock = None) -> workload_pb2.JWTBundlesResponse:
        return self._first(
            _SERVICE + "FetchJWTBundles",
            workload_pb2.JWTBundlesRequest(),
            workload_pb2.JWTBundlesResponse,
            timeout,
            clock,
        )

    def validate_jwt_svid(
        self, audience: str, token: str, timeout: float
    ) -> workload_pb2.ValidateJWTSVIDResponse:
        return self._unary(
            _SERVICE + "ValidateJWTSVID",
            workload_pb2.ValidateJWTSVIDRequest(audience=audience, svid=token),
            workload_pb2.ValidateJWTSVIDResponse,
            timeout,
        )

    def health_check(self, timeout: float) -> health_pb2.HealthCheckResponse:
        return self._unary(
            _HEALTH_CHECK,
            health_pb2.HealthCheckRequest(),
            health_pb2.HealthCheckResponse,
            timeout,
            header=False,  # the health service needs no header, as `spire-agent healthcheck` sends none
        )

    def debug_get_info(self, timeout: float) -> debug_pb2.GetInfoResponse:
        """The agent's Debug API (admin socket), which needs no security header."""
        return self._unary(
            _DEBUG_GET_INFO, debug_pb2.GetInfoRequest(), debug_pb2.GetInfoResponse, timeout, header=False
        )

    def fetch_secrets(self, request: sds_pb2.DiscoveryRequest, timeout: float) -> sds_pb2.DiscoveryResponse:
        """Envoy's SDS FetchSecrets; like Envoy, without the Workload API's security header."""
        return self._unary(_SDS + "FetchSecrets", request, sds_pb2.DiscoveryResponse, timeout, header=False)

    def stream_secrets(self, requests: Iterator[sds_pb2.DiscoveryRequest], timeout: float) -> WatchStream:
        """Envoy's SDS StreamSecrets: `requests` are sent as the caller yields them (the first
        request, then an ACK per answer); the deadline bounds the stream's whole life."""
        call = self._callable(_SDS + "StreamSecrets", "stream_stream", sds_pb2.DiscoveryResponse)
        return WatchStream(call(requests, timeout=timeout))

    def watch_x509_svid(self, timeout: float) -> WatchStream:
        """A long-lived FetchX509SVID stream; the deadline bounds its whole life."""
        call = self._callable(_SERVICE + "FetchX509SVID", "unary_stream", workload_pb2.X509SVIDResponse)
        return WatchStream(call(workload_pb2.X509SVIDRequest(), timeout=timeout, metadata=SECURITY_HEADER))


class EmptyStreamError(Exception):
    """The server closed a stream with OK before sending its first message."""


class WatchStream:
    """Iterates a server stream's answers until it ends; cancel() may be called from any thread."""

    def __init__(self, call: Any) -> None:
        self._call = call

    def __iter__(self) -> Iterator[Any]:
        return iter(self._call)

    def cancel(self) -> None:
        self._call.cancel()
