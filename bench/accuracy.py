#!/usr/bin/env python3
"""Benchmark 2, accuracy and overhead.

Against a fake Workload API with injected delays of 0, 1, 10 and 100 ms: the exporter's measured
latency minus the injected delay (median and p99). Against the real agent in the same run: the
exporter's FetchX509SVID and FetchJWTSVID medians beside a minimal grpcio client that does nothing
else, and beside `spire-agent api fetch x509` (its own reported time) and `api fetch jwt` (wall
time, process start included; its output, which holds a token, is discarded unread).

    .venv/bin/python -m bench.accuracy [--runs 200]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from bench.common import local_spire, median, pct, table
from exporter._proto import workload_pb2
from exporter.client import SECURITY_HEADER, WorkloadClient
from exporter.probes import jwt_svid, x509_svid
from exporter.result import ProbeResult
from exporter.settings import AudienceSettings
from harness.fake_agent import FakeAgent
from harness.local_spire import LocalSpire

SETTINGS = AudienceSettings(True, 15.0, 5.0, "bench")


def exporter_probe(
    client: WorkloadClient, probe: Callable[[WorkloadClient, AudienceSettings], ProbeResult], runs: int
) -> list[float]:
    probe(client, SETTINGS)  # connect first
    out = []
    for _ in range(runs):
        result = probe(client, SETTINGS)
        assert result.ok, result.message
        out.append(result.duration)
    return out


def minimal_client(socket_path: Path, runs: int) -> tuple[list[float], list[float]]:
    """The least a grpcio client can do: one channel, no parsing, first message then cancel."""
    channel = grpc.insecure_channel(f"unix:{socket_path}")
    x509: Any = channel.unary_stream(
        "/SpiffeWorkloadAPI/FetchX509SVID",
        lambda m: m.SerializeToString(),
        workload_pb2.X509SVIDResponse.FromString,
    )
    jwt: Any = channel.unary_unary(
        "/SpiffeWorkloadAPI/FetchJWTSVID",
        lambda m: m.SerializeToString(),
        workload_pb2.JWTSVIDResponse.FromString,
    )
    request = workload_pb2.JWTSVIDRequest(audience=["bench"])
    times_x509, times_jwt = [], []
    for i in range(runs + 1):
        start = time.perf_counter()
        stream = x509(workload_pb2.X509SVIDRequest(), timeout=5, metadata=SECURITY_HEADER)
        next(stream)
        elapsed = time.perf_counter() - start
        stream.cancel()
        start2 = time.perf_counter()
        jwt(request, timeout=5, metadata=SECURITY_HEADER)
        elapsed2 = time.perf_counter() - start2
        if i:  # the first call connects
            times_x509.append(elapsed)
            times_jwt.append(elapsed2)
    channel.close()
    return times_x509, times_jwt


def cli_times(spire: LocalSpire, runs: int) -> tuple[list[float], list[float]]:
    x509: list[float] = []
    jwt: list[float] = []
    for _ in range(runs):
        done = spire.agent_cli("api", "fetch", "x509", "-socketPath", str(spire.agent_socket))
        match = re.search(r"Received \d+ svid after ([\d.]+)(µs|ms|s)", done.stdout)
        if match:
            x509.append(float(match.group(1)) * {"µs": 1e-6, "ms": 1e-3, "s": 1.0}[match.group(2)])
        start = time.perf_counter()
        command = [str(spire.bin_dir / "spire-agent"), "api", "fetch", "jwt", "-audience", "bench"]
        command += ["-socketPath", str(spire.agent_socket)]
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=30)
        jwt.append(time.perf_counter() - start)
    return x509, jwt


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.3f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as d:
        fake = FakeAgent(f"{d}/fake.sock").start()
        prepared = fake.x509_svid(None)
        try:
            with WorkloadClient(f"unix://{d}/fake.sock") as client:
                for delay in (0.0, 0.001, 0.010, 0.100):
                    fake.set("FetchX509SVID", delay=delay, answer=lambda _r: prepared)
                    runs = args.runs if delay < 0.1 else max(20, args.runs // 4)
                    errors = [t - delay for t in exporter_probe(client, x509_svid.probe, runs)]
                    rows.append([f"{delay * 1000:.0f} ms", runs, ms(median(errors)), ms(pct(errors, 0.99))])
        finally:
            fake.stop()
    print("fake Workload API, FetchX509SVID with an exact injected delay: measured minus injected\n")
    print(table(["injected delay", "runs", "median error", "p99 error"], rows))

    with local_spire() as spire, WorkloadClient(f"unix://{spire.agent_socket}") as client:
        minimal_x509, minimal_jwt = minimal_client(spire.agent_socket, args.runs)
        ours_x509 = exporter_probe(client, x509_svid.probe, args.runs)
        ours_jwt = exporter_probe(client, jwt_svid.probe, args.runs)
        cli_x509, cli_jwt = cli_times(spire, max(10, args.runs // 10))
        version = spire.version
    print(f"\nreal spire-agent {version}, same run: median (p99)\n")
    print(
        table(
            ["client", "FetchX509SVID", "FetchJWTSVID"],
            [
                [
                    "minimal grpcio client",
                    f"{ms(median(minimal_x509))} ({ms(pct(minimal_x509, 0.99))})",
                    f"{ms(median(minimal_jwt))} ({ms(pct(minimal_jwt, 0.99))})",
                ],
                [
                    "the exporter's probe",
                    f"{ms(median(ours_x509))} ({ms(pct(ours_x509, 0.99))})",
                    f"{ms(median(ours_jwt))} ({ms(pct(ours_jwt, 0.99))})",
                ],
                [
                    "exporter minus minimal",
                    ms(median(ours_x509) - median(minimal_x509)),
                    ms(median(ours_jwt) - median(minimal_jwt)),
                ],
                [
                    "spire-agent api fetch (CLI)",
                    f"{ms(median(cli_x509))} (own report)",
                    f"{ms(median(cli_jwt))} (wall, incl. process start)",
                ],
            ],
        )
    )
    print("\ntarget: the exporter adds <= 0.5 ms to the median over the minimal client")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
