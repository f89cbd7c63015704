"""Log lines name an exception by its type and where it was raised, never by its text: the text
of an error raised while parsing an answer could quote the answer, key or token included."""

from __future__ import annotations

import json
import logging
import urllib.request

from running import RunningExporter, fast_config

from exporter.logs import Formatter, describe

SECRET = "eyJhbGciOiJFUzI1NiJ9.c2VjcmV0LXRleHQ.c2ln-PRIVATE KEY-0123456789abcdef"


def test_describe_gives_the_type_and_place_not_the_text() -> None:
    try:
        raise ValueError(SECRET)
    except ValueError as e:
        described = describe(e)
    assert described.startswith("ValueError at test_logs.py:")
    assert SECRET not in described and "PRIVATE" not in described


def test_no_log_line_or_page_carries_an_exception_text(fake_agent, monkeypatch, caplog) -> None:
    """A probe, the rotation watch and the agent sampler each raise with a secret in the text."""
    from exporter import watch
    from exporter.agent import monitor
    from exporter.probes import x509_svid

    def leaky(*_args, **_kwargs):
        raise RuntimeError(SECRET)

    monkeypatch.setattr(x509_svid, "x509_svids", leaky)
    monkeypatch.setattr(watch, "x509_svids", leaky)
    monkeypatch.setattr(watch, "MIN_BACKOFF", 0.05)
    monkeypatch.setattr(monitor.process.ProcessFinder, "find", leaky)
    caplog.set_level(logging.DEBUG)
    cfg = fast_config(f"unix://{fake_agent.socket_path}")
    with RunningExporter(cfg) as running:
        running.wait_for(
            lambda s: (
                s.get(("spire_health_job_errors_total", (("job", "agent"),)), 0) >= 1
                and s.get(("spire_health_job_errors_total", (("job", "watch"),)), 0) >= 1
                and s.get(
                    (
                        "spire_health_probes_total",
                        (("code", "EXPORTER_ERROR"), ("rpc", "fetch_x509_svid")),
                    ),
                    0,
                )
                >= 1
            ),
            15,
            "an error from the probe, the watch and the sampler",
        )
        with urllib.request.urlopen(running.url + "/", timeout=5) as r:
            page = r.read().decode()
        metrics = running.text()
    lines = [Formatter(fmt).format(r) for r in caplog.records for fmt in ("logfmt", "json")]
    assert any("RuntimeError" in line for line in lines)
    for text in (*lines, page, metrics):
        assert SECRET not in text and "PRIVATE KEY" not in text, text[:300]
    assert any(
        json.loads(line).get("error", "").startswith("RuntimeError at ") for line in lines if line[0] == "{"
    )
