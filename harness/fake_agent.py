"""A fake Workload API server for faults a real agent can't produce on demand.

Per method it can delay by an exact time, abort with a chosen status, send a chosen (possibly
malformed) answer, or never answer at all. Every wait is bounded so the server always stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from exporter._proto import debug_pb2, health_pb2, workload_pb2
from harness.certs import TestCA, jwks, make_jwt

MAX_HANG = 30.0


@dataclass
class Behavior:
    delay: float = 0.0
    code: grpc.StatusCode | None = None
    details: str = "injected"
    answer: Callable[[Any], Any] | None = None  # request -> message or raw bytes
    never_answer: bool = False
    close_without_message: bool = False
    resend_every: float = 0.0  # streams: a new answer this often, as in a rotation storm


class FakeAgent:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self.ca = TestCA()
        self.spiffe_id = "spiffe://fake.test/probe"
        self.behaviors: dict[str, Behavior] = {}
        self.calls: dict[str, int] = {}
        self._stop = threading.Event()
        # Keepalive pings as often as a test's client sends them (grpc's default refuses pings
        # more often than every 5 minutes, as the agent does).
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=(
                ("grpc.http2.min_ping_interval_without_data_ms", 100),
                ("grpc.http2.max_ping_strikes", 0),
            ),
        )
        methods: dict[str, tuple[bool, Any, Callable[[Any], Any]]] = {
            "FetchX509SVID": (True, workload_pb2.X509SVIDRequest, self.x509_svid),
            "FetchX509Bundles": (True, workload_pb2.X509BundlesRequest, self.x509_bundles),
            "FetchJWTSVID": (False, workload_pb2.JWTSVIDRequest, self.jwt_svid),
            "FetchJWTBundles": (True, workload_pb2.JWTBundlesRequest, self.jwt_bundles),
            "ValidateJWTSVID": (False, workload_pb2.ValidateJWTSVIDRequest, self.validate),
        }
        handlers = {name: self._handler(name, *spec) for name, spec in methods.items()}
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler("SpiffeWorkloadAPI", handlers),
                # The admin socket's Debug API, served here on the same socket for fault tests.
                grpc.method_handlers_generic_handler(
                    "spire.agent.debug.v1.Debug",
                    {"GetInfo": self._handler("GetInfo", False, debug_pb2.GetInfoRequest, self.get_info)},
                ),
                grpc.method_handlers_generic_handler(
                    "grpc.health.v1.Health",
                    {"Check": self._handler("Check", False, health_pb2.HealthCheckRequest, self.health)},
                ),
            )
        )
        self.server.add_insecure_port(f"unix:{socket_path}")

    def start(self) -> FakeAgent:
        self.server.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.stop(grace=None)

    def set(self, method: str, **kwargs: Any) -> None:
        self.behaviors[method] = Behavior(**kwargs)

    def set_all(self, **kwargs: Any) -> None:
        for method in (
            "FetchX509SVID",
            "FetchX509Bundles",
            "FetchJWTSVID",
            "FetchJWTBundles",
            "ValidateJWTSVID",
        ):
            self.set(method, **kwargs)

    def reset(self) -> None:
        self.behaviors.clear()

    # -- default, well-formed answers -----------------------------------------------------------

    def x509_svid(self, _req: Any) -> workload_pb2.X509SVIDResponse:
        cert, key, _ = self.ca.leaf(self.spiffe_id)
        svid = workload_pb2.X509SVID(
            spiffe_id=self.spiffe_id, x509_svid=cert, x509_svid_key=key, bundle=self.ca.der
        )
        return workload_pb2.X509SVIDResponse(svids=[svid])

    def x509_bundles(self, _req: Any) -> workload_pb2.X509BundlesResponse:
        return workload_pb2.X509BundlesResponse(bundles={"spiffe://fake.test": self.ca.der})

    def jwt_token(self, audience: list[str], **overrides: Any) -> str:
        now = int(time.time())
        claims = {"sub": self.spiffe_id, "aud": audience, "iat": now, "exp": now + 300, **overrides}
        return make_jwt({k: v for k, v in claims.items() if v is not None})

    def jwt_svid(self, req: workload_pb2.JWTSVIDRequest) -> workload_pb2.JWTSVIDResponse:
        token = self.jwt_token(list(req.audience))
        return workload_pb2.JWTSVIDResponse(
            svids=[workload_pb2.JWTSVID(spiffe_id=self.spiffe_id, svid=token)]
        )

    def jwt_bundles(self, _req: Any) -> workload_pb2.JWTBundlesResponse:
        return workload_pb2.JWTBundlesResponse(bundles={"spiffe://fake.test": jwks()})

    def validate(self, req: workload_pb2.ValidateJWTSVIDRequest) -> workload_pb2.ValidateJWTSVIDResponse:
        response = workload_pb2.ValidateJWTSVIDResponse(spiffe_id=self.spiffe_id)
        response.claims.update({"sub": self.spiffe_id, "aud": [req.audience]})
        return response

    def get_info(self, _req: Any) -> debug_pb2.GetInfoResponse:
        now = int(time.time())
        cert = debug_pb2.GetInfoResponse.Cert(
            id=debug_pb2.SPIFFEID(trust_domain="fake.test", path="/spire/agent/fake"), expires_at=now + 3600
        )
        return debug_pb2.GetInfoResponse(
            svid_chain=[cert], uptime=60, last_sync_success=now - 2, cached_x509_svids_count=1
        )

    def health(self, _req: Any) -> health_pb2.HealthCheckResponse:
        return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    # -- plumbing -------------------------------------------------------------------------------

    def _hang(self, context: grpc.ServicerContext) -> None:
        end = time.monotonic() + MAX_HANG
        while context.is_active() and not self._stop.is_set() and time.monotonic() < end:
            time.sleep(0.01)

    def _handler(self, name: str, streaming: bool, request_type: Any, default: Callable[[Any], Any]) -> Any:
        def serialize(message: Any) -> bytes:
            return message if isinstance(message, bytes) else message.SerializeToString()

        def answer(request: Any, context: grpc.ServicerContext) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            behavior = self.behaviors.get(name, Behavior())
            if behavior.delay:
                time.sleep(behavior.delay)
            if behavior.code is not None:
                context.abort(behavior.code, behavior.details)
            if behavior.never_answer:
                self._hang(context)
                context.abort(grpc.StatusCode.CANCELLED, "gave up")
            return (behavior.answer or default)(request)

        if not streaming:
            return grpc.unary_unary_rpc_method_handler(
                answer, request_deserializer=request_type.FromString, response_serializer=serialize
            )

        def stream(request: Any, context: grpc.ServicerContext) -> Any:
            first = answer(request, context)
            if self.behaviors.get(name, Behavior()).close_without_message:
                return
            yield first
            every = self.behaviors.get(name, Behavior()).resend_every
            end = time.monotonic() + MAX_HANG
            while every and context.is_active() and not self._stop.is_set() and time.monotonic() < end:
                time.sleep(every)
                yield answer(request, context)
            self._hang(context)  # a real agent keeps the stream open for updates

        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=request_type.FromString, response_serializer=serialize
        )


def svid_answer(
    fake: FakeAgent,
    cert: bytes | None = None,
    spiffe_id: str | None = None,
    key: bytes = b"k",
    bundle: bytes | None = None,
) -> Callable[[Any], workload_pb2.X509SVIDResponse]:
    """An X509SVIDResponse from the fake's CA, with the parts a test wants broken replaced."""

    def answer(_req: Any) -> workload_pb2.X509SVIDResponse:
        leaf, _, _ = fake.ca.leaf(fake.spiffe_id)
        return workload_pb2.X509SVIDResponse(
            svids=[
                workload_pb2.X509SVID(
                    spiffe_id=spiffe_id or fake.spiffe_id,
                    x509_svid=leaf if cert is None else cert,
                    x509_svid_key=key,
                    bundle=fake.ca.der if bundle is None else bundle,
                )
            ]
        )

    return answer


def jwt_answer(
    fake: FakeAgent, token_of: Callable[[list[str]], str]
) -> Callable[[Any], workload_pb2.JWTSVIDResponse]:
    """A JWTSVIDResponse carrying the token `token_of` makes for the requested audience."""

    def answer(req: Any) -> workload_pb2.JWTSVIDResponse:
        token = token_of(list(req.audience))
        return workload_pb2.JWTSVIDResponse(
            svids=[workload_pb2.JWTSVID(spiffe_id=fake.spiffe_id, svid=token)]
        )

    return answer
