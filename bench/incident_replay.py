"""The seed's incident, replayed on a real agent: SPIRE before #5408 against the default release.

For each release (SPIRE_INCIDENT_VERSION and SPIRE_VERSION from versions.env), in a one-node
cluster of its own (harness/local_cluster.py, root only):

1. SPIRE with the `k8s` workload attestor and an agent memory limit, prometheus-operator's
   Prometheus and Alertmanager with the shipped rules (chart defaults, no tuning), and the
   exporter's chart.
2. A large pod list: `--bulk-pods` pods, each with an annotation of `--annotation-kib` KiB.
3. Load: `--load-pods` pods, each making `--concurrency` Workload API calls at a time for
   `--load-seconds`, every call on a new connection (a source per request), so that every call
   is a new workload attestation, which before #5408 fetched and parsed the kubelet's whole pod
   list.
4. Prometheus' own record of the exporter's series over the run, and of every alert that fired.

    python -m bench.incident_replay                     # both releases; about 10 minutes each
    python -m bench.incident_replay --write-doc         # and rewrite docs/incident-replay.md

Each release runs in a child process (`--one`) with SPIRE_VERSION set, since the cluster
harness reads its versions once. Every loop is bounded: the load pods stop by themselves.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from harness import versions
from harness.paths import CHART, ROOT

DOC = ROOT / "docs" / "incident-replay.md"
PLOTS = ROOT / "docs" / "incident-replay"
STEP = 5  # seconds between Prometheus' samples (the monitors' interval)

# One Workload API call per connection, as a client that builds a source per request does; it
# counts the answers by code and prints them when its time is up.
LOAD = """
import collections, sys, threading, time
import grpc
from exporter.client import WorkloadClient
socket, concurrency, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
end = time.monotonic() + seconds
codes = collections.Counter()
def worker():
    while time.monotonic() < end:
        with WorkloadClient(socket) as client:
            try:
                client.fetch_x509_svid(5.0)
                codes["OK"] += 1
            except grpc.RpcError as e:
                codes[e.code().name] += 1
            except Exception as e:
                codes[type(e).__name__] += 1
threads = [threading.Thread(target=worker) for _ in range(concurrency)]
for t in threads: t.start()
for t in threads: t.join()
print(dict(codes), flush=True)
"""

# The series the replay reads from Prometheus, by what they show.
SERIES = {
    "working_set_bytes": "max(spire_health_agent_cgroup_memory_working_set_bytes)",
    "limit_bytes": "max(spire_health_agent_cgroup_memory_limit_bytes)",
    "peak_rss_bytes": "max(spire_health_agent_process_peak_resident_memory_bytes)",
    "cgroup_peak_bytes": "max(spire_health_agent_cgroup_memory_peak_bytes)",
    "rss_bytes": "max(spire_health_agent_process_resident_memory_bytes)",
    "oom_kills": "max(spire_health_agent_cgroup_oom_kills_total)",
    "agent_start_time": "max(spire_health_agent_process_start_time_seconds)",
    "agent_up": "max(spire_health_agent_process_up)",
    # The mean of successful probes over 30 s; a deadline shows in deadline_exceeded instead.
    "x509_latency_seconds": 'max(rate(spire_health_probe_duration_seconds_sum{rpc="fetch_x509_svid"}[30s]) '
    '/ rate(spire_health_probe_duration_seconds_count{rpc="fetch_x509_svid"}[30s]))',
    "timeout_seconds": "vector(5)",  # the exporter's default deadline, which the replay keeps
    "deadline_exceeded": 'sum(spire_health_probes_total{code="DEADLINE_EXCEEDED"})',
    "probe_failures": 'sum(spire_health_probes_total{code!="OK"})',
}


def bulk_pod(i: int, kib: int, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"bulk-{i}",
            "namespace": "bulk",
            # Not a character repeated: the kubelet's JSON is what the attestor parses.
            "annotations": {"replay.example/padding": os.urandom(kib * 1024 // 2).hex()},
        },
        "spec": {
            "hostNetwork": True,
            "containers": [{"name": "idle", "image": image, "imagePullPolicy": "Never"}],
            "terminationGracePeriodSeconds": 0,
        },
    }


def load_pod(i: int, image: str, concurrency: int, seconds: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"load-{i}", "namespace": "load"},
        "spec": {
            "hostNetwork": True,
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "client",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": [
                        "/venv/bin/python",
                        "-c",
                        LOAD,
                        "unix:///sockets/spire-agent.sock",
                        str(concurrency),
                        str(seconds),
                    ],
                    "volumeMounts": [{"name": "sockets", "mountPath": "/sockets", "readOnly": True}],
                }
            ],
            "volumes": [{"name": "sockets", "hostPath": {"path": "/run/spire/agent-sockets"}}],
            "terminationGracePeriodSeconds": 0,
        },
    }


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One release, in its own cluster: the whole replay, its series and its alerts."""
    from harness import local_cluster as lc

    cluster = lc.Cluster(Path(tempfile.mkdtemp(prefix="she-replay-")))
    try:
        cluster.up()
        cluster.monitoring(lc.shipped_alertmanager_config(), f"{STEP}s")
        values = {
            "image": {"repository": lc.EXPORTER_IMAGE.rsplit(":", 1)[0], "tag": "dev", "pullPolicy": "Never"},
            "probes": {"interval": "5s", "timeout": "5s"},
            "config": {"agent": {"sample_interval": "1s"}},
            "agentHealth": {"url": "http://$(HOST_IP):9980"},
            "podMonitor": {"enabled": True, "interval": f"{STEP}s", "scrapeTimeout": f"{STEP - 1}s"},
            "prometheusRule": {"enabled": True},
        }
        path = cluster.dir / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        cluster.helm(
            "install",
            lc.EXPORTER_RELEASE,
            str(CHART),
            "--namespace",
            lc.EXPORTER_NAMESPACE,
            "--values",
            str(path),
        )
        cluster.rollout(lc.EXPORTER_NAMESPACE, f"daemonset/{lc.EXPORTER_RELEASE}")
        for namespace in ("bulk", "load"):
            cluster.kubectl("create", "namespace", namespace)
        started = time.time()
        time.sleep(args.baseline_seconds)
        pods = [bulk_pod(i, args.annotation_kib, lc.PAUSE_IMAGE) for i in range(args.bulk_pods)]
        # create, not apply: apply would copy each pod, annotation and all, into another annotation.
        cluster.kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(pods), timeout=300)
        cluster.kubectl(
            "wait", "--for=condition=Ready", "pod", "--all", "-n", "bulk", "--timeout=300s", timeout=310
        )
        load_start = time.time()
        loads = [
            load_pod(i, lc.EXPORTER_IMAGE, args.concurrency, args.load_seconds) for i in range(args.load_pods)
        ]
        cluster.kubectl("create", "-f", "-", stdin=yaml.safe_dump_all(loads))
        time.sleep(args.load_seconds + 10)
        load_end = time.time()
        time.sleep(args.recovery_seconds)
        ended = time.time()
        clients = {
            f"load-{i}": cluster.kubectl("logs", "-n", "load", f"load-{i}", check=False).strip()[-300:]
            for i in range(args.load_pods)
        }
        series = {name: _range(cluster, expr, started, ended) for name, expr in SERIES.items()}
        alerts = _alerts(cluster, started, ended)
        agents = cluster.kubectl_json(
            "get", "pods", "-n", "spire-system", "-l", "app.kubernetes.io/name=spire-agent"
        )
        statuses = [c for p in agents["items"] for c in p["status"].get("containerStatuses", [])]
        agent_restarts = sum(c.get("restartCount", 0) for c in statuses)
        # What the kubelet saw end the last agent container: OOMKilled, with exit code 137.
        last_end = [c.get("lastState", {}).get("terminated", {}) for c in statuses]
        return {
            "version": versions.SPIRE,
            "settings": {
                k: v for k, v in vars(args).items() if k not in ("one", "out", "write_doc", "versions")
            },
            "started": started,
            "load_start": load_start,
            "load_end": load_end,
            "ended": ended,
            "series": series,
            "alerts": alerts,
            "agent_container_restarts": agent_restarts,
            "agent_last_termination": [
                f"{t.get('reason')} (exit {t.get('exitCode')})" for t in last_end if t
            ],
            "clients": clients,
        }
    finally:
        cluster.down()


def _range(cluster: Any, expr: str, start: float, end: float) -> list[tuple[float, float]]:
    answer = cluster.prometheus(
        "api/v1/query_range", query=expr, start=str(start), end=str(end), step=str(STEP)
    )
    result = answer["data"]["result"]
    return [(float(t), float(v)) for t, v in result[0]["values"]] if result else []


def _alerts(cluster: Any, start: float, end: float) -> dict[str, float]:
    """Each shipped alert that fired during the run, with the time it first fired."""
    answer = cluster.prometheus(
        "api/v1/query_range",
        query='ALERTS{alertstate="firing"}',
        start=str(start),
        end=str(end),
        step=str(STEP),
    )
    first: dict[str, float] = {}
    for series in answer["data"]["result"]:
        name = series["metric"]["alertname"]
        when = float(series["values"][0][0])
        first[name] = min(first.get(name, when), when)
    return first


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--versions", nargs="+", default=[versions.SPIRE_INCIDENT, versions.SPIRE])
    parser.add_argument("--memory-limit", default="256Mi", help="the agent container's memory limit")
    parser.add_argument("--bulk-pods", type=int, default=40)
    parser.add_argument("--annotation-kib", type=int, default=200)
    parser.add_argument("--load-pods", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--load-seconds", type=int, default=180)
    parser.add_argument("--baseline-seconds", type=int, default=60)
    parser.add_argument("--recovery-seconds", type=int, default=180)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="where --one writes its JSON")
    parser.add_argument("--write-doc", action="store_true", help="rewrite docs/incident-replay.md")
    parser.add_argument("--report", type=Path, help="render a previous run's raw results instead of running")
    args = parser.parse_args()
    if os.geteuid() != 0 and not args.report:
        print("error: the replay runs a Kubernetes node: run it as root", file=sys.stderr)
        return 3
    if args.one:
        args.out.write_text(json.dumps(run_one(args), indent=1))
        return 0
    if args.report:
        runs = json.loads(args.report.read_text())
        return _report(runs, args.write_doc)
    results = Path(tempfile.mkstemp(prefix="incident-replay-", suffix=".json")[1])
    runs = []
    for version in args.versions:
        out = Path(tempfile.mkstemp(prefix=f"replay-{version}-", suffix=".json")[1])
        child = [sys.executable, "-m", "bench.incident_replay", "--one", "--out", str(out)]
        for key in ("memory_limit", "bulk_pods", "annotation_kib", "load_pods", "concurrency", "load_seconds",
                    "baseline_seconds", "recovery_seconds"):  # fmt: skip
            child += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        env = {**os.environ, "SPIRE_VERSION": version, "SHE_AGENT_MEMORY_LIMIT": args.memory_limit}
        print(f"== SPIRE {version}", file=sys.stderr, flush=True)
        subprocess.run(child, env=env, check=True, timeout=3600)
        runs.append(json.loads(out.read_text()))
        out.unlink()
        results.write_text(json.dumps(runs))
        print(f"raw results so far: {results} (--report it to render again)", file=sys.stderr)
    return _report(runs, args.write_doc)


def _report(runs: list[dict[str, Any]], write_doc: bool) -> int:
    from bench import incident_report

    print(incident_report.summary(runs))
    if write_doc:
        incident_report.write(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
