"""The HTTP side: routes and methods, and /metrics rendered again only after a change."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest
from conftest import render, state_registry

from exporter.result import ProbeResult
from exporter.store import State
from exporter.web import ExporterServer


def render_state(state: State) -> dict:
    return render(state_registry(state))


def test_http_routes_and_methods() -> None:
    state = State()
    state.probes.register("fetch_x509_svid")
    registry = state_registry(state)
    server = ExporterServer(("127.0.0.1", 0), registry, state, "/custom-metrics")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(base + "/custom-metrics", timeout=5) as r:
            assert r.status == 200 and b"spire_health_probes_total" in r.read()
            assert r.headers["Content-Type"].startswith("text/plain")
        with urllib.request.urlopen(base + "/", timeout=5) as r:
            assert b"fetch_x509_svid" in r.read()
        for path, status in (("/metrics", 404), ("/nope", 404)):
            with pytest.raises(urllib.error.HTTPError) as raised:
                urllib.request.urlopen(base + path, timeout=5)
            assert raised.value.code == status
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(
                urllib.request.Request(base + "/custom-metrics", method="POST", data=b"x"), timeout=5
            )
        assert raised.value.code == 405
        req = urllib.request.Request(
            base + "/custom-metrics", headers={"Accept": "application/openmetrics-text"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
    finally:
        server.shutdown()
        server.server_close()


def test_metrics_are_rendered_again_only_after_a_change() -> None:
    state = State()
    state.probes.register("fetch_x509_svid")
    registry = state_registry(state)
    server = ExporterServer(("127.0.0.1", 0), registry, state)
    try:
        first, _ = server.exposition("")
        assert server.exposition("")[0] is first
        state.record(ProbeResult("fetch_x509_svid", "OK", 0.01))
        changed, _ = server.exposition("")
        assert changed is not first and b'code="OK",rpc="fetch_x509_svid"} 1.0' in changed
        open_metrics, content_type = server.exposition("application/openmetrics-text")
        assert content_type.startswith("application/openmetrics-text") and open_metrics.endswith(b"# EOF\n")
    finally:
        server.server_close()
