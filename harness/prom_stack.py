"""A real Prometheus and Alertmanager (Debian's packages) on loopback, and a webhook receiver."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from harness.local_spire import free_port, stop_process, wait_until
from harness.paths import ROOT

ALERTMANAGER_NAMES = ("prometheus-alertmanager", "alertmanager")


def binaries() -> tuple[str | None, str | None]:
    am = next((shutil.which(n) for n in ALERTMANAGER_NAMES if shutil.which(n)), None)
    return shutil.which("prometheus"), am


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


class Webhook:
    """Collects what Alertmanager delivers, by receiver path."""

    def __init__(self) -> None:
        received: list[tuple[str, dict[str, Any]]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, status: str, alertname: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (path, alert)
            for path, payload in list(self.received)
            for alert in payload["alerts"]
            if alert["status"] == status and alert["labels"].get("alertname") == alertname
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def spawn(workdir: Path, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
    with open(workdir / f"{name}.log", "wb") as log:
        return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


class Alertmanager:
    """A real Alertmanager configured from the shipped example, its receivers pointed at
    `webhook` and its group waits shortened to 1 s; routes, grouping and inhibitions as shipped."""

    def __init__(
        self,
        workdir: Path,
        webhook: Webhook,
        prefix: str = "",
        inhibitions: bool = True,
        timing: tuple[str, str] = ("1s", "1s"),
    ) -> None:
        """`prefix` goes before each receiver's path; `inhibitions` False drops the example's
        inhibit_rules; `timing` is (group_wait, group_interval)."""
        _, binary = binaries()
        assert binary
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        shipped = yaml.safe_load((ROOT / "alerts" / "alertmanager.example.yml").read_text())
        shipped["route"].update(group_wait=timing[0], group_interval=timing[1])
        if not inhibitions:
            shipped.pop("inhibit_rules")
        for receiver in shipped["receivers"]:
            for hook in receiver.get("webhook_configs", []):
                hook["url"] = webhook.url + prefix + "/" + receiver["name"]
        (workdir / "alertmanager.yml").write_text(yaml.safe_dump(shipped))
        self.process = spawn(
            workdir,
            "alertmanager",
            [
                binary,
                f"--config.file={workdir / 'alertmanager.yml'}",
                f"--storage.path={workdir / 'am'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # no gossip port on all interfaces
            ],
        )
        try:
            wait_until(lambda: ready(self.url + "/-/ready"), 60, "Alertmanager to be ready")
        except BaseException:
            self.stop()
            raise

    def post(self, alerts: list[dict[str, Any]]) -> None:
        request = urllib.request.Request(
            self.url + "/api/v2/alerts",
            data=json.dumps(alerts).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200

    def alerts(self) -> list[dict[str, Any]]:
        answer: list[dict[str, Any]] = get_json(self.url + "/api/v2/alerts")
        return answer

    def stop(self) -> None:
        stop_process(self.process, grace=15)


class PromStack:
    """Prometheus scraping one exporter with the given rule file, alerting a local Alertmanager
    configured from the shipped example with its receivers pointed at `webhook`. `jobs` adds
    other targets by job name (SPIRE's own telemetry), one address or several, with the same
    labels."""

    def __init__(
        self,
        workdir: Path,
        exporter_address: str,
        rules: Path,
        webhook: Webhook,
        labels: dict[str, str],
        jobs: dict[str, str | list[str]] | None = None,
    ) -> None:
        prometheus, _ = binaries()
        assert prometheus
        self.dir = workdir
        self.prom_port = free_port()
        self.alertmanager = Alertmanager(workdir, webhook)
        (workdir / "prometheus.yml").write_text(
            yaml.safe_dump(
                {
                    "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                    "rule_files": [str(rules)],
                    "alerting": {
                        "alertmanagers": [
                            {"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager.port}"]}]}
                        ]
                    },
                    "scrape_configs": [
                        {
                            "job_name": job,
                            "static_configs": [
                                {
                                    "targets": address if isinstance(address, list) else [address],
                                    "labels": labels,
                                }
                            ],
                        }
                        for job, address in {
                            "spire-health-exporter": exporter_address,
                            **(jobs or {}),
                        }.items()
                    ],
                }
            )
        )
        self.prometheus = spawn(
            workdir,
            "prometheus",
            [
                prometheus,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.prom_port}",
                "--rules.alert.resend-delay=1s",
            ],
        )
        self.url = f"http://127.0.0.1:{self.prom_port}"
        wait_until(lambda: ready(self.url + "/-/ready"), 60, "Prometheus to be ready")

    def query(self, expr: str) -> dict[str, Any]:
        answer: dict[str, Any] = get_json(
            self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        )
        return answer

    def firing(self, alertname: str) -> list[dict[str, str]]:
        """The labels of each firing alert of this name; empty while none fires."""
        result = self.query(f'ALERTS{{alertstate="firing", alertname="{alertname}"}}')["data"]["result"]
        return [a["metric"] for a in result]

    def stop(self) -> None:
        stop_process(self.prometheus, grace=15)
        self.alertmanager.stop()
