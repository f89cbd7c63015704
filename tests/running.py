"""A running exporter (in this process) and a scraper that reads its /metrics, for tests."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from conftest import record_output

from exporter import config
from exporter.app import Exporter
from harness.promtext import Samples, get, parse

__all__ = ["RunningExporter", "Samples", "fast_config", "get", "parse"]


def fast_config(endpoint: str, **overrides: Any) -> config.Config:
    """One-second probes with a 0.8 s deadline, listening on a free loopback port."""
    tree: dict[str, Any] = {
        "workload_api": {"socket": endpoint},
        "probes": {"interval": "1s", "timeout": "800ms"},
        "agent": {"sample_interval": "1s"},
        "web": {"listen_address": "127.0.0.1:0"},
    }
    for path, value in overrides.items():
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return config.build(tree, environ={})


class RunningExporter:
    def __init__(self, cfg: config.Config) -> None:
        self.exporter = Exporter(cfg)
        self.server = self.exporter.serve()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    def __enter__(self) -> RunningExporter:
        self.exporter.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.exporter.stop()

    def text(self, path: str = "/metrics") -> str:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            text = response.read().decode()
        record_output(text)
        return text

    def scrape(self) -> Samples:
        return parse(self.text())

    def value(self, name: str, **labels: str) -> float | None:
        return self.scrape().get((name, tuple(sorted(labels.items()))))

    def wait_for(self, predicate: Callable[[Samples], bool], timeout: float, what: str) -> Samples:
        deadline = time.monotonic() + timeout
        while True:
            samples = self.scrape()
            if predicate(samples):
                return samples
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.2)
