#!/usr/bin/env python3
"""Workload API clients that behave as real workloads do, well and badly, for tests and benchmarks.

    python -m harness.workload_clients good     --socket PATH --seconds 30
    python -m harness.workload_clients per-call --socket PATH --seconds 30 --rate 20
    python -m harness.workload_clients leak     --socket PATH --seconds 60 --rate 2 --max 40

good:     one channel and one FetchX509SVID stream for the whole run, as an X509Source used
          right (one source per process, closed on exit); it reads every rotation the agent pushes.
per-call: a new channel, one FetchX509SVID answer, and the channel closed, for every request: the
          "new source per request" pattern.
leak:     a new channel and stream per request, never closed: the leaked-source pattern. Each
          gets its own connection, as separate go-spiffe sources or grpc-go ClientConns do
          (grpc-python would otherwise share one connection between channels to one target).

Every mode stops by itself after --seconds (and leak after --max streams); each prints one JSON
line with what it did, and for good the latency of its calls.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import grpc

from exporter._proto import workload_pb2

HEADER = (("workload.spiffe.io", "true"),)
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)
DEADLINE = 5.0


def _stream(channel: grpc.Channel, timeout: float) -> Any:
    fetch = channel.unary_stream(
        "/SpiffeWorkloadAPI/FetchX509SVID",
        request_serializer=workload_pb2.X509SVIDRequest.SerializeToString,
        response_deserializer=workload_pb2.X509SVIDResponse.FromString,
    )
    return fetch(workload_pb2.X509SVIDRequest(), timeout=timeout, metadata=HEADER)


def _bundles(channel: grpc.Channel) -> None:
    fetch = channel.unary_stream(
        "/SpiffeWorkloadAPI/FetchX509Bundles",
        request_serializer=workload_pb2.X509BundlesRequest.SerializeToString,
        response_deserializer=workload_pb2.X509BundlesResponse.FromString,
    )
    call = fetch(workload_pb2.X509BundlesRequest(), timeout=DEADLINE, metadata=HEADER)
    next(call)
    call.cancel()


def good(target: str, seconds: float, rate: float) -> dict[str, Any]:
    """One channel for everything; one long-lived SVID stream read in the background, and
    `rate` bundle fetches a second on the same channel, timed."""
    latencies: list[float] = []
    with grpc.insecure_channel(target) as channel:
        stream = _stream(channel, seconds + DEADLINE)
        updates = [0]

        def read() -> None:
            try:
                for _ in stream:
                    updates[0] += 1
            except grpc.RpcError:
                pass  # cancelled at the end

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            start = time.perf_counter()
            _bundles(channel)
            latencies.append(time.perf_counter() - start)
            time.sleep(max(0.0, 1 / rate - (time.perf_counter() - start)) if rate else seconds)
        stream.cancel()
        reader.join(DEADLINE)
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None
    return {"mode": "good", "calls": len(latencies), "svid_updates": updates[0], "p99_seconds": p99}


def per_call(target: str, seconds: float, rate: float) -> dict[str, Any]:
    calls = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        start = time.perf_counter()
        with grpc.insecure_channel(target, options=OWN_CONNECTION) as channel:
            call = _stream(channel, DEADLINE)
            next(call)
            call.cancel()
        calls += 1
        time.sleep(max(0.0, 1 / rate - (time.perf_counter() - start)))
    return {"mode": "per-call", "calls": calls}


def leak(target: str, seconds: float, rate: float, most: int) -> dict[str, Any]:
    leaked: list[tuple[grpc.Channel, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(leaked) < most:
            channel = grpc.insecure_channel(target, options=OWN_CONNECTION)
            call = _stream(channel, seconds + DEADLINE)
            next(call)
            leaked.append((channel, call))
            print(json.dumps({"open": len(leaked)}), flush=True)
        time.sleep(1 / rate)
    for channel, call in leaked:  # the run is bounded; the leak is the point until then
        call.cancel()
        channel.close()
    return {"mode": "leak", "streams": len(leaked)}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["good", "per-call", "leak"])
    parser.add_argument("--socket", required=True, help="the agent's Workload API socket path")
    parser.add_argument("--seconds", type=float, default=30, help="how long to run (default 30)")
    parser.add_argument("--rate", type=float, default=10, help="requests per second (default 10)")
    parser.add_argument("--max", type=int, default=100, help="leak: most streams left open (default 100)")
    args = parser.parse_args()
    target = "unix:" + args.socket
    if args.mode == "good":
        result = good(target, args.seconds, args.rate)
    elif args.mode == "per-call":
        result = per_call(target, args.seconds, args.rate)
    else:
        result = leak(target, args.seconds, args.rate, args.max)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
